//! The gateway's view of the cluster: every live node of every service with one HTTP/2
//! channel each (opened on join, dropped on leave), kept current by a registry watch.
//! After a failed read it keeps the last good view.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use node::client::ServiceChannel;
use node::credentials::{ClusterCredentials, Signed};
use registry::{Change, Instance, Registry, Scope};
use telemetry::prometheus::names;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One node the gateway can send calls to.
pub struct NodeHandle {
    pub instance: Instance,
    /// One HTTP/2 connection to the node; calls on it carry the gateway's call credential.
    pub channel: ServiceChannel,
    pub stats: NodeStats,
    /// What the last active check (grpc.health.v1) said; true until one says otherwise.
    healthy: Arc<AtomicBool>,
    checker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if let Some(checker) = &self.checker {
            checker.abort();
        }
    }
}

/// Health checks in flight at once, across all of a gateway's nodes. Each check holds a
/// connection attempt and its buffers: a gateway starting against 10,000 nodes checked
/// them all in one burst, 10,000 connections at once and twice the memory it settles at.
pub const HEALTH_CHECKS_AT_ONCE: usize = 256;

/// Asks the node's grpc.health.v1 every `interval`; a NOT_SERVING answer or no answer
/// takes it out of rotation until a check says SERVING again. A check waits for one of
/// the `at_once` permits shared by every node; the wait is not counted against the node.
async fn check_health(
    channel: ServiceChannel,
    registered_as: String,
    service: String,
    address: String,
    healthy: Arc<AtomicBool>,
    interval: Duration,
    at_once: Arc<Semaphore>,
) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut client = HealthClient::new(channel);
    // The first check runs at once, which also opens the node's connection on join.
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(interval).await;
        }
        first = false;
        let request = HealthCheckRequest {
            service: service.clone(),
        };
        // Only a closed semaphore refuses a permit, and nothing closes this one.
        let Ok(_permit) = at_once.acquire().await else {
            return;
        };
        let answer =
            tokio::time::timeout(interval.min(Duration::from_secs(2)), client.check(request)).await;
        let serving = matches!(&answer, Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32);
        let result = if serving { "serving" } else { "not_serving" };
        metrics::counter!(names::GATEWAY_HEALTH_CHECKS, "service" => registered_as.clone(), "result" => result)
            .increment(1);
        if healthy.swap(serving, Ordering::Relaxed) != serving {
            if serving {
                tracing::info!(%address, "health check passes again; node back in rotation");
            } else {
                tracing::warn!(%address, "health check failed; node out of rotation");
            }
        }
    }
}

/// One call counted in a node's in-flight requests until it is dropped, so that a call
/// that times out, fails or streams for a long time is counted for exactly as long as
/// it lasts.
pub struct InFlight(Arc<NodeHandle>);

impl InFlight {
    pub fn start(node: &Arc<NodeHandle>) -> Self {
        node.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(node))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the balancer knows of a node.
#[derive(Default)]
pub struct NodeStats {
    pub in_flight: AtomicUsize,
    pub consecutive_failures: AtomicU32,
    /// Set aside until this many milliseconds after the view started (0: not set aside).
    ejected_until_ms: AtomicU64,
    /// Latency averages by method: methods differ in cost, so only like is compared
    /// with like (a slow Login must not make a node look slow for Exists).
    latency: Mutex<HashMap<String, LatencySample>>,
}

struct LatencySample {
    ewma_us: u64,
    samples: u64,
    at_ms: u64,
}

/// Milliseconds since the first call, a clock shared by every node's statistics.
fn process_millis() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// After this long without a new sample a latency average counts as unknown, so a node
/// that lost a few comparisons is tried again instead of being starved for good.
const LATENCY_MEMORY_MS: u64 = 2_000;

impl NodeStats {
    /// The latency average of `method` in microseconds; 0 when unknown or stale. The first
    /// sample is left out: it paid for opening the connection.
    pub fn latency_us(&self, method: &str) -> u64 {
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        match latency.get(method) {
            Some(s)
                if s.samples > 1
                    && process_millis().saturating_sub(s.at_ms) <= LATENCY_MEMORY_MS =>
            {
                s.ewma_us
            }
            _ => 0,
        }
    }

    /// Every method's latency average in milliseconds, for the admin view (stale ones too:
    /// the operator sees the last known value).
    pub fn latencies_ms(&self) -> BTreeMap<String, f64> {
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        latency
            .iter()
            .map(|(method, sample)| (method.clone(), sample.ewma_us as f64 / 1000.0))
            .collect()
    }

    fn add_latency(&self, method: &str, latency: Duration) {
        let sample = latency.as_micros() as u64;
        let mut all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(method.to_owned()).or_insert(LatencySample {
            ewma_us: 0,
            samples: 0,
            at_ms: 0,
        });
        entry.ewma_us = match entry.samples {
            0 | 1 => sample,
            // One outlier (a pause, a busy core) moves the average at most 4x its value.
            _ => (entry.ewma_us * 7 + sample.min(entry.ewma_us.saturating_mul(4).max(1))) / 8,
        };
        entry.samples += 1;
        entry.at_ms = process_millis();
    }
}

impl NodeHandle {
    /// A handle with no health checks and a connection never opened, for balancer tests.
    #[doc(hidden)]
    pub fn for_tests(instance: Instance) -> NodeHandle {
        let ejection = Ejection {
            after_failures: 0,
            for_how_long: Duration::ZERO,
            max_ejected_percent: 0,
        };
        let options = ViewOptions::new(ejection, Duration::ZERO, ClusterCredentials::default());
        NodeHandle::new(instance, &options).expect("a valid test address")
    }

    fn new(instance: Instance, options: &ViewOptions) -> Option<NodeHandle> {
        let health_interval = options.health_interval;
        let endpoint = options
            .credentials
            .endpoint(&instance.address)
            .map_err(|error| {
                tracing::warn!(address = %instance.address, %error, "skipping a node with an unusable address")
            })
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = Signed::new(endpoint.connect_lazy(), options.credentials.key.clone());
        let healthy = Arc::new(AtomicBool::new(true));
        let checker = (!health_interval.is_zero()).then(|| {
            // The node's own API when it names one; "" asks about the server as a whole.
            let service = instance
                .metadata
                .get("grpc.services")
                .and_then(|list| list.split(',').next())
                .unwrap_or_default()
                .to_owned();
            tokio::spawn(check_health(
                channel.clone(),
                instance.service.clone(),
                service,
                instance.address.clone(),
                healthy.clone(),
                health_interval,
                options.health_checks.clone(),
            ))
        });
        Some(NodeHandle {
            channel,
            instance,
            stats: NodeStats::default(),
            healthy,
            checker,
        })
    }
}

/// Live nodes by (service, instance id).
type NodeMap = BTreeMap<(String, String), Arc<NodeHandle>>;

/// gRPC service → who answers it.
type GrpcIndex = HashMap<String, GrpcTargets>;

/// The nodes that answer one gRPC service.
#[derive(Clone)]
pub struct GrpcTargets {
    /// The registry service whose route applies: when several expose the gRPC service,
    /// the one named like its package (`user` for `user.v1.UserService`), else the one
    /// with the most nodes, then by name — always the same one.
    pub owner: String,
    /// The owner's nodes that expose it.
    pub nodes: Arc<[Arc<NodeHandle>]>,
}

fn index_by_grpc(nodes: &NodeMap) -> GrpcIndex {
    let mut exposed: HashMap<&str, BTreeMap<&str, Vec<Arc<NodeHandle>>>> = HashMap::new();
    for ((service, _), node) in nodes {
        let Some(list) = node.instance.metadata.get("grpc.services") else {
            continue;
        };
        for grpc in list.split(',').filter(|g| !g.is_empty()) {
            exposed
                .entry(grpc)
                .or_default()
                .entry(service.as_str())
                .or_default()
                .push(node.clone());
        }
    }
    exposed
        .into_iter()
        .filter_map(|(grpc, by_service)| {
            let package = grpc.split('.').next().unwrap_or_default();
            let owner = if by_service.contains_key(package) {
                package
            } else {
                by_service
                    .iter()
                    .max_by(|(a, na), (b, nb)| na.len().cmp(&nb.len()).then_with(|| b.cmp(a)))
                    .map(|(service, _)| *service)?
            };
            let nodes = by_service.get(owner)?.clone();
            Some((
                grpc.to_owned(),
                GrpcTargets {
                    owner: owner.to_owned(),
                    nodes: nodes.into(),
                },
            ))
        })
        .collect()
}

#[derive(Clone)]
pub struct ClusterView {
    nodes: Arc<RwLock<NodeMap>>,
    /// By gRPC service, the registry service that owns it and its nodes, read by every
    /// call on the rpc port. A change drops it and the next call builds it again, so a
    /// burst of joins (a gateway starting against 10,000 nodes) costs one build, not one
    /// per join.
    by_grpc: Arc<RwLock<Option<Arc<GrpcIndex>>>>,
    epoch: Instant,
    options: ViewOptions,
    listed: Arc<tokio::sync::watch::Sender<bool>>,
}

/// How the view treats its nodes.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    pub ejection: Ejection,
    /// Zero turns active health checks off.
    pub health_interval: Duration,
    /// What every call the gateway makes to a node carries: signature, client certificate.
    pub credentials: ClusterCredentials,
    /// Permits for health checks in flight, shared by every node of the view.
    health_checks: Arc<Semaphore>,
}

impl ViewOptions {
    /// At most [`HEALTH_CHECKS_AT_ONCE`] health checks in flight.
    pub fn new(
        ejection: Ejection,
        health_interval: Duration,
        credentials: ClusterCredentials,
    ) -> Self {
        Self {
            ejection,
            health_interval,
            credentials,
            health_checks: Arc::new(Semaphore::new(HEALTH_CHECKS_AT_ONCE)),
        }
    }

    /// At most `checks` health checks in flight.
    pub fn with_health_checks_at_once(mut self, checks: usize) -> Self {
        self.health_checks = Arc::new(Semaphore::new(checks.max(1)));
        self
    }
}

impl ClusterView {
    /// Starts following the whole namespace until `stop`.
    pub fn follow(
        registry: Arc<dyn Registry>,
        options: ViewOptions,
        stop: CancellationToken,
    ) -> Self {
        let view = ClusterView {
            nodes: Arc::default(),
            by_grpc: Arc::default(),
            epoch: Instant::now(),
            options,
            listed: Arc::new(tokio::sync::watch::Sender::new(false)),
        };
        tokio::spawn(view.clone().keep_current(registry, stop));
        view
    }

    /// A view that follows nothing, for tests of what reads node state.
    #[doc(hidden)]
    pub fn for_tests() -> Self {
        ClusterView {
            nodes: Arc::default(),
            by_grpc: Arc::default(),
            epoch: Instant::now(),
            listed: Arc::new(tokio::sync::watch::Sender::new(true)),
            options: ViewOptions::new(
                Ejection {
                    after_failures: 3,
                    for_how_long: Duration::from_secs(10),
                    max_ejected_percent: MAX_EJECTED_PERCENT,
                },
                Duration::ZERO,
                ClusterCredentials::default(),
            ),
        }
    }

    async fn keep_current(self, registry: Arc<dyn Registry>, stop: CancellationToken) {
        let mut cluster = registry::follow(registry, Scope::All, stop);
        while let Some(change) = cluster.next().await {
            self.apply(change);
            if cluster.caught_up() {
                self.listed
                    .send_if_modified(|listed| !std::mem::replace(listed, true));
            }
        }
    }

    /// Turns true once the view holds the registry's first listing in full: before
    /// that the gateway would answer "unknown service" for services that exist.
    pub fn listed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.listed.subscribe()
    }

    fn apply(&self, change: Change) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let service = match change {
            Change::Joined(instance) | Change::Updated(instance) => {
                let key = (instance.service.clone(), instance.id.clone());
                if let Some(handle) = NodeHandle::new(instance, &self.options) {
                    nodes.insert(key.clone(), Arc::new(handle));
                }
                key.0
            }
            Change::Left(instance) => {
                nodes.remove(&(instance.service.clone(), instance.id));
                instance.service
            }
        };
        let count = nodes
            .range((service.clone(), String::new())..)
            .take_while(|((s, _), _)| *s == service)
            .count();
        metrics::gauge!(names::GATEWAY_NODES, "service" => service).set(count as f64);
        // Dropped while the node map is still locked: no reader can rebuild a stale one.
        *self.by_grpc.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Who answers `grpc_service` (`user.v1.UserService`), if anyone does.
    pub fn serving(&self, grpc_service: &str) -> Option<GrpcTargets> {
        let built = self
            .by_grpc
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let index = match built {
            Some(index) => index,
            None => {
                let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
                let mut slot = self.by_grpc.write().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| Arc::new(index_by_grpc(&nodes)))
                    .clone()
            }
        };
        index.get(grpc_service).cloned()
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

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the node's last active health check passed (true until one fails).
    pub fn is_healthy(&self, node: &NodeHandle) -> bool {
        node.healthy.load(Ordering::Relaxed)
    }

    /// Whether the node is set aside for a while after transport failures.
    pub fn is_ejected(&self, node: &NodeHandle) -> bool {
        node.stats.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Whether the node is out of rotation for either reason.
    pub fn is_set_aside(&self, node: &NodeHandle) -> bool {
        !self.is_healthy(node) || self.is_ejected(node)
    }

    /// How many more nodes of `service` may be set aside: at most
    /// `max_ejected_percent` of them (at least one), so that transport failures caused
    /// by the calls themselves can never empty a service.
    fn may_eject_another(&self, service: &str) -> bool {
        let nodes = self.nodes_of(service);
        let ejected = nodes.iter().filter(|n| self.is_ejected(n)).count();
        let percent = usize::from(self.options.ejection.max_ejected_percent.min(100));
        let limit = (nodes.len() * percent / 100).max(1);
        ejected < limit
    }

    /// Records a call's outcome: its latency into the method's average, transport
    /// failures toward passive ejection.
    pub fn record(
        &self,
        node: &NodeHandle,
        method: &str,
        latency: Duration,
        transport_failure: bool,
    ) {
        let stats = &node.stats;
        if !transport_failure {
            stats.consecutive_failures.store(0, Ordering::Relaxed);
            stats.add_latency(method, latency);
            return;
        }
        let failures = stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let Ejection {
            after_failures,
            for_how_long,
            ..
        } = self.options.ejection;
        if after_failures > 0
            && failures >= after_failures
            && !self.is_ejected(node)
            && self.may_eject_another(&node.instance.service)
        {
            let until = self.now_ms() + for_how_long.as_millis() as u64;
            stats.ejected_until_ms.store(until, Ordering::Relaxed);
            metrics::counter!(names::GATEWAY_EJECTIONS, "service" => node.instance.service.clone())
                .increment(1);
            stats.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(
                service = %node.instance.service,
                address = %node.instance.address,
                ?for_how_long,
                "node set aside after {failures} transport failures"
            );
        }
    }
}

/// At most half of a service's nodes (and at least one) are set aside at once.
pub const MAX_EJECTED_PERCENT: u8 = 50;

/// Passive ejection: after this many consecutive transport failures a node gets no
/// traffic for a while.
#[derive(Debug, Clone, Copy)]
pub struct Ejection {
    pub after_failures: u32,
    pub for_how_long: Duration,
    /// The largest share of a service's nodes set aside at once (at least one node).
    pub max_ejected_percent: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(ids: &[&str]) -> (ClusterView, Vec<Arc<NodeHandle>>) {
        let view = ClusterView::for_tests();
        for id in ids {
            view.apply(Change::Joined(
                Instance::new("user", "127.0.0.1:9").with_id(*id),
            ));
        }
        let nodes = view.nodes_of("user");
        (view, nodes)
    }

    fn fail_three_times(view: &ClusterView, node: &NodeHandle) {
        for _ in 0..3 {
            view.record(node, "Exists", Duration::from_millis(1), true);
        }
    }

    #[tokio::test]
    async fn at_most_half_of_a_services_nodes_are_set_aside_at_once() {
        let (view, nodes) = view_of(&["a", "b", "c", "d"]);
        for node in &nodes {
            fail_three_times(&view, node);
        }
        let set_aside = nodes.iter().filter(|n| view.is_ejected(n)).count();
        assert_eq!(set_aside, 2);
    }

    #[tokio::test]
    async fn a_lone_node_can_still_be_set_aside() {
        let (view, nodes) = view_of(&["a"]);
        fail_three_times(&view, &nodes[0]);
        assert!(view.is_ejected(&nodes[0]));
    }

    /// A grpc.health.v1 server that holds each check for a while and counts how many
    /// it holds at once.
    #[derive(Default, Clone)]
    struct SlowHealth {
        holding: Arc<AtomicUsize>,
        most_at_once: Arc<AtomicUsize>,
        answered: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl tonic_health::pb::health_server::Health for SlowHealth {
        async fn check(
            &self,
            _: tonic::Request<tonic_health::pb::HealthCheckRequest>,
        ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
            let now = self.holding.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.holding.fetch_sub(1, Ordering::SeqCst);
            self.answered.fetch_add(1, Ordering::SeqCst);
            Ok(tonic::Response::new(
                tonic_health::pb::HealthCheckResponse {
                    status: tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                },
            ))
        }

        type WatchStream =
            futures::stream::Empty<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>;

        async fn watch(
            &self,
            _: tonic::Request<tonic_health::pb::HealthCheckRequest>,
        ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("not watched here"))
        }
    }

    #[tokio::test]
    async fn many_nodes_joining_at_once_are_all_checked_but_never_more_than_the_limit_at_once() {
        let health = SlowHealth::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("its address").to_string();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(tonic_health::pb::health_server::HealthServer::new(
                    health.clone(),
                ))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let view = ClusterView::for_tests();
        // One round of checks: the first runs on join, the next an hour later.
        let options = ViewOptions {
            health_interval: Duration::from_secs(3600),
            ..view.options.clone()
        }
        .with_health_checks_at_once(4);
        let view = ClusterView { options, ..view };
        const NODES: usize = 20;
        for n in 0..NODES {
            view.apply(Change::Joined(
                Instance::new("user", &address).with_id(format!("n{n}")),
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while health.answered.load(Ordering::SeqCst) < NODES {
            assert!(
                Instant::now() < deadline,
                "{} of {NODES} nodes checked within 60 s",
                health.answered.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let most = health.most_at_once.load(Ordering::SeqCst);
        assert!(
            most <= 4,
            "{most} checks in flight at once, over the limit of 4"
        );
        assert!(
            view.nodes_of("user")
                .iter()
                .all(|node| view.is_healthy(node)),
            "every node answered SERVING"
        );
        server.abort();
    }
}
