//! The call stack every caller runs, as tower layers: balance → record → per-attempt
//! timeout → the node, under a retry policy with a budget. A door (the service client,
//! the gateway's doors) says what the call is ([`CallInfo`]) and how its body can be
//! sent again ([`ReplayBody`]); every layer reads the one typed outcome ([`CallError`]).

mod balance;
mod body;
mod endpoint;
mod outcome;
mod record;
mod retry;
mod timeout;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use balance::{BalanceLayer, PickNode};
pub use body::ReplayBody;
pub use endpoint::NodeCall;
pub use outcome::{CallError, TimedOut};
pub use record::{Record, RecordLayer};
pub use retry::{Budget, RetryLayer, RetryMetrics, RetryPolicy, Retrying};
pub use timeout::{AttemptTimeout, AttemptTimeoutLayer};

use crate::node::Node;

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

/// The node the balancer picked for this attempt, in the request's extensions.
#[derive(Clone)]
pub struct Picked(pub Arc<Node>);

/// The call's facts, from the request; a request without them is a door's bug.
fn info_of(request: &CallRequest) -> Result<&CallInfo, CallError> {
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

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;
