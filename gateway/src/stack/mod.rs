//! The gateway's call stack: its own guards in front of the cluster's layers, the same
//! for `/api` and the rpc port. admit (the route's JWT check and rate limit) → breaker →
//! canary (each call counted for the side of a running canary that answered it) →
//! mirror (a share of the calls copied elsewhere, in the background) → shed (each method's adaptive concurrency limit) → retry (with the gateway's budget) → balance → attempt span → record → per-attempt
//! timeout → the node. A door puts the call's facts in the request's extensions
//! ([`cluster::stack::CallInfo`], with its place in the trace, and [`GatewayCall`])
//! and reads the reply or the one typed failure ([`CallError`]).

mod admit;
mod breaker;
mod canary;
mod mirror;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use cluster::ClusterView;
use cluster::stack::{Budget, CallError, CallRequest, CallResponse, RetryMetrics, RetryPolicy};
use telemetry::prometheus::names;
use tower::util::BoxCloneSyncService;

pub use admit::AdmitLayer;
pub use breaker::BreakerLayer;
pub use canary::CanaryLayer;
pub use mirror::MirrorLayer;

use crate::auth::JwtVerifier;
use crate::resilience::{Guards, GuardsByService};
use crate::settings::Route;

/// What the gateway's guards need of a call, in the request's extensions beside its
/// [`cluster::stack::CallInfo`].
#[derive(Clone)]
pub struct GatewayCall {
    /// The route in force for the call's service.
    pub route: Arc<Route>,
    /// The caller's `Authorization`, for a door that does not pass the caller's headers
    /// on to the node (`/api`): the admit layer checks it, and no node sees it. On the rpc
    /// port the header itself is read, and goes on with the rest.
    pub authorization: Option<http::HeaderValue>,
    /// The service's rate limit and breaker, found by the admit layer.
    pub guards: Option<Arc<Guards>>,
    /// The client key of the route's rate limit, when it keys by a header or the
    /// client's address (a claim's is read once the token is verified).
    pub client: Option<u64>,
    /// Where the admit layer leaves what the caller is told of its rate limit, for a
    /// door that answers with `RateLimit-*` headers.
    pub allowance: Option<Arc<std::sync::OnceLock<crate::rate_limit::Allowance>>>,
}

impl GatewayCall {
    pub fn new(route: Arc<Route>) -> Self {
        Self {
            route,
            authorization: None,
            guards: None,
            client: None,
            allowance: None,
        }
    }
}

/// Every call through the gateway, whichever door it came in by.
pub type CallStack = BoxCloneSyncService<CallRequest, CallResponse, CallError>;

/// The stack over `view`, guarded by `jwt` and each service's rate limit and breaker in
/// `guards`, each method limited by `limits` when load shedding is on, retrying within
/// `retry_budget_percent`.
pub fn build(
    view: &ClusterView,
    jwt: Arc<JwtVerifier>,
    guards: Arc<GuardsByService>,
    limits: Option<Arc<cluster::shed::Limits>>,
    canaries: Arc<crate::canary::CanaryMeter>,
    history: Arc<crate::history::History>,
    retry_budget_percent: f32,
) -> CallStack {
    let retries = RetryPolicy::new(
        Budget::new(retry_budget_percent),
        RetryMetrics {
            retries: names::GATEWAY_RETRIES,
            budget_exhausted: names::GATEWAY_BUDGET_EXHAUSTED,
        },
    );
    // Copies of mirrored calls reach a node at most once (one that never left may go to
    // another node; none is retried after it may have run, and no budget of the callers'
    // is spent), are never shed, and their retries are not the callers': what they meet
    // is counted as the mirror's outcome, not fought.
    let copies = BoxCloneSyncService::new(cluster::stack::to_the_nodes(
        view,
        RetryPolicy::uncounted(Budget::new(0.0)),
        None,
    ));
    let stack = tower::ServiceBuilder::new()
        .layer(AdmitLayer::new(jwt, guards))
        .layer(BreakerLayer)
        .layer(CanaryLayer::new(canaries, history))
        .layer(MirrorLayer::new(copies))
        .service(cluster::stack::to_the_nodes(view, retries, limits));
    BoxCloneSyncService::new(stack)
}

fn gateway_call_of(request: &CallRequest) -> Result<&GatewayCall, CallError> {
    request
        .extensions()
        .get::<GatewayCall>()
        .ok_or(CallError::Misassembled(
            "a call reached the gateway's guards without its route",
        ))
}
