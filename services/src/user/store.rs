//! Where accounts live. Every node of the service must see the same accounts, so the
//! store is shared: etcd in production, one in-memory map for the single-process stack.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    pub created_at_ms: u64,
}

/// What went wrong in a store. `Display` is for the node's log and carries the client's own
/// words; callers get a message of the service's own (see `store_status`), which names the
/// store, so that nobody takes a store outage for the node's or the network's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("username {} is taken", crate::text::quote(.0))]
    AlreadyExists(String),
    /// The store did not answer: down, unreachable or too slow. Worth retrying.
    #[error("the user store ({store}) cannot be reached: {cause}")]
    Unavailable { store: &'static str, cause: String },
    /// The store answered, but an account in it could not be written or read back.
    #[error("the user store ({store}) holds an account record this node cannot use: {cause}")]
    BadRecord { store: &'static str, cause: String },
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new account; [`StoreError::AlreadyExists`] if the username is taken.
    async fn insert(&self, record: UserRecord) -> Result<(), StoreError>;
    async fn get(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// At most `limit` accounts whose username starts with `prefix`, in username order.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<UserRecord>, StoreError>;
    /// Whether the store can serve right now, as cheaply as it can tell; the node probes
    /// this every second for its readiness.
    async fn check(&self) -> Result<(), StoreError>;
}

#[derive(Debug, Default)]
pub struct MemoryUserStore {
    // Ordered by username so that listing needs no sort.
    users: Mutex<BTreeMap<String, UserRecord>>,
}

impl MemoryUserStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, UserRecord>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl UserStore for MemoryUserStore {
    async fn insert(&self, record: UserRecord) -> Result<(), StoreError> {
        let mut users = self.users();
        if users.contains_key(&record.username) {
            return Err(StoreError::AlreadyExists(record.username));
        }
        users.insert(record.username.clone(), record);
        Ok(())
    }

    async fn get(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.users().get(username).cloned())
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        Ok(self
            .users()
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit)
            .map(|(_, record)| record.clone())
            .collect())
    }

    /// The map lives in this process: while the node runs, it is there.
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Accounts under `{namespace}/data/user/{username}`, created with a transaction so that
/// two nodes registering the same name at once cannot both win.
#[cfg(feature = "etcd")]
#[derive(Clone)]
pub struct EtcdUserStore {
    kv: rust_ms::etcd::Kv,
    prefix: String,
}

#[cfg(feature = "etcd")]
impl EtcdUserStore {
    /// On the registry's own etcd, through its bounded path.
    pub fn new(kv: rust_ms::etcd::Kv) -> Self {
        let prefix = format!("{}/data/user/", kv.namespace());
        Self { kv, prefix }
    }

    fn key(&self, username: &str) -> String {
        format!("{}{username}", self.prefix)
    }
}

/// The readiness probe's bound: shorter than a request's, as it runs every second.
#[cfg(feature = "etcd")]
const ETCD_CHECK_BOUND: std::time::Duration = std::time::Duration::from_secs(2);
#[cfg(feature = "etcd")]
const ETCD: &str = "etcd";
/// Room enough for any client error; etcd's text is not ours to trust with the log's size.
#[cfg(feature = "etcd")]
const CAUSE_MAX: usize = 512;

/// An etcd request's failure (already bounded by the registry's request timeout) as the
/// store's.
#[cfg(feature = "etcd")]
fn unreachable(error: rust_ms::registry::RegistryError) -> StoreError {
    StoreError::Unavailable {
        store: ETCD,
        cause: crate::text::clip(&error.to_string(), CAUSE_MAX).into_owned(),
    }
}

#[cfg(feature = "etcd")]
#[async_trait]
impl UserStore for EtcdUserStore {
    async fn insert(&self, record: UserRecord) -> Result<(), StoreError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let key = self.key(&record.username);
        let value = serde_json::to_string(&record).map_err(|e| StoreError::BadRecord {
            store: ETCD,
            cause: format!("encoding: {e}"),
        })?;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let response = self.kv.txn(txn).await.map_err(unreachable)?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists(record.username))
        }
    }

    async fn get(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let response = self
            .kv
            .get(self.key(username), None)
            .await
            .map_err(unreachable)?;
        match response.kvs().first() {
            None => Ok(None),
            Some(kv) => decode(kv.value()).map(Some),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        use etcd_client::{GetOptions, SortOrder, SortTarget};
        if limit == 0 {
            return Ok(Vec::new());
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Ascend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let response = self
            .kv
            .get(self.key(prefix), Some(options))
            .await
            .map_err(unreachable)?;
        response.kvs().iter().map(|kv| decode(kv.value())).collect()
    }

    /// A count of one key: the cheapest read that still needs a working etcd cluster
    /// (reads are linearizable, so a member without quorum fails it too).
    async fn check(&self) -> Result<(), StoreError> {
        use etcd_client::GetOptions;
        let options = GetOptions::new().with_count_only();
        match tokio::time::timeout(
            ETCD_CHECK_BOUND,
            self.kv.get(self.prefix.as_str(), Some(options)),
        )
        .await
        {
            Ok(answered) => answered.map(|_| ()).map_err(unreachable),
            Err(_) => Err(StoreError::Unavailable {
                store: ETCD,
                cause: format!("etcd did not answer within {ETCD_CHECK_BOUND:?}"),
            }),
        }
    }
}

#[cfg(feature = "etcd")]
fn decode(value: &[u8]) -> Result<UserRecord, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::BadRecord {
        store: ETCD,
        cause: format!("decoding: {e}"),
    })
}

/// A store that fails or hangs while told to, for tests of what callers and readiness see.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// What etcd-client says when nothing listens: it must not reach callers.
    pub(crate) const RAW_CAUSE: &str = "transport error: tcp connect error: Connection refused";

    #[derive(Default)]
    pub(crate) struct FlakyStore {
        inner: MemoryUserStore,
        down: AtomicBool,
        hanging: AtomicBool,
    }

    impl FlakyStore {
        pub(crate) fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }

        /// Deletes an account behind every cache's back (another node's doing).
        pub(crate) fn remove(&self, username: &str) {
            self.inner.users().remove(username);
        }

        pub(crate) fn set_hanging(&self, hanging: bool) {
            self.hanging.store(hanging, Ordering::SeqCst);
        }

        async fn gate(&self) -> Result<(), StoreError> {
            if self.hanging.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable {
                    store: "etcd",
                    cause: RAW_CAUSE.to_owned(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl UserStore for FlakyStore {
        async fn insert(&self, record: UserRecord) -> Result<(), StoreError> {
            self.gate().await?;
            self.inner.insert(record).await
        }

        async fn get(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
            self.gate().await?;
            self.inner.get(username).await
        }

        async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
            self.gate().await?;
            self.inner.list(prefix, limit).await
        }

        async fn check(&self) -> Result<(), StoreError> {
            self.gate().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(username: &str) -> UserRecord {
        UserRecord {
            id: format!("id-{username}"),
            username: username.into(),
            password_hash: String::new(),
            created_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn memory_listing_keeps_the_prefix_orders_by_name_and_stops_at_the_limit() {
        let store = MemoryUserStore::new();
        for name in ["bob", "ann-2", "ann-1", "annie", "zed"] {
            store.insert(record(name)).await.unwrap();
        }
        let names = |records: Vec<UserRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.username).collect()
        };
        assert_eq!(
            names(store.list("ann", 10).await.unwrap()),
            ["ann-1", "ann-2", "annie"]
        );
        assert_eq!(
            names(store.list("ann", 2).await.unwrap()),
            ["ann-1", "ann-2"]
        );
        assert_eq!(store.list("", 10).await.unwrap().len(), 5);
        assert!(store.list("nobody", 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_taken_username_is_quoted_in_bounded_length() {
        let store = MemoryUserStore::new();
        let long = "a".repeat(20_000);
        store.insert(record(&long)).await.unwrap();
        let error = store.insert(record(&long)).await.unwrap_err();
        assert_eq!(error, StoreError::AlreadyExists(long));
        let message = error.to_string();
        assert!(message.len() < 300, "{} bytes", message.len());
        assert!(message.contains("is taken"), "{message}");
    }

    #[tokio::test]
    async fn the_memory_store_always_passes_its_check() {
        assert_eq!(MemoryUserStore::new().check().await, Ok(()));
    }
}
