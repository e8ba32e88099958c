use async_trait::async_trait;

use crate::{Registered, Registration, RegistryError, Scope, Snapshot, Watch};

/// Where nodes register themselves and discover each other.
///
/// The trait is object safe: nodes hold an `Arc<dyn Registry>` chosen from configuration.
///
/// ```
/// use std::sync::Arc;
/// use registry::{Change, Instance, Registration, Registry, Scope};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), registry::RegistryError> {
/// // Any backend: etcd in production, memory in tests and the dev stack.
/// let registry: Arc<dyn Registry> = Arc::new(registry_memory::MemoryRegistry::new());
///
/// // A follower lists what is there, then hears every change after that.
/// let (snapshot, mut watch) = registry.discover(&Scope::service("user")).await?;
/// assert!(snapshot.instances.is_empty());
///
/// // A node registers itself; the handle keeps it alive until it deregisters.
/// let node = Registration::new(Instance::new("user", "127.0.0.1:9010"));
/// let registered = registry.register(node).await?;
/// let event = watch.next().await.expect("the watch is open");
/// assert!(matches!(&event.change, Change::Joined(i) if i.address == "127.0.0.1:9010"));
///
/// registered.deregister().await?;
/// let event = watch.next().await.expect("the watch is open");
/// assert!(matches!(&event.change, Change::Left(_)));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Registry: Send + Sync {
    /// Registers an instance and keeps it alive in the background until the returned
    /// handle deregisters it (or is dropped). When the backend loses the registration
    /// (lease expired, revoked, key deleted) the handle puts it back by itself.
    async fn register(&self, registration: Registration) -> Result<Registered, RegistryError>;

    /// The instances of `scope` now, with the revision they were read at.
    async fn snapshot(&self, scope: &Scope) -> Result<Snapshot, RegistryError>;

    /// Every change to `from.scope` after `from.revision`, once each and in order.
    ///
    /// When the backend loses changes (a disconnect, a compaction) the watch lists the
    /// scope again and emits only the difference from what it had emitted before.
    async fn watch(&self, from: &Snapshot) -> Result<Watch, RegistryError>;

    /// A short human description of the backend, for logs: `etcd 127.0.0.1:2379`.
    fn describe(&self) -> String;

    /// A snapshot of `scope` and a watch that starts right after it.
    async fn discover(&self, scope: &Scope) -> Result<(Snapshot, Watch), RegistryError> {
        let snapshot = self.snapshot(scope).await?;
        let watch = self.watch(&snapshot).await?;
        Ok((snapshot, watch))
    }
}

/// [`Registry::discover`], retried with backoff until it succeeds or `stop` is cancelled
/// (then `None`). For followers that must not give up while the backend is away.
pub async fn discover_until_stopped(
    registry: &dyn Registry,
    scope: &Scope,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<(Snapshot, Watch)> {
    let mut backoff = crate::Backoff::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            found = registry.discover(scope) => match found {
                Ok(found) => return Some(found),
                Err(error) => {
                    tracing::warn!(%error, ?scope, "cannot list the registry yet, retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}
