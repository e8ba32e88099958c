//! Reads that outlive a store outage. Every account this node read or wrote is kept;
//! while the store cannot be reached, looking one of them up answers from what was kept,
//! at once when the node already knows the store is down. Writes still need the store,
//! and an account the node never saw is not guessed at: both fail as unavailable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use super::store::{StoreError, UserRecord, UserStore};

/// Accounts kept at most; past it, new ones are not kept (reads still work, the outage
/// fallback covers fewer accounts).
pub const KEPT_ACCOUNTS: usize = 100_000;

pub struct CachedReads {
    inner: Arc<dyn UserStore>,
    kept: Mutex<HashMap<String, UserRecord>>,
    /// Whether the store answers, as the node's probe last found.
    reachable: watch::Receiver<bool>,
}

impl CachedReads {
    pub fn new(inner: Arc<dyn UserStore>, reachable: watch::Receiver<bool>) -> Self {
        Self {
            inner,
            kept: Mutex::new(HashMap::new()),
            reachable,
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserRecord>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, record: &UserRecord) {
        let mut kept = self.kept();
        if kept.len() < KEPT_ACCOUNTS || kept.contains_key(&record.username) {
            kept.insert(record.username.clone(), record.clone());
        }
    }

    fn kept_record(&self, username: &str) -> Option<UserRecord> {
        self.kept().get(username).cloned()
    }
}

#[async_trait]
impl UserStore for CachedReads {
    async fn insert(&self, record: UserRecord) -> Result<(), StoreError> {
        self.inner.insert(record.clone()).await?;
        self.keep(&record);
        Ok(())
    }

    async fn get(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        // Known down: no need to wait for the store's timeout to answer what we know.
        if !*self.reachable.borrow()
            && let Some(record) = self.kept_record(username)
        {
            return Ok(Some(record));
        }
        match self.inner.get(username).await {
            Ok(Some(record)) => {
                self.keep(&record);
                Ok(Some(record))
            }
            Ok(None) => {
                self.kept().remove(username);
                Ok(None)
            }
            Err(error @ StoreError::Unavailable { .. }) => match self.kept_record(username) {
                Some(record) => Ok(Some(record)),
                None => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        self.inner.list(prefix, limit).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::store::fake::FlakyStore;

    fn record(name: &str) -> UserRecord {
        UserRecord {
            id: format!("id-{name}"),
            username: name.to_owned(),
            password_hash: "hash".to_owned(),
            created_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn an_account_seen_before_is_read_while_the_store_is_down_and_writes_still_fail() {
        let store = Arc::new(FlakyStore::default());
        let (reachable, receiver) = watch::channel(true);
        let cached = CachedReads::new(store.clone(), receiver);
        cached.insert(record("ada")).await.unwrap();

        store.set_down(true);
        assert_eq!(cached.get("ada").await.unwrap(), Some(record("ada")));
        // Never seen: not guessed.
        assert!(matches!(
            cached.get("bob").await,
            Err(StoreError::Unavailable { .. })
        ));
        assert!(matches!(
            cached.insert(record("cy")).await,
            Err(StoreError::Unavailable { .. })
        ));
        // Once the probe knows the store is down, the kept account answers at once.
        reachable.send_replace(false);
        assert_eq!(cached.get("ada").await.unwrap(), Some(record("ada")));
    }

    #[tokio::test]
    async fn an_account_the_store_no_longer_has_is_forgotten() {
        let store = Arc::new(FlakyStore::default());
        let (_reachable, receiver) = watch::channel(true);
        let cached = CachedReads::new(store.clone(), receiver);
        cached.insert(record("ada")).await.unwrap();
        store.remove("ada");
        assert_eq!(cached.get("ada").await.unwrap(), None);
        store.set_down(true);
        assert!(cached.get("ada").await.is_err());
    }
}
