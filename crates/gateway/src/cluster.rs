//! The gateway's view of the cluster: every live node of every service, kept current by a
//! registry watch. After a failed read it keeps the last good view.

use std::sync::{Arc, RwLock};

use registry::{Backoff, Instance, Membership, Registry, Scope};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct ClusterView {
    nodes: Arc<RwLock<Membership>>,
}

impl ClusterView {
    /// Starts following the whole namespace until `stop`.
    pub fn follow(registry: Arc<dyn Registry>, stop: CancellationToken) -> Self {
        let view = ClusterView::default();
        tokio::spawn(view.clone().keep_current(registry, stop));
        view
    }

    async fn keep_current(self, registry: Arc<dyn Registry>, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        let (snapshot, mut watch) = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                found = registry.discover(&Scope::All) => match found {
                    Ok(found) => break found,
                    Err(error) => {
                        tracing::warn!(%error, "gateway cannot list the cluster yet, retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                },
            }
        };
        self.write().resync(snapshot.instances);
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = watch.next() => event,
            };
            let Some(event) = event else { return };
            let mut nodes = self.write();
            match event.change {
                registry::Change::Joined(i) | registry::Change::Updated(i) => {
                    nodes.put(i);
                }
                registry::Change::Left(i) => {
                    nodes.delete(&i.service, &i.id);
                }
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Membership> {
        self.nodes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every live node, sorted by service and id.
    pub fn nodes(&self) -> Vec<Instance> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.instances().cloned().collect()
    }

    /// The live nodes of one service.
    pub fn nodes_of(&self, service: &str) -> Vec<Instance> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes
            .instances()
            .filter(|i| i.service == service)
            .cloned()
            .collect()
    }
}
