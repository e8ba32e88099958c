//! The call stack every caller runs, as tower layers: shed (each method's adaptive
//! concurrency limit) → retry (with a budget) → balance → attempt span → record →
//! per-attempt timeout → the node. A door (the service client,
//! the gateway's doors) says what the call is ([`CallInfo`]) and how its body can be
//! sent again ([`ReplayBody`]), and may put guards of its own in front (the gateway's
//! admit and breaker layers); every layer reads the one typed outcome ([`CallError`]).

mod balance;
mod body;
mod endpoint;
mod layer;
mod outcome;
mod record;
mod retry;
mod shed;
mod timeout;
mod trace;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use balance::BalanceLayer;
pub use body::ReplayBody;
pub use endpoint::NodeCall;
pub use layer::{Around, Below, CallFuture, Layered, Step};
pub use outcome::{CallError, TimedOut};
pub use record::RecordLayer;
pub use retry::{Budget, RetryLayer, RetryMetrics, RetryPolicy, Retrying};
pub use shed::ShedLayer;
pub use timeout::AttemptTimeoutLayer;
pub use trace::{AttemptSpansLayer, AttemptTrace};

use crate::balance::Balance;
use crate::node::Node;

/// The stack below a door's own guards, the same for every door: shed (under `limits`,
/// when load shedding is on) → retry (under `retries`) → balance → attempt span → record
/// → per-attempt timeout → the node, over the nodes of `view`.
pub fn to_the_nodes(
    view: &crate::view::ClusterView,
    retries: RetryPolicy,
    limits: Option<Arc<crate::shed::Limits>>,
) -> impl Below + Clone + Sync {
    tower::ServiceBuilder::new()
        .layer(ShedLayer::new(limits))
        .layer(RetryLayer::new(retries))
        .layer(BalanceLayer::new(view.clone()))
        .layer(AttemptSpansLayer)
        .layer(RecordLayer::new(view.clone()))
        .layer(AttemptTimeoutLayer)
        .service(NodeCall)
}

/// The gRPC service and method a call's path names: `/user.v1.UserService/Exists` →
/// (`user.v1.UserService`, `Exists`), each made once for everything that names them.
pub fn grpc_names(path: &str) -> (Arc<str>, Arc<str>) {
    let path = path.trim_start_matches('/');
    let (grpc_service, method) = path.split_once('/').unwrap_or((path, ""));
    (grpc_service.into(), method.into())
}

/// A request through the stack.
pub type CallRequest = http::Request<ReplayBody>;
/// What a node answered: the head, and the body as it streams.
pub type CallResponse = http::Response<tonic::body::Body>;

/// What the stack needs to know of one call, carried in the request's extensions.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The registry service whose nodes may take it.
    pub service: Arc<str>,
    /// The gRPC service of its path (`user.v1.UserService`): only nodes that serve it
    /// are picked.
    pub grpc_service: Arc<str>,
    /// The method's simple name (`Exists`), for latency statistics.
    pub method: Arc<str>,
    /// Whether a call that may have run may run again on another node.
    pub idempotent: bool,
    /// When the call gives up; carried to the node as `grpc-timeout`.
    pub deadline: Option<Instant>,
    /// How long one attempt may take, when less than what is left of the call (an
    /// idempotent call's attempt on a hung node leaves time to try others).
    pub attempt_timeout: Option<Duration>,
    /// How the node of each attempt is chosen.
    pub balance: Balance,
    /// Only nodes running one of these versions may take the call (in a rolling upgrade,
    /// those that have the method); `None`: any version.
    pub versions: Option<Arc<BTreeSet<String>>>,
    /// The subset of nodes a traffic rule chose for the call (a version, labels), and
    /// whether the rest may take it when none of the subset can; `None`: any node.
    pub steer: Option<crate::traffic::Steer>,
    /// The call's sticky key: calls with the same key go to the same node (see
    /// [`crate::affinity`]); `None`: balanced as the route says.
    pub affinity: Option<u64>,
    /// Whether the attempt reads the reply to its end before it counts as answered: a
    /// unary reply then fails over like its request (a connection lost mid-reply is a
    /// lost attempt), and its status is seen inside the stack. A stream is handed on as
    /// it comes.
    pub whole_reply: bool,
    /// Where the call's attempts belong in its trace; `None`: traced by the channel
    /// alone (the current context, if any).
    pub trace: Option<AttemptTrace>,
}

impl CallInfo {
    /// A call of `grpc_service`'s `method` on a node of `service`, balanced p2c, with no
    /// deadline, not repeated after it may have run, its reply streamed: the doors set
    /// what they know.
    pub fn new(
        service: impl Into<Arc<str>>,
        grpc_service: impl Into<Arc<str>>,
        method: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            service: service.into(),
            grpc_service: grpc_service.into(),
            method: method.into(),
            idempotent: false,
            deadline: None,
            attempt_timeout: None,
            balance: Balance::P2c,
            versions: None,
            steer: None,
            affinity: None,
            whole_reply: false,
            trace: None,
        }
    }
}

impl CallInfo {
    /// Whether the call's deadline has passed.
    pub fn is_past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// The nodes a call already tried, in its extensions: the next attempt goes elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Tried(pub Vec<String>);

/// How long the attempt that answered took, to its reply's head, in the reply's
/// extensions: a call sent on after a failed attempt is judged by the node that answered.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredIn(pub Duration);

/// The node the balancer picked for this attempt, in the request's extensions; in the
/// reply's, the node that gave it.
#[derive(Clone)]
pub struct Picked(pub Arc<Node>);

/// The call's facts, from the request; a request without them is a door's bug.
pub fn info_of(request: &CallRequest) -> Result<&CallInfo, CallError> {
    request
        .extensions()
        .get::<CallInfo>()
        .ok_or(CallError::Misassembled(
            "a call reached the stack without its CallInfo",
        ))
}

fn picked_of(request: &CallRequest) -> Result<Arc<Node>, CallError> {
    request
        .extensions()
        .get::<Picked>()
        .map(|picked| picked.0.clone())
        .ok_or(CallError::Misassembled(
            "an attempt reached a node layer before the balancer",
        ))
}

/// What a layer's call returns.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;
