//! Each layer on a mock of what is below it (tower-test's, or a plain function).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use registry::{Change, Instance};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::classify::Attempt;
use crate::meta::GRPC_SERVICES;
use crate::view::{ClusterView, ViewOptions};

fn view_of(ids: &[&str]) -> ClusterView {
    let view = ClusterView::for_tests(ViewOptions::for_tests());
    for id in ids {
        let mut instance = Instance::new("user", "127.0.0.1:9").with_id(*id);
        instance
            .metadata
            .insert(GRPC_SERVICES.into(), "user.v1.UserService".into());
        view.apply_for_tests(Change::Joined(instance));
    }
    view
}

fn info(idempotent: bool) -> CallInfo {
    CallInfo {
        idempotent,
        deadline: Some(Instant::now() + Duration::from_secs(30)),
        balance: crate::Balance::RoundRobin,
        ..CallInfo::new("user", "user.v1.UserService", "Exists")
    }
}

fn request(info: CallInfo) -> CallRequest {
    let mut request = http::Request::new(ReplayBody::whole(bytes::Bytes::from_static(b"m")));
    request.extensions_mut().insert(info);
    request
}

fn picked(view: &ClusterView, id: &str, info: CallInfo) -> CallRequest {
    let node = view
        .nodes_of("user")
        .iter()
        .find(|n| n.instance.id == id)
        .cloned()
        .expect("the node");
    let mut request = request(info);
    request.extensions_mut().insert(Picked(node));
    request
}

fn ok() -> CallResponse {
    http::Response::new(tonic::body::Body::empty())
}

fn failed_on(node: &Arc<Node>, attempt: Attempt) -> CallError {
    CallError::Attempt {
        attempt,
        node: node.clone(),
        source: "on purpose".into(),
    }
}

/// A service below the layer under test that fails every attempt as `attempt` on the node
/// it was given, and counts the attempts.
fn failing(
    attempt: Attempt,
    attempts: Arc<std::sync::Mutex<Vec<String>>>,
) -> impl Service<CallRequest, Response = CallResponse, Error = CallError, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |request: CallRequest| {
        let attempts = attempts.clone();
        async move {
            let node = picked_of(&request)?;
            attempts.lock().unwrap().push(node.instance.id.clone());
            Err::<CallResponse, _>(failed_on(&node, attempt))
        }
    })
}

fn retried_stack(
    view: &ClusterView,
    attempt: Attempt,
) -> (
    impl Service<CallRequest, Response = CallResponse, Error = CallError>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let attempts = Arc::default();
    let policy = RetryPolicy::new(
        Budget::new(20.0),
        RetryMetrics {
            retries: "test_retries",
            budget_exhausted: "test_budget_exhausted",
        },
    );
    let stack = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(BalanceLayer::new(view.clone()))
        .service(failing(attempt, Arc::clone(&attempts)));
    (stack, attempts)
}

#[tokio::test]
async fn retry_sends_an_attempt_that_never_left_to_every_other_node_then_stops() {
    let view = view_of(&["a", "b", "c"]);
    let (stack, attempts) = retried_stack(&view, Attempt::NotSent);
    let error = stack.oneshot(request(info(false))).await.unwrap_err();
    let mut tried = attempts.lock().unwrap().clone();
    tried.sort();
    assert_eq!(
        tried,
        ["a", "b", "c"],
        "each node once, even for a method not safe to repeat"
    );
    assert!(
        matches!(error, CallError::NoneLeft { tried: 3, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn retry_repeats_a_call_that_may_have_run_only_when_the_method_is_safe_to_repeat() {
    let view = view_of(&["a", "b"]);
    let (stack, attempts) = retried_stack(&view, Attempt::Lost);
    let error = stack.oneshot(request(info(false))).await.unwrap_err();
    assert_eq!(attempts.lock().unwrap().len(), 1);
    assert_eq!(error.attempt(), Some(Attempt::Lost));

    let (stack, attempts) = retried_stack(&view, Attempt::Lost);
    stack.oneshot(request(info(true))).await.unwrap_err();
    assert_eq!(
        attempts.lock().unwrap().len(),
        2,
        "idempotent: the other node too"
    );
}

#[tokio::test]
async fn retry_never_repeats_a_services_own_answer_or_a_call_past_its_deadline() {
    let view = view_of(&["a", "b"]);
    let (stack, attempts) = retried_stack(&view, Attempt::Answered);
    stack.oneshot(request(info(true))).await.unwrap_err();
    assert_eq!(attempts.lock().unwrap().len(), 1);

    let (stack, attempts) = retried_stack(&view, Attempt::NotSent);
    let past = CallInfo {
        deadline: Some(Instant::now()),
        ..info(true)
    };
    stack.oneshot(request(past)).await.unwrap_err();
    assert_eq!(attempts.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn retry_of_calls_that_may_have_run_stops_when_the_budget_is_spent() {
    let view = view_of(&["a", "b"]);
    let policy = RetryPolicy::new(
        Budget::new(0.0),
        RetryMetrics {
            retries: "test_retries",
            budget_exhausted: "test_budget_exhausted",
        },
    );
    let attempts = Arc::default();
    let mut stack = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(BalanceLayer::new(view.clone()))
        .service(failing(Attempt::Lost, Arc::clone(&attempts)));
    // With no share of calls to spend, only the budget's floor of retries is there.
    let calls = 200;
    for _ in 0..calls {
        let _ = stack.ready().await.unwrap().call(request(info(true))).await;
    }
    let retries = attempts.lock().unwrap().len() - calls;
    assert!(retries > 0, "the floor allows some retries");
    assert!(
        retries < calls / 2,
        "{retries} retries of {calls} calls with a 0% budget"
    );
}

#[tokio::test]
async fn balance_fails_at_once_with_no_node_and_skips_nodes_that_do_not_serve_the_call() {
    let empty = view_of(&[]);
    let (stack, _) = retried_stack(&empty, Attempt::Answered);
    let error = stack.oneshot(request(info(true))).await.unwrap_err();
    assert!(matches!(error, CallError::NoNode { .. }), "{error}");
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert!(error.to_string().contains("\"user\""), "{error}");

    let view = view_of(&["a"]);
    // A node of the same registry service that serves another API only.
    let mut other = Instance::new("user", "127.0.0.1:9").with_id("z");
    other
        .metadata
        .insert(GRPC_SERVICES.into(), "admin.v1.Admin".into());
    view.apply_for_tests(Change::Joined(other));
    let (stack, attempts) = retried_stack(&view, Attempt::NotSent);
    stack.oneshot(request(info(true))).await.unwrap_err();
    assert_eq!(*attempts.lock().unwrap(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_ends_a_hung_attempt_as_timed_out_and_tells_the_node_the_deadline() {
    let view = view_of(&["a"]);
    let (mock, mut handle) = tower_test::mock::pair::<CallRequest, CallResponse>();
    let below = mock.map_err(|_| CallError::Misassembled("the mock failed"));
    let mut timeout = AttemptTimeoutLayer.layer(below);
    let call = CallInfo {
        attempt_timeout: Some(Duration::from_millis(100)),
        ..info(true)
    };
    let started = Instant::now();
    let pending = tokio::spawn(
        timeout
            .ready()
            .await
            .unwrap()
            .call(picked(&view, "a", call)),
    );
    let (sent, _reply) = handle
        .next_request()
        .await
        .expect("the attempt reached the node");
    let told = sent.headers()["grpc-timeout"].to_str().unwrap().to_owned();
    assert_eq!(
        told, "30000m",
        "the node is told the call's deadline, not the attempt's"
    );
    let error = pending.await.unwrap().unwrap_err();
    assert_eq!(error.attempt(), Some(Attempt::TimedOut));
    assert_eq!(error.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_sends_nothing_when_no_time_is_left() {
    let view = view_of(&["a"]);
    let (mock, mut handle) = tower_test::mock::pair::<CallRequest, CallResponse>();
    let below = mock.map_err(|_| CallError::Misassembled("the mock failed"));
    let mut timeout = AttemptTimeoutLayer.layer(below);
    let past = CallInfo {
        deadline: Some(Instant::now()),
        ..info(true)
    };
    let error = timeout
        .ready()
        .await
        .unwrap()
        .call(picked(&view, "a", past))
        .await
        .unwrap_err();
    assert_eq!(error.attempt(), Some(Attempt::TimedOut));
    assert!(
        nothing_reached(&mut handle),
        "an attempt with no time left reached the node"
    );
}

/// Whether no request reached the mock.
fn nothing_reached(handle: &mut tower_test::mock::Handle<CallRequest, CallResponse>) -> bool {
    use futures::FutureExt;
    handle.next_request().now_or_never().is_none()
}

#[tokio::test]
async fn record_counts_an_attempt_in_flight_until_its_reply_and_sets_a_failing_node_aside() {
    let view = view_of(&["a"]);
    let node = view.nodes_of("user")[0].clone();
    let (mock, mut handle) = tower_test::mock::pair::<CallRequest, CallResponse>();
    let below = mock.map_err(|e| {
        let attempt = if e.to_string() == "lost" {
            Attempt::Lost
        } else {
            Attempt::Answered
        };
        CallError::Attempt {
            attempt,
            node: view_of(&["x"]).nodes_of("user")[0].clone(),
            source: e,
        }
    });
    let mut record = RecordLayer::new(view.clone()).layer(below);
    let pending = tokio::spawn(
        record
            .ready()
            .await
            .unwrap()
            .call(picked(&view, "a", info(true))),
    );
    let (_, reply) = handle.next_request().await.expect("the attempt");
    assert_eq!(node.stats.in_flight.load(Ordering::Relaxed), 1);
    reply.send_response(ok());
    pending.await.unwrap().expect("the reply");
    assert_eq!(
        node.stats.in_flight.load(Ordering::Relaxed),
        0,
        "counted until the reply's head"
    );

    // Three transport failures in a row set the node aside (the test view's setting).
    for _ in 0..3 {
        let pending = tokio::spawn(record.ready().await.unwrap().call(picked(
            &view,
            "a",
            info(true),
        )));
        let (_, reply) = handle.next_request().await.expect("the attempt");
        reply.send_error("lost");
        pending.await.unwrap().unwrap_err();
    }
    assert!(view.is_ejected(&node));
}

/// A view of `user` nodes, each `(id, version)`.
fn view_of_versions(nodes: &[(&str, &str)]) -> ClusterView {
    let view = ClusterView::for_tests(ViewOptions::for_tests());
    for (id, version) in nodes {
        let mut instance = Instance::new("user", "127.0.0.1:9").with_id(*id);
        instance.version = (*version).to_owned();
        instance
            .metadata
            .insert(GRPC_SERVICES.into(), "user.v1.UserService".into());
        view.apply_for_tests(Change::Joined(instance));
    }
    view
}

fn steered_to(version: &str, fallback: bool) -> CallInfo {
    CallInfo {
        steer: Some(crate::traffic::Steer {
            subset: Arc::new(crate::traffic::Subset {
                version: Some(version.to_owned()),
                ..Default::default()
            }),
            fallback,
        }),
        ..info(true)
    }
}

#[tokio::test]
async fn a_steered_call_goes_only_to_its_subset_and_retries_within_it_before_the_rest() {
    let view = view_of_versions(&[("old-1", "1.2.0"), ("old-2", "1.2.0"), ("new-1", "1.3.0")]);
    // Every attempt fails in transit: the retries show the order of the nodes tried.
    let (stack, attempts) = retried_stack(&view, Attempt::NotSent);
    let _ = stack.oneshot(request(steered_to("1.3.0", true))).await;
    let tried = attempts.lock().unwrap().clone();
    assert_eq!(
        tried.first().map(String::as_str),
        Some("new-1"),
        "{tried:?}"
    );
    assert_eq!(
        tried.len(),
        3,
        "then the rest, as the rule falls back: {tried:?}"
    );

    // Without fallback the subset is all the call may have.
    let (stack, attempts) = retried_stack(&view, Attempt::NotSent);
    let error = stack
        .oneshot(request(steered_to("1.3.0", false)))
        .await
        .unwrap_err();
    assert_eq!(*attempts.lock().unwrap(), ["new-1"]);
    assert!(matches!(error, CallError::NoneLeft { .. }), "{error}");
}

#[tokio::test]
async fn a_subset_with_no_node_falls_back_to_the_rest_or_says_so() {
    let view = view_of_versions(&[("old-1", "1.2.0")]);
    let (stack, attempts) = retried_stack(&view, Attempt::NotSent);
    let _ = stack.oneshot(request(steered_to("9.9.9", true))).await;
    assert_eq!(*attempts.lock().unwrap(), ["old-1"]);

    let (stack, attempts) = retried_stack(&view, Attempt::NotSent);
    let error = stack
        .oneshot(request(steered_to("9.9.9", false)))
        .await
        .unwrap_err();
    assert!(attempts.lock().unwrap().is_empty());
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert!(error.to_string().contains("version 9.9.9"), "{error}");
}
