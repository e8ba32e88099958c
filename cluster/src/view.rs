//! The live view of a cluster's nodes: every node of the followed services with one HTTP/2
//! channel each (opened on join, dropped on leave), kept current by a registry watch and
//! published as an immutable snapshot that a call reads without taking a lock. After a
//! failed read of the registry it keeps the last good view.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use registry::{Change, Instance, Registry, Scope};
use telemetry::prometheus::names;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::credentials::ClusterCredentials;
use crate::health::HEALTH_CHECKS_AT_ONCE;
use crate::node::Node;

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

/// The metrics a view reports under: the gateway's, or a service client's.
#[derive(Debug, Clone, Copy)]
pub struct ViewMetrics {
    pub nodes: &'static str,
    pub ejections: &'static str,
    pub health_checks: &'static str,
}

impl ViewMetrics {
    pub const GATEWAY: ViewMetrics = ViewMetrics {
        nodes: names::GATEWAY_NODES,
        ejections: names::GATEWAY_EJECTIONS,
        health_checks: names::GATEWAY_HEALTH_CHECKS,
    };
    pub const CLIENT: ViewMetrics = ViewMetrics {
        nodes: names::CLIENT_NODES,
        ejections: names::CLIENT_EJECTIONS,
        health_checks: names::CLIENT_HEALTH_CHECKS,
    };
}

/// How the view treats its nodes.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    pub ejection: Ejection,
    /// Zero turns active health checks off.
    pub health_interval: Duration,
    /// How long opening a connection to a node may take before the attempt counts as
    /// never sent.
    pub connect_timeout: Duration,
    /// What every call to a node carries: signature, client certificate.
    pub credentials: ClusterCredentials,
    pub metrics: ViewMetrics,
    /// Permits for health checks in flight, shared by every node of the view.
    pub(crate) health_checks: Arc<Semaphore>,
}

impl ViewOptions {
    /// At most [`HEALTH_CHECKS_AT_ONCE`] health checks in flight, connections opened
    /// within a second.
    pub fn new(
        ejection: Ejection,
        health_interval: Duration,
        credentials: ClusterCredentials,
        metrics: ViewMetrics,
    ) -> Self {
        Self {
            ejection,
            health_interval,
            connect_timeout: Duration::from_secs(1),
            credentials,
            metrics,
            health_checks: Arc::new(Semaphore::new(HEALTH_CHECKS_AT_ONCE)),
        }
    }

    /// At most `checks` health checks in flight (the cap is [`HEALTH_CHECKS_AT_ONCE`]
    /// otherwise; tests lower it to see it hold).
    ///
    /// [`HEALTH_CHECKS_AT_ONCE`]: crate::HEALTH_CHECKS_AT_ONCE
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_health_checks_at_once(mut self, checks: usize) -> Self {
        self.health_checks = Arc::new(Semaphore::new(checks.max(1)));
        self
    }

    /// No health checks, three failures set a node aside for 10 s.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_tests() -> Self {
        Self::new(
            Ejection {
                after_failures: 3,
                for_how_long: Duration::from_secs(10),
                max_ejected_percent: MAX_EJECTED_PERCENT,
            },
            Duration::ZERO,
            ClusterCredentials::default(),
            ViewMetrics::GATEWAY,
        )
    }
}

/// Live nodes by (service, instance id).
type NodeMap = BTreeMap<(String, String), Arc<Node>>;

/// The nodes that answer one gRPC service.
#[derive(Clone)]
pub struct GrpcTargets {
    /// The registry service whose route applies: when several expose the gRPC service,
    /// the one named like its package (`user` for `user.v1.UserService`), else the one
    /// with the most nodes, then by name — always the same one.
    pub owner: Arc<str>,
    /// The owner's nodes that expose it.
    pub nodes: Arc<[Arc<Node>]>,
}

/// The view at one moment, never changed once published: what a call reads.
pub struct Snapshot {
    /// Every node, sorted by service and id.
    all: Vec<Arc<Node>>,
    by_service: HashMap<String, Arc<[Arc<Node>]>>,
    by_grpc: HashMap<String, GrpcTargets>,
}

impl Snapshot {
    fn of(nodes: &NodeMap) -> Self {
        let mut by_service: HashMap<String, Vec<Arc<Node>>> = HashMap::new();
        for ((service, _), node) in nodes {
            by_service
                .entry(service.clone())
                .or_default()
                .push(node.clone());
        }
        Snapshot {
            all: nodes.values().cloned().collect(),
            by_grpc: index_by_grpc(nodes),
            by_service: by_service
                .into_iter()
                .map(|(service, nodes)| (service, nodes.into()))
                .collect(),
        }
    }

    /// Every live node, sorted by service and id.
    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.all
    }

    /// The live nodes of one service (set-aside ones included), sorted by id.
    pub fn nodes_of(&self, service: &str) -> Arc<[Arc<Node>]> {
        self.by_service
            .get(service)
            .cloned()
            .unwrap_or_else(|| Arc::new([]))
    }

    /// Who answers `grpc_service` (`user.v1.UserService`), if anyone does.
    pub fn serving(&self, grpc_service: &str) -> Option<&GrpcTargets> {
        self.by_grpc.get(grpc_service)
    }
}

fn index_by_grpc(nodes: &NodeMap) -> HashMap<String, GrpcTargets> {
    let mut exposed: HashMap<&str, BTreeMap<&str, Vec<Arc<Node>>>> = HashMap::new();
    for ((service, _), node) in nodes {
        for grpc in &node.meta.grpc_services {
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
                    owner: owner.into(),
                    nodes: nodes.into(),
                },
            ))
        })
        .collect()
}

#[derive(Clone)]
pub struct ClusterView {
    shared: Arc<Shared>,
}

struct Shared {
    /// The writer's copy; readers take the snapshot.
    nodes: Mutex<NodeMap>,
    /// The published snapshot. A change empties it and the next reader builds it again
    /// from `nodes`, so that a burst of joins (a gateway starting against 10,000 nodes)
    /// costs one build, not one per join.
    snapshot: ArcSwapOption<Snapshot>,
    epoch: Instant,
    options: ViewOptions,
    listed: tokio::sync::watch::Sender<bool>,
    /// Bumped after every applied change, for whoever waits for a node to be in view.
    applied: tokio::sync::watch::Sender<u64>,
    /// Every service a node of which was ever in view: one with no node left is known to
    /// exist (down), not a name nobody registered.
    seen: Mutex<std::collections::HashSet<String>>,
}

impl ClusterView {
    /// Starts following `scope` until `stop`.
    pub fn follow(
        registry: Arc<dyn Registry>,
        scope: Scope,
        options: ViewOptions,
        stop: CancellationToken,
    ) -> Self {
        let view = Self::empty(options, false);
        tokio::spawn(
            view.clone()
                .keep_current(registry::follow(registry, scope, stop)),
        );
        view
    }

    /// Starts from a listing the caller already made (so that a registry that cannot be
    /// reached was reported to it), then follows what changes after it until `stop`.
    pub fn follow_after(
        registry: Arc<dyn Registry>,
        snapshot: registry::Snapshot,
        watch: registry::Watch,
        options: ViewOptions,
        stop: CancellationToken,
    ) -> Self {
        let view = Self::empty(options, true);
        for instance in snapshot.instances.iter().cloned() {
            view.apply(Change::Joined(instance));
        }
        let changes = registry::Follow::after(registry, snapshot, watch, stop);
        tokio::spawn(view.clone().keep_current(changes));
        view
    }

    fn empty(options: ViewOptions, listed: bool) -> Self {
        ClusterView {
            shared: Arc::new(Shared {
                nodes: Mutex::default(),
                snapshot: ArcSwapOption::empty(),
                epoch: Instant::now(),
                options,
                listed: tokio::sync::watch::Sender::new(listed),
                applied: tokio::sync::watch::Sender::new(0),
                seen: Mutex::default(),
            }),
        }
    }

    /// A view that follows nothing, for tests of what reads node state: changes are
    /// applied by hand with [`ClusterView::apply`].
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_tests(options: ViewOptions) -> Self {
        Self::empty(options, true)
    }

    /// Applies every change `cluster` brings; listed once it has caught up.
    async fn keep_current(self, mut cluster: registry::Follow) {
        while let Some(change) = cluster.next().await {
            self.apply(change);
            if cluster.caught_up() {
                self.shared
                    .listed
                    .send_if_modified(|listed| !std::mem::replace(listed, true));
            }
        }
    }

    /// Turns true once the view holds the registry's first listing in full: before
    /// that a caller would take a service that exists for one with no node.
    pub fn listed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.listed.subscribe()
    }

    /// Waits (up to `patience`) until the view holds the registry's first listing;
    /// whether it does.
    pub async fn wait_listed(&self, patience: Duration) -> bool {
        let mut listed = self.listed();
        tokio::time::timeout(patience, listed.wait_for(|listed| *listed))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Waits (up to `patience`) until `instance` is in the view, so that whoever is told
    /// of its join can route to it at once; whether it is.
    pub async fn wait_for(&self, instance: &Instance, patience: Duration) -> bool {
        let mut applied = self.shared.applied.subscribe();
        // Asked of the writer's map, not a snapshot: during a burst of joins every
        // snapshot would be built again for each one asked about.
        let key = (instance.service.clone(), instance.id.clone());
        let in_view = |view: &ClusterView| {
            let nodes = view.shared.nodes.lock().unwrap_or_else(|p| p.into_inner());
            nodes.contains_key(&key)
        };
        let waited = tokio::time::timeout(patience, async {
            while !in_view(self) {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.is_ok() && in_view(self)
    }

    /// Applies a change by hand, to a view made with [`ClusterView::for_tests`].
    #[cfg(any(test, feature = "test-util"))]
    pub fn apply_for_tests(&self, change: Change) {
        self.apply(change)
    }

    /// Applies one change of the registry.
    fn apply(&self, change: Change) {
        let shared = &self.shared;
        let mut nodes = shared.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let service = match change {
            Change::Joined(instance) | Change::Updated(instance) => {
                let key = (instance.service.clone(), instance.id.clone());
                shared
                    .seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(instance.service.clone());
                if let Some(node) = Node::new(instance, &shared.options) {
                    nodes.insert(key.clone(), Arc::new(node));
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
        metrics::gauge!(shared.options.metrics.nodes, "service" => service).set(count as f64);
        // Emptied while the node map is still locked: no reader can publish a stale one.
        shared.snapshot.store(None);
        drop(nodes);
        shared.applied.send_modify(|n| *n += 1);
    }

    /// The view as it is now, read without a lock (built once after a change).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let shared = &self.shared;
        if let Some(snapshot) = shared.snapshot.load_full() {
            return snapshot;
        }
        let nodes = shared.nodes.lock().unwrap_or_else(|p| p.into_inner());
        // Another reader may have built it while this one waited for the lock.
        if let Some(snapshot) = shared.snapshot.load_full() {
            return snapshot;
        }
        let snapshot = Arc::new(Snapshot::of(&nodes));
        shared.snapshot.store(Some(snapshot.clone()));
        snapshot
    }

    /// Whether a node of `service` was ever in this view.
    pub fn has_seen(&self, service: &str) -> bool {
        let seen = self.shared.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.contains(service)
    }

    /// The live nodes of one service, set-aside ones included.
    pub fn nodes_of(&self, service: &str) -> Arc<[Arc<Node>]> {
        self.snapshot().nodes_of(service)
    }

    fn now_ms(&self) -> u64 {
        self.shared.epoch.elapsed().as_millis() as u64
    }

    /// Whether the node is set aside for a while after transport failures.
    pub fn is_ejected(&self, node: &Node) -> bool {
        node.stats.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Whether the node is out of rotation for either reason.
    pub fn is_set_aside(&self, node: &Node) -> bool {
        !node.is_healthy() || self.is_ejected(node)
    }

    /// Whether another node of `service` may be set aside: at most `max_ejected_percent`
    /// of them (at least one), so that transport failures caused by the calls themselves
    /// can never empty a service.
    fn may_eject_another(&self, service: &str) -> bool {
        let nodes = self.nodes_of(service);
        let ejected = nodes.iter().filter(|n| self.is_ejected(n)).count();
        let percent = usize::from(self.shared.options.ejection.max_ejected_percent.min(100));
        let limit = (nodes.len() * percent / 100).max(1);
        ejected < limit
    }

    /// Records an attempt's outcome: its latency into the method's average, transport
    /// failures toward passive ejection.
    pub fn record(&self, node: &Node, method: &str, latency: Duration, transport_failure: bool) {
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
        } = self.shared.options.ejection;
        if after_failures > 0
            && failures >= after_failures
            && !self.is_ejected(node)
            && self.may_eject_another(&node.instance.service)
        {
            let until = self.now_ms() + for_how_long.as_millis() as u64;
            stats.ejected_until_ms.store(until, Ordering::Relaxed);
            metrics::counter!(self.shared.options.metrics.ejections, "service" => node.instance.service.clone())
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn view_of(ids: &[&str]) -> (ClusterView, Arc<[Arc<Node>]>) {
        let view = ClusterView::for_tests(ViewOptions::for_tests());
        for id in ids {
            view.apply(Change::Joined(
                Instance::new("user", "127.0.0.1:9").with_id(*id),
            ));
        }
        let nodes = view.nodes_of("user");
        (view, nodes)
    }

    fn fail_three_times(view: &ClusterView, node: &Node) {
        for _ in 0..3 {
            view.record(node, "Exists", Duration::from_millis(1), true);
        }
    }

    #[tokio::test]
    async fn at_most_half_of_a_services_nodes_are_set_aside_at_once() {
        let (view, nodes) = view_of(&["a", "b", "c", "d"]);
        for node in nodes.iter() {
            fail_three_times(&view, node);
        }
        let set_aside = nodes.iter().filter(|n| view.is_ejected(n)).count();
        assert_eq!(set_aside, 2);
    }

    #[tokio::test]
    async fn a_snapshot_stays_as_it_was_read_and_a_service_once_seen_is_remembered() {
        let (view, _) = view_of(&["a", "b"]);
        let before = view.snapshot();
        view.apply(Change::Left(
            Instance::new("user", "127.0.0.1:9").with_id("a"),
        ));
        assert_eq!(before.nodes_of("user").len(), 2, "a snapshot never changes");
        assert_eq!(view.nodes_of("user").len(), 1);
        view.apply(Change::Left(
            Instance::new("user", "127.0.0.1:9").with_id("b"),
        ));
        assert!(view.nodes_of("user").is_empty());
        assert!(view.has_seen("user"), "no node left, but known to exist");
        assert!(!view.has_seen("usr"));
    }

    #[tokio::test]
    async fn waiting_for_a_node_ends_once_it_is_in_view() {
        let (view, _) = view_of(&[]);
        let joining = Instance::new("user", "127.0.0.1:9").with_id("late");
        let waiter = {
            let (view, joining) = (view.clone(), joining.clone());
            tokio::spawn(async move { view.wait_for(&joining, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        view.apply(Change::Joined(joining.clone()));
        assert!(waiter.await.expect("the waiter ran"), "in view");
        let never = Instance::new("user", "127.0.0.1:9").with_id("never");
        assert!(!view.wait_for(&never, Duration::from_millis(20)).await);
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
        // One round of checks: the first runs on join, the next an hour later.
        let options = ViewOptions {
            health_interval: Duration::from_secs(3600),
            ..ViewOptions::for_tests()
        }
        .with_health_checks_at_once(4);
        let view = ClusterView::for_tests(options);
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
            view.nodes_of("user").iter().all(|node| node.is_healthy()),
            "every node answered SERVING"
        );
        server.abort();
    }
}
