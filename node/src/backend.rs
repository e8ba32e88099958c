//! The one place where configuration picks the registry backend.

use std::sync::Arc;

use config::{Backend, NodeConfig};
use registry::Registry;
use registry_memory::MemoryRegistry;

use crate::NodeError;

/// The backend in use, for the few parts (a service's shared store) that need more than
/// the [`Registry`] trait.
#[derive(Clone)]
pub enum Connected {
    Memory(MemoryRegistry),
    #[cfg(feature = "etcd")]
    Etcd(Box<registry_etcd::EtcdRegistry>),
}

impl Connected {
    pub fn registry(&self) -> Arc<dyn Registry> {
        match self {
            Connected::Memory(memory) => Arc::new(memory.clone()),
            #[cfg(feature = "etcd")]
            Connected::Etcd(etcd) => Arc::new((**etcd).clone()),
        }
    }
}

/// Connects the configured backend; for etcd, retries until `registry.connect_timeout`.
pub(crate) async fn connect(config: &NodeConfig) -> Result<Connected, NodeError> {
    match config.registry.backend {
        Backend::Memory => Ok(Connected::Memory(MemoryRegistry::new())),
        Backend::Etcd => connect_etcd(config).await,
    }
}

#[cfg(feature = "etcd")]
async fn connect_etcd(config: &NodeConfig) -> Result<Connected, NodeError> {
    use registry_etcd::{Credentials, EtcdOptions, EtcdRegistry, TlsFiles};

    let registry = &config.registry;
    let endpoints = registry.endpoints().map_err(|source| NodeError::Registry {
        backend: "etcd".to_owned(),
        source,
    })?;
    let mut options = EtcdOptions::new(endpoints)
        .with_namespace(&registry.namespace)
        .with_connect_timeout(registry.connect_timeout);
    if let (Some(username), Some(password)) = (&registry.username, &registry.password) {
        options.credentials = Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        });
    }
    options.tls = registry.tls.as_ref().map(|tls| TlsFiles {
        ca: tls.ca.clone(),
        cert: tls.cert.clone(),
        key: tls.key.clone(),
    });
    EtcdRegistry::connect(options)
        .await
        .map(|etcd| Connected::Etcd(Box::new(etcd)))
        .map_err(|source| NodeError::Registry {
            backend: "etcd".to_owned(),
            source,
        })
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(_: &NodeConfig) -> Result<Connected, NodeError> {
    Err(NodeError::Unsupported(
        "this build has no etcd backend (built without the `etcd` feature); set registry.backend = \"memory\"".to_owned(),
    ))
}
