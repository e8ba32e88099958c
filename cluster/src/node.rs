//! One node a caller can send calls to: its registration, the typed fields read from its
//! metadata when it joined, one HTTP/2 channel, its statistics and its health.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use registry::Instance;

use crate::credentials::{NodeChannel, Signed};
use crate::health::HealthCheck;
use crate::meta::NodeMeta;
use crate::stats::NodeStats;
use crate::view::ViewOptions;

pub struct Node {
    pub instance: Instance,
    /// What its metadata says, parsed once.
    pub meta: NodeMeta,
    /// One HTTP/2 connection to the node; calls on it carry this node's call credential.
    pub channel: NodeChannel,
    pub stats: NodeStats,
    /// What the last active check (grpc.health.v1) said; true until one says otherwise.
    healthy: Arc<AtomicBool>,
    checker: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("service", &self.instance.service)
            .field("id", &self.instance.id)
            .field("address", &self.instance.address)
            .finish_non_exhaustive()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(checker) = &self.checker {
            checker.abort();
        }
    }
}

impl Node {
    /// A node with no health checks and a connection never opened, for tests of what
    /// reads node state (balancers, admin views).
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_tests(instance: Instance) -> Option<Node> {
        let options = ViewOptions::for_tests();
        Node::new(instance, &options)
    }

    /// Opens (lazily) the channel and starts the health checks; `None`, logged, for an
    /// address no channel can be made to.
    pub(crate) fn new(instance: Instance, options: &ViewOptions) -> Option<Node> {
        let endpoint = options
            .credentials
            .endpoint(&instance.address)
            .map_err(|error| {
                tracing::warn!(address = %instance.address, %error, "skipping a node with an unusable address")
            })
            .ok()?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = Signed::new(endpoint.connect_lazy(), options.credentials.key.clone());
        let meta = NodeMeta::of(&instance);
        let healthy = Arc::new(AtomicBool::new(true));
        let checker = (!options.health_interval.is_zero()).then(|| {
            let check = HealthCheck {
                channel: channel.clone(),
                registered_as: instance.service.clone(),
                // The node's own API when it names one; "" asks about the server as a whole.
                grpc_service: meta.grpc_services.first().cloned().unwrap_or_default(),
                address: instance.address.clone(),
                healthy: healthy.clone(),
                interval: options.health_interval,
                at_once: options.health_checks.clone(),
                metric: options.metrics.health_checks,
            };
            tokio::spawn(check.run())
        });
        Some(Node {
            channel,
            instance,
            meta,
            stats: NodeStats::default(),
            healthy,
            checker,
        })
    }

    /// Whether its last active health check passed (true until one fails).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether it serves `grpc_service`; a node that does not say is taken at its word
    /// for whatever it is called with.
    pub fn serves(&self, grpc_service: &str) -> bool {
        !self.meta.says_what_it_serves || self.meta.grpc_services.iter().any(|s| s == grpc_service)
    }
}
