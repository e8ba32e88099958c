//! The service client's door, on fake nodes over loopback: each layer of the stack is
//! there (retry of a call that never left, the per-attempt timeout, the retry budget).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::testing::{
    Behaviour, CHANGE, ECHO, FakeNode, LOOK, Word, beside_an_answering_node, plain_view,
    unreachable,
};
use crate::view::{ClusterView, ViewMetrics, ViewOptions};
use crate::{ClientOptions, ServiceChannel};

fn view_of(instances: impl IntoIterator<Item = registry::Instance>) -> ClusterView {
    plain_view(instances, ViewMetrics::CLIENT)
}

fn client(view: ClusterView, timeout: Duration, budget_percent: f32) -> ServiceChannel {
    ServiceChannel::over(
        view,
        "echo",
        &options(timeout, budget_percent),
        CancellationToken::new(),
    )
}

fn options(timeout: Duration, budget_percent: f32) -> ClientOptions {
    ClientOptions {
        timeout,
        retry_budget_percent: budget_percent,
        view: ViewOptions::for_tests(),
        tracer: None,
        described: None,
        traffic: None,
        load_shedding: true,
    }
}

async fn call(channel: &ServiceChannel, method: &str) -> Result<Word, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = format!("/{ECHO}/{method}")
        .parse()
        .map_err(|_| tonic::Status::internal("path"))?;
    let word = Word {
        text: "hello".into(),
    };
    grpc.unary(
        tonic::Request::new(word),
        path,
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn the_client_sends_a_call_that_never_left_to_another_node_even_when_not_idempotent() {
    let answering = FakeNode::start("echo", "up", Behaviour::Answer)
        .await
        .unwrap();
    let dead = unreachable("echo", "dead").await.unwrap();
    let view = view_of([dead, answering.instance.clone()]);
    let channel = client(view.clone(), Duration::from_secs(10), 20.0);
    for n in 0..20 {
        let word = call(&channel, CHANGE)
            .await
            .unwrap_or_else(|status| panic!("call {n}: {status:?}"));
        assert_eq!(word.text, "hello");
    }
    assert_eq!(answering.calls(), 20, "each call ran once");
    let dead_node = view
        .nodes_of("echo")
        .iter()
        .find(|n| n.instance.id == "dead")
        .cloned()
        .unwrap();
    assert!(
        dead_node
            .stats
            .consecutive_failures
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "the unreachable node was tried (and each such call went on to the other)"
    );
}

#[tokio::test]
async fn the_client_ends_an_attempt_on_a_hung_node_and_retries_a_call_safe_to_repeat() {
    let (hung, answering) = beside_an_answering_node("echo", Behaviour::Hang)
        .await
        .unwrap();
    let timeout = Duration::from_secs(6);
    let channel = client(
        view_of([hung.instance.clone(), answering.instance.clone()]),
        timeout,
        20.0,
    );
    // The balancer picks by chance between nodes it knows nothing of: call until the hung
    // node has had its attempt (bounded), each call answered within its deadline.
    for n in 0..40 {
        let started = tokio::time::Instant::now();
        call(&channel, LOOK)
            .await
            .unwrap_or_else(|status| panic!("call {n}: {status:?}"));
        assert!(
            started.elapsed() < timeout,
            "an attempt on the hung node ends at a third of the deadline"
        );
        if hung.calls() > 0 && n >= 5 {
            break;
        }
    }
    assert!(hung.calls() > 0, "the hung node was tried");

    // Not safe to repeat, on the hung node alone: the deadline ends it.
    let alone = client(
        view_of([hung.instance.clone()]),
        Duration::from_millis(300),
        20.0,
    );
    let status = call(&alone, CHANGE).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn the_client_stops_retrying_calls_that_may_have_run_once_its_budget_is_spent() {
    let (breaking, answering) = beside_an_answering_node("echo", Behaviour::Break)
        .await
        .unwrap();
    // 0 %: only the floor of ten retries a second (a hundred in reserve) is left.
    let channel = client(
        view_of([breaking.instance.clone(), answering.instance.clone()]),
        Duration::from_secs(10),
        0.0,
    );
    let mut refused = None;
    for _ in 0..3_000 {
        if let Err(status) = call(&channel, LOOK).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("with the budget spent, a call that broke is not retried");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        breaking.calls() > 100,
        "the reserve was spent first: {}",
        breaking.calls()
    );
}

#[tokio::test]
async fn the_client_takes_a_methods_safety_from_what_the_caller_compiled_in_over_reflection() {
    use prost_reflect::prost_types::method_options::IdempotencyLevel;

    // The node's reflection says Change may not be repeated; the caller's compiled-in
    // descriptors say it may: the caller's word is taken.
    let mut compiled_in = crate::testing::echo_descriptors();
    for method in &mut compiled_in.file[0].service[0].method {
        if let Some(options) = method.options.as_mut() {
            options.idempotency_level = Some(IdempotencyLevel::Idempotent as i32);
        }
    }
    let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(compiled_in).unwrap();
    let (hung, answering) = beside_an_answering_node("echo", Behaviour::Hang)
        .await
        .unwrap();
    let timeout = Duration::from_secs(6);
    let channel = ServiceChannel::over(
        view_of([hung.instance.clone(), answering.instance.clone()]),
        "echo",
        &options(timeout, 20.0).described_by(Some(std::sync::Arc::new(pool))),
        CancellationToken::new(),
    );
    for n in 0..40 {
        call(&channel, CHANGE)
            .await
            .unwrap_or_else(|status| panic!("call {n}: {status:?}"));
        if hung.calls() > 0 && n >= 5 {
            break;
        }
    }
    assert!(
        hung.calls() > 0,
        "the hung node was tried, and its attempt ended"
    );
}

#[tokio::test]
async fn a_client_call_past_its_methods_concurrency_limit_fails_at_once_and_never_reaches_a_node() {
    let hung = FakeNode::start("echo", "hung", Behaviour::Hang)
        .await
        .unwrap();
    let channel = compiled_in_client(&hung, options(Duration::from_secs(60), 20.0));
    // The limit starts at its highest: that many calls are let through and hang.
    let hanging: Vec<_> = (0..crate::shed::MAX_LIMIT)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move { call(&channel, LOOK).await })
        })
        .collect();
    // Let them reach the limit first (a call of ours admitted before them would hang
    // until its timeout below, and the next one is refused).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ours_let_through = 0;
    loop {
        let status = tokio::time::timeout(Duration::from_secs(5), call(&channel, LOOK)).await;
        ours_let_through += usize::from(status.is_err());
        if let Ok(Err(status)) = status
            && status.code() == Code::Unavailable
            && status.message().contains("overloaded")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a call past the limit was not refused"
        );
    }
    // Refused at once, again and again.
    for _ in 0..10 {
        let started = tokio::time::Instant::now();
        let status = call(&channel, LOOK).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // The node saw the calls let through, never a refused one.
    assert!(hung.calls() <= crate::shed::MAX_LIMIT + ours_let_through);
    for call in hanging {
        call.abort();
    }
}

#[tokio::test]
async fn a_client_with_load_shedding_off_lets_every_call_wait() {
    let hung = FakeNode::start("echo", "hung", Behaviour::Hang)
        .await
        .unwrap();
    let options = ClientOptions {
        load_shedding: false,
        ..options(Duration::from_secs(60), 20.0)
    };
    let channel = compiled_in_client(&hung, options);
    let hanging: Vec<_> = (0..crate::shed::MAX_LIMIT + 10)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move { call(&channel, LOOK).await })
        })
        .collect();
    // Past what the limit would have let through, a call still waits for its answer.
    let waited = tokio::time::timeout(Duration::from_secs(2), call(&channel, LOOK)).await;
    assert!(waited.is_err(), "{waited:?}");
    for call in hanging {
        call.abort();
    }
}

/// A client of `node` alone that knows the echo service from compiled-in descriptors, so
/// that its calls reach the stack without asking the (hung) node by reflection.
fn compiled_in_client(node: &FakeNode, options: ClientOptions) -> ServiceChannel {
    let pool =
        prost_reflect::DescriptorPool::from_file_descriptor_set(crate::testing::echo_descriptors())
            .unwrap();
    ServiceChannel::over(
        view_of([node.instance.clone()]),
        "echo",
        &options.described_by(Some(std::sync::Arc::new(pool))),
        CancellationToken::new(),
    )
}
