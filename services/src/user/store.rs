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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("username {0:?} is taken")]
    AlreadyExists(String),
    #[error("user store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new account; [`StoreError::AlreadyExists`] if the username is taken.
    async fn insert(&self, record: UserRecord) -> Result<(), StoreError>;
    async fn get(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// At most `limit` accounts whose username starts with `prefix`, in username order.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<UserRecord>, StoreError>;
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
}

/// Accounts under `{namespace}/data/user/{username}`, created with a transaction so that
/// two nodes registering the same name at once cannot both win.
#[cfg(feature = "etcd")]
#[derive(Clone)]
pub struct EtcdUserStore {
    client: etcd_client::Client,
    prefix: String,
}

#[cfg(feature = "etcd")]
impl EtcdUserStore {
    pub fn new(client: etcd_client::Client, namespace: &str) -> Self {
        Self {
            client,
            prefix: format!("{}/data/user/", namespace.trim_end_matches('/')),
        }
    }

    fn key(&self, username: &str) -> String {
        format!("{}{username}", self.prefix)
    }
}

#[cfg(feature = "etcd")]
const ETCD_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(feature = "etcd")]
async fn bounded<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(ETCD_BOUND, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StoreError::Unavailable(error.to_string())),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd did not answer within {ETCD_BOUND:?}"
        ))),
    }
}

#[cfg(feature = "etcd")]
#[async_trait]
impl UserStore for EtcdUserStore {
    async fn insert(&self, record: UserRecord) -> Result<(), StoreError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let key = self.key(&record.username);
        let value =
            serde_json::to_string(&record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let mut client = self.client.clone();
        let response = bounded(client.txn(txn)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists(record.username))
        }
    }

    async fn get(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut client = self.client.clone();
        let response = bounded(client.get(self.key(username), None)).await?;
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
        let mut client = self.client.clone();
        let response = bounded(client.get(self.key(prefix), Some(options))).await?;
        response.kvs().iter().map(|kv| decode(kv.value())).collect()
    }
}

#[cfg(feature = "etcd")]
fn decode(value: &[u8]) -> Result<UserRecord, StoreError> {
    serde_json::from_slice(value)
        .map_err(|e| StoreError::Unavailable(format!("stored account unreadable: {e}")))
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
}
