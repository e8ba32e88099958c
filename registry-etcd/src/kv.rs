//! Keys beside the registry — a service's own data, the gateway's route table — reached
//! through the same bounded path as the registry itself: every request ends within the
//! configured request timeout, and fails with a [`RegistryError`] that says what and why.

use std::time::Duration;

use etcd_client::{
    Client, GetOptions, GetResponse, PutResponse, Txn, TxnResponse, WatchOptions, WatchStream,
};
use registry::RegistryError;

use crate::within;

/// Bounded access to etcd's key space, from [`crate::EtcdRegistry::kv`].
#[derive(Clone)]
pub struct Kv {
    client: Client,
    bound: Duration,
    namespace: String,
}

impl Kv {
    pub(crate) fn new(client: Client, bound: Duration, namespace: &str) -> Self {
        Self {
            client,
            bound,
            namespace: namespace.trim_end_matches('/').to_owned(),
        }
    }

    /// The registry's namespace, under which everything rust-ms keeps lives.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How long one request may take.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, RegistryError> {
        within(self.bound, "get", self.client.clone().get(key, options)).await
    }

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, RegistryError> {
        within(self.bound, "put", self.client.clone().put(key, value, None)).await
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, RegistryError> {
        within(self.bound, "txn", self.client.clone().txn(txn)).await
    }

    /// Opens a watch; opening is bounded, the stream then lives as long as it is read.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<WatchOptions>,
    ) -> Result<WatchStream, RegistryError> {
        within(self.bound, "watch", self.client.clone().watch(key, options)).await
    }
}
