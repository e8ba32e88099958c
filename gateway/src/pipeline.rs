//! The one path every call through the gateway takes, on `/api` and on the rpc port:
//! admit → pick a node with the route's balancer → call → classify the outcome → retry
//! policy → record. Each stage is a named piece; the two front doors differ only in the
//! call itself (`/api` sends a decoded message, the rpc port passes bytes) and in how
//! they read and write the outside world around it.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;
use tonic::Code;
use tower::retry::budget::Budget as _;

use crate::api::Api;
use crate::failure::Failure;
use crate::observe::CallTrace;
use crate::settings::Route;
use cluster as balance;
use cluster::Attempt;
use cluster::Node;
use telemetry::prometheus::names;

/// What the pipeline needs to know about one call.
pub struct Call<'a> {
    /// The registry service whose nodes may take it.
    pub service: &'a str,
    /// The method's simple name (`Exists`), for latency statistics and the route.
    pub method: &'a str,
    pub route: &'a Route,
    /// Whether a call that may have run may run again elsewhere.
    pub idempotent: bool,
    /// When the call gives up (`None`: the caller's own deadline, on the rpc port).
    pub deadline: Option<Instant>,
}

/// An attempt that brought no reply: what it says about the call and the node, and what
/// the caller is told if no other attempt follows.
pub struct Tried {
    pub attempt: Attempt,
    pub failure: Failure,
}

impl Tried {
    pub fn new(attempt: Attempt, failure: Failure) -> Self {
        Self { attempt, failure }
    }
}

/// Runs `call`: picks a node among `nodes()` (read again before each attempt, so that
/// joins and leaves count), calls `attempt` on it, and retries on another node as the
/// policy allows. Returns the reply and the node that gave it.
pub async fn run<T, F, Fut>(
    api: &Api,
    call: &Call<'_>,
    trace: &CallTrace,
    nodes: impl Fn() -> Vec<Arc<Node>>,
    mut attempt: F,
) -> Result<(T, Arc<Node>), Failure>
where
    // The node, and the trace headers the attempt carries to it.
    F: FnMut(Arc<Node>, http::HeaderMap) -> Fut,
    Fut: Future<Output = Result<T, Tried>>,
{
    api.retries.deposit();
    let mut tried: Vec<String> = Vec::new();
    loop {
        // A deadline already past sends nothing: the timer, rounded up to its next tick,
        // would otherwise let a fast node answer a call that had no time left.
        if call
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(timed_out(call).failure);
        }
        let candidates = balance::candidates(&api.view, &nodes(), &tried);
        let Some(node) = balance::pick(
            &candidates,
            call.route.balance,
            &api.round_robin,
            call.method,
        ) else {
            return Err(no_node_left(call.service, tried.len()));
        };
        let started = Instant::now();
        let (trace_headers, span) = trace.attempt(&node);
        let outcome = match attempt_deadline(call, started) {
            Some(deadline) => {
                tokio::time::timeout_at(deadline, attempt(node.clone(), trace_headers))
                    .await
                    .unwrap_or_else(|_| Err(timed_out(call)))
            }
            None => attempt(node.clone(), trace_headers).await,
        }
        .map_err(|tried| deadline_passed_at_node(call, tried));
        span.end(outcome.as_ref().err().map(|t| t.failure.message.as_str()));
        let attempt_class = outcome.as_ref().err().map(|tried| tried.attempt);
        record(api, &node, call.method, started, attempt_class);
        let Err(Tried { attempt, failure }) = outcome else {
            return outcome.map(|reply| (reply, node)).map_err(|t| t.failure);
        };
        let failure = failure.served_by(node.instance.address.clone());
        if should_retry(api, call, attempt) {
            metrics::counter!(names::GATEWAY_RETRIES, "service" => call.service.to_owned())
                .increment(1);
            tracing::debug!(address = %node.instance.address, ?attempt, message = %failure.message, "trying another node");
            tried.push(node.instance.id.clone());
            continue;
        }
        return Err(failure);
    }
}

/// How long one attempt may take: the call's deadline, except that an idempotent call's
/// attempt gets a third of its timeout, so that a node that hangs leaves time to try two
/// others.
fn attempt_deadline(call: &Call<'_>, started: Instant) -> Option<Instant> {
    let deadline = call.deadline?;
    if !call.idempotent {
        return Some(deadline);
    }
    Some(deadline.min(started + call.route.timeout_of(call.method) / 3))
}

/// Record: the latency of a reply, or a failure toward setting the node aside.
fn record(api: &Api, node: &Node, method: &str, started: Instant, failed: Option<Attempt>) {
    let node_fault = failed.is_some_and(Attempt::is_node_fault);
    api.view.record(node, method, started.elapsed(), node_fault);
}

/// Retry policy: a call that never left may go anywhere; one that may have run (lost in
/// transit, or an attempt that ran out of time) goes elsewhere only when it is idempotent
/// and the retry budget allows; a service's own answer, a reply the gateway refused and
/// the call's passed deadline are final.
fn should_retry(api: &Api, call: &Call<'_>, attempt: Attempt) -> bool {
    if call
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline)
    {
        return false;
    }
    match attempt {
        Attempt::NotSent => true,
        Attempt::Lost | Attempt::TimedOut if call.idempotent => {
            let allowed = api.retries.withdraw();
            if !allowed {
                metrics::counter!(names::GATEWAY_BUDGET_EXHAUSTED, "service" => call.service.to_owned())
                    .increment(1);
            }
            allowed
        }
        Attempt::Lost | Attempt::TimedOut => false,
        Attempt::Answered | Attempt::Refused => false,
    }
}

fn timed_out(call: &Call<'_>) -> Tried {
    Tried::new(
        Attempt::TimedOut,
        Failure::new(
            Code::DeadlineExceeded,
            format!(
                "{}/{} took longer than {:?}",
                call.service,
                call.method,
                call.route.timeout_of(call.method)
            ),
        ),
    )
}

/// The node enforces the deadline the gateway sends it (`grpc-timeout`), and tonic
/// answers CANCELLED ("Timeout expired") when it runs out there first: that is this
/// call's deadline passing, not a caller going away.
fn deadline_passed_at_node(call: &Call<'_>, tried: Tried) -> Tried {
    let passed = call
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline);
    if passed && tried.failure.code == Code::Cancelled {
        timed_out(call)
    } else {
        tried
    }
}

fn no_node_left(service: &str, tried: usize) -> Failure {
    let message = match tried {
        0 => format!("no healthy node of {service:?}"),
        n => format!("no healthy node of {service:?} left to try ({n} tried)"),
    };
    Failure::new(Code::Unavailable, message)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(route: &Route, deadline: Instant) -> Call<'_> {
        Call {
            service: "user",
            method: "Exists",
            route,
            idempotent: true,
            deadline: Some(deadline),
        }
    }

    fn cancelled_by_the_node() -> Tried {
        Tried::new(
            Attempt::Answered,
            Failure::new(Code::Cancelled, "Timeout expired"),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_cancelling_past_the_calls_deadline_is_a_deadline_exceeded() {
        let route = Route::default();
        let deadline = Instant::now() + Duration::from_millis(5);
        tokio::time::sleep(Duration::from_millis(6)).await;
        let settled = deadline_passed_at_node(&call(&route, deadline), cancelled_by_the_node());
        assert_eq!(settled.failure.code, Code::DeadlineExceeded);
        assert_eq!(settled.attempt, Attempt::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_cancelling_before_the_deadline_stays_cancelled() {
        let route = Route::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let settled = deadline_passed_at_node(&call(&route, deadline), cancelled_by_the_node());
        assert_eq!(settled.failure.code, Code::Cancelled);
        assert_eq!(settled.attempt, Attempt::Answered);

        // Other failures past the deadline keep their own code.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let unavailable = Tried::new(
            Attempt::Lost,
            Failure::new(Code::Unavailable, "connection reset"),
        );
        let settled = deadline_passed_at_node(&call(&route, deadline), unavailable);
        assert_eq!(settled.failure.code, Code::Unavailable);
    }
}
