//! The gateway's view of the cluster: every live node of every service with one HTTP/2
//! channel each (opened on join, dropped on leave), kept current by a registry watch.
//! After a failed read it keeps the last good view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use registry::{Backoff, Change, Instance, Registry, Scope};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// One node the gateway can send calls to.
pub struct NodeHandle {
    pub instance: Instance,
    pub channel: Channel,
    pub stats: NodeStats,
}

/// What the balancer knows of a node.
#[derive(Default)]
pub struct NodeStats {
    pub in_flight: AtomicUsize,
    /// Exponentially weighted moving average of call latency, in microseconds.
    pub latency_ewma_us: AtomicU64,
    pub consecutive_failures: AtomicU32,
    /// Set aside until this many milliseconds after the view started (0: not set aside).
    ejected_until_ms: AtomicU64,
}

impl NodeHandle {
    fn new(instance: Instance) -> Option<NodeHandle> {
        let endpoint = Endpoint::from_shared(format!("http://{}", instance.address))
            .map_err(|error| {
                tracing::warn!(address = %instance.address, %error, "skipping a node with an unusable address")
            })
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Some(NodeHandle {
            channel: endpoint.connect_lazy(),
            instance,
            stats: NodeStats::default(),
        })
    }
}

/// Live nodes by (service, instance id).
type NodeMap = BTreeMap<(String, String), Arc<NodeHandle>>;

#[derive(Clone)]
pub struct ClusterView {
    nodes: Arc<RwLock<NodeMap>>,
    epoch: Instant,
}

impl Default for ClusterView {
    fn default() -> Self {
        Self {
            nodes: Arc::default(),
            epoch: Instant::now(),
        }
    }
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
        for instance in snapshot.instances {
            self.apply(Change::Joined(instance));
        }
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = watch.next() => event,
            };
            match event {
                Some(event) => self.apply(event.change),
                None => return,
            }
        }
    }

    fn apply(&self, change: Change) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        match change {
            Change::Joined(instance) | Change::Updated(instance) => {
                let key = (instance.service.clone(), instance.id.clone());
                if let Some(handle) = NodeHandle::new(instance) {
                    nodes.insert(key, Arc::new(handle));
                }
            }
            Change::Left(instance) => {
                nodes.remove(&(instance.service, instance.id));
            }
        }
    }

    /// Every live node, sorted by service and id.
    pub fn nodes(&self) -> Vec<Arc<NodeHandle>> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.values().cloned().collect()
    }

    /// The live nodes of one service, set-aside ones included.
    pub fn nodes_of(&self, service: &str) -> Vec<Arc<NodeHandle>> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes
            .range((service.to_owned(), String::new())..)
            .take_while(|((s, _), _)| s == service)
            .map(|(_, handle)| handle.clone())
            .collect()
    }

    /// The live nodes that expose the gRPC service `grpc_service` (`user.v1.UserService`).
    pub fn nodes_serving(&self, grpc_service: &str) -> Vec<Arc<NodeHandle>> {
        self.nodes()
            .into_iter()
            .filter(|n| {
                n.instance
                    .metadata
                    .get("grpc.services")
                    .is_some_and(|list| list.split(',').any(|s| s == grpc_service))
            })
            .collect()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_ejected(&self, node: &NodeHandle) -> bool {
        node.stats.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Records a call's outcome: latency into the average, transport failures toward
    /// passive ejection.
    pub fn record(
        &self,
        node: &NodeHandle,
        latency: Duration,
        transport_failure: bool,
        eject_after: u32,
        eject_for: Duration,
    ) {
        let stats = &node.stats;
        if transport_failure {
            let failures = stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if eject_after > 0 && failures >= eject_after {
                let until = self.now_ms() + eject_for.as_millis() as u64;
                stats.ejected_until_ms.store(until, Ordering::Relaxed);
                stats.consecutive_failures.store(0, Ordering::Relaxed);
                tracing::warn!(service = %node.instance.service, address = %node.instance.address, ?eject_for, "node set aside after {failures} transport failures");
            }
            return;
        }
        stats.consecutive_failures.store(0, Ordering::Relaxed);
        let sample = latency.as_micros() as u64;
        let old = stats.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        stats.latency_ewma_us.store(new, Ordering::Relaxed);
    }
}
