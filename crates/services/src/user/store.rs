//! Where accounts live. Every node of the service must see the same accounts, so the
//! store is shared: etcd in production, one in-memory map for the single-process stack.

use std::collections::HashMap;
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
}

#[derive(Debug, Default)]
pub struct MemoryUserStore {
    users: Mutex<HashMap<String, UserRecord>>,
}

impl MemoryUserStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserRecord>> {
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
            Some(kv) => serde_json::from_slice(kv.value())
                .map(Some)
                .map_err(|e| StoreError::Unavailable(format!("stored account unreadable: {e}"))),
        }
    }
}
