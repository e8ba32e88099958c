//! The process's metrics: one recorder behind the `metrics` facade (so that every crate
//! of a node can count without knowing who reads), rendered in Prometheus text format.
//! Names follow Prometheus conventions: `rustms_` first (in `rust_ms_`, linters read
//! `ms` as milliseconds), base units (`_seconds`), `_total` on counters.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The names every node and the gateway report under.
pub mod names {
    /// gRPC calls a node served, by `service`, `method` and `grpc_code`.
    pub const SERVER_REQUESTS: &str = "rustms_server_requests_total";
    /// How long a node took to serve a call, to its last message.
    pub const SERVER_DURATION: &str = "rustms_server_request_duration_seconds";
    /// Changes of the registry a node saw, by `event` (`join`, `update`, `leave`).
    pub const REGISTRY_EVENTS: &str = "rustms_registry_events_total";
    /// Registrations made again after a lease was lost.
    pub const LEASE_REACQUISITIONS: &str = "rustms_registry_lease_reacquisitions_total";
    /// Lease refreshes that failed (the lease may still be alive).
    pub const KEEPALIVE_FAILURES: &str = "rustms_registry_keepalive_failures_total";
    /// Times a watch ended and the registry was listed again.
    pub const RELISTS: &str = "rustms_registry_relists_total";
    /// Calls through the gateway, by `door` (`api`, `rpc`), `service`, `method`,
    /// `http_status` and `grpc_code`.
    pub const GATEWAY_REQUESTS: &str = "rustms_gateway_requests_total";
    /// How long a call through the gateway took, retries included.
    pub const GATEWAY_DURATION: &str = "rustms_gateway_request_duration_seconds";
    /// Calls through the gateway not finished yet, by `door`.
    pub const GATEWAY_IN_FLIGHT: &str = "rustms_gateway_requests_in_flight";
    /// Attempts sent to another node after one failed, by `service`.
    pub const GATEWAY_RETRIES: &str = "rustms_gateway_retries_total";
    /// Retries refused because the retry budget was spent, by `service`.
    pub const GATEWAY_BUDGET_EXHAUSTED: &str = "rustms_gateway_retry_budget_exhausted_total";
    /// Calls refused by a route's rate limit (429), by `service`.
    pub const GATEWAY_RATE_LIMITED: &str = "rustms_gateway_rate_limited_total";
    /// A route's canary's share of the calls now, in percent, by `service` and `version`.
    pub const GATEWAY_CANARY_PERCENT: &str = "rustms_gateway_canary_percent";
    /// 1 while a route's canary is rolled back, else 0, by `service` and `version`.
    pub const GATEWAY_CANARY_ROLLED_BACK: &str = "rustms_gateway_canary_rolled_back";
    /// The calls a second of a route's cluster-wide rate limit this gateway enforces (the
    /// limit divided by the gateways it sees), by `service`.
    pub const GATEWAY_RATE_LIMIT_SHARE: &str = "rustms_gateway_rate_limit_share_per_second";
    /// Calls refused by an open circuit, by `service`.
    pub const GATEWAY_CIRCUIT_REFUSED: &str = "rustms_gateway_circuit_refused_total";
    /// Calls refused at once because their method had as many in flight as its adaptive
    /// concurrency limit allows (503 with `Retry-After`), by `service` and `method`.
    pub const GATEWAY_SHED: &str = "rustms_gateway_shed_total";
    /// A method's adaptive concurrency limit now, by `service` and `method`.
    pub const GATEWAY_CONCURRENCY_LIMIT: &str = "rustms_gateway_concurrency_limit";
    /// Copies of calls a route's mirror sent, by `service` (the one copied to) and
    /// `outcome` (`ok`, `error`, `failed`, `skipped`).
    pub const GATEWAY_MIRRORED: &str = "rustms_gateway_mirrored_total";
    /// 1 while a service's circuit is open or half-open, by `service`.
    pub const GATEWAY_CIRCUIT_OPEN: &str = "rustms_gateway_circuit_open";
    /// Nodes set aside after transport failures, by `service`.
    pub const GATEWAY_EJECTIONS: &str = "rustms_gateway_ejections_total";
    /// Active health checks, by `service` and `result` (`serving`, `not_serving`).
    pub const GATEWAY_HEALTH_CHECKS: &str = "rustms_gateway_health_checks_total";
    /// Live nodes the gateway routes to, by `service`.
    pub const GATEWAY_NODES: &str = "rustms_gateway_nodes";
    /// The revision of the route table in force (0: the configured one).
    pub const GATEWAY_ROUTE_REVISION: &str = "rustms_gateway_route_table_revision";
    /// Calls a node made to another service through its service client, by `service`
    /// (the called one), `method` and `grpc_code`.
    pub const CLIENT_REQUESTS: &str = "rustms_client_requests_total";
    /// How long a call to another service took, retries included, to its last message.
    pub const CLIENT_DURATION: &str = "rustms_client_request_duration_seconds";
    /// Attempts of the service client sent to another node after one failed, by `service`.
    pub const CLIENT_RETRIES: &str = "rustms_client_retries_total";
    /// Retries of the service client refused because its retry budget was spent.
    pub const CLIENT_BUDGET_EXHAUSTED: &str = "rustms_client_retry_budget_exhausted_total";
    /// Calls of the service client refused at once by their method's adaptive
    /// concurrency limit, by `service` and `method`.
    pub const CLIENT_SHED: &str = "rustms_client_shed_total";
    /// The service client's adaptive concurrency limit of a method, by `service` and `method`.
    pub const CLIENT_CONCURRENCY_LIMIT: &str = "rustms_client_concurrency_limit";
    /// Nodes of a called service the client set aside after transport failures.
    pub const CLIENT_EJECTIONS: &str = "rustms_client_ejections_total";
    /// The service client's health checks of called nodes, by `service` and `result`.
    pub const CLIENT_HEALTH_CHECKS: &str = "rustms_client_health_checks_total";
    /// Live nodes of a called service the client balances over, by `service`.
    pub const CLIENT_NODES: &str = "rustms_client_nodes";
    /// 1, labelled with the node's `service` and `version`, one per node of the process.
    pub const NODE_INFO: &str = "rustms_node_info";
}

/// Latency buckets, in seconds: 250 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder, once; later calls (more nodes in one process) share
/// it. Until it is installed every count is a no-op.
pub fn install() -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    if HANDLE.set(handle.clone()).is_err() {
        return Ok(());
    }
    describe();
    // Histograms are drained into their buckets by upkeep; without it their samples
    // would pile up between scrapes.
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no metrics upkeep thread; histograms are drained on scrape only");
    }
    Ok(())
}

/// Whether a recorder is installed.
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

/// Every metric in Prometheus text format; `None` when no recorder is installed.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

fn describe() {
    use names::*;
    let counters = [
        (SERVER_REQUESTS, "gRPC calls this node served."),
        (REGISTRY_EVENTS, "Registry changes this node saw."),
        (
            LEASE_REACQUISITIONS,
            "Registrations made again after the lease was lost.",
        ),
        (
            KEEPALIVE_FAILURES,
            "Lease refreshes that failed; the lease may still be alive.",
        ),
        (
            RELISTS,
            "Times a registry watch ended and the registry was listed again.",
        ),
        (GATEWAY_REQUESTS, "Calls through the gateway."),
        (
            GATEWAY_RETRIES,
            "Attempts sent to another node after one failed.",
        ),
        (
            GATEWAY_BUDGET_EXHAUSTED,
            "Retries refused because the retry budget was spent.",
        ),
        (
            GATEWAY_RATE_LIMITED,
            "Calls refused by a route's rate limit (HTTP 429).",
        ),
        (
            GATEWAY_CANARY_PERCENT,
            "A route's canary's share of the calls now, in percent.",
        ),
        (
            GATEWAY_CANARY_ROLLED_BACK,
            "1 while a route's canary is rolled back (it failed a step), else 0.",
        ),
        (
            GATEWAY_RATE_LIMIT_SHARE,
            "The calls a second of a route's cluster-wide rate limit this gateway enforces: the limit divided by the gateways in the registry.",
        ),
        (GATEWAY_CIRCUIT_REFUSED, "Calls refused by an open circuit."),
        (
            GATEWAY_MIRRORED,
            "Copies of calls a route's mirror sent, by outcome; their answers are dropped.",
        ),
        (
            GATEWAY_SHED,
            "Calls refused at once past their method's adaptive concurrency limit (HTTP 503).",
        ),
        (
            CLIENT_SHED,
            "Calls to other services refused at once past their method's adaptive concurrency limit.",
        ),
        (
            GATEWAY_EJECTIONS,
            "Nodes set aside after transport failures.",
        ),
        (
            GATEWAY_HEALTH_CHECKS,
            "Active grpc.health.v1 checks of nodes, by result.",
        ),
        (CLIENT_REQUESTS, "Calls this node made to other services."),
        (
            CLIENT_RETRIES,
            "Attempts of calls to other services sent to another node after one failed.",
        ),
        (
            CLIENT_BUDGET_EXHAUSTED,
            "Retries of calls to other services refused because the retry budget was spent.",
        ),
        (
            CLIENT_EJECTIONS,
            "Nodes of called services set aside after transport failures.",
        ),
        (
            CLIENT_HEALTH_CHECKS,
            "Health checks of called services' nodes, by result.",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    for (name, help) in [
        (
            SERVER_DURATION,
            "How long this node took to serve a call, to its last message.",
        ),
        (
            GATEWAY_DURATION,
            "How long a call through the gateway took, retries included.",
        ),
        (
            CLIENT_DURATION,
            "How long a call to another service took, retries included.",
        ),
    ] {
        describe_histogram!(name, Unit::Seconds, help);
    }
    for (name, help) in [
        (
            GATEWAY_IN_FLIGHT,
            "Calls through the gateway not finished yet.",
        ),
        (
            GATEWAY_CIRCUIT_OPEN,
            "1 while the service's circuit is open or half-open.",
        ),
        (GATEWAY_NODES, "Live nodes the gateway routes to."),
        (
            GATEWAY_CONCURRENCY_LIMIT,
            "A method's adaptive concurrency limit now.",
        ),
        (
            CLIENT_CONCURRENCY_LIMIT,
            "The service client's adaptive concurrency limit of a method now.",
        ),
        (CLIENT_NODES, "Live nodes of a called service."),
        (
            GATEWAY_ROUTE_REVISION,
            "Revision of the route table in force; 0 for the configured one.",
        ),
        (
            NODE_INFO,
            "1 per node of this process, with its service and version.",
        ),
    ] {
        describe_gauge!(name, help);
    }
}
