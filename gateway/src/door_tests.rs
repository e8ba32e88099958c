//! The gateway's two doors, `/api` and the rpc port, on fake nodes over loopback: each
//! layer of the call stack is there (retry of an attempt that never left, the breaker,
//! the per-attempt timeout, the retry budget).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use cluster::ViewMetrics;
use cluster::testing::{
    Behaviour, CHANGE, ECHO, FakeNode, LOOK, Word, beside_an_answering_node, plain_view,
    unreachable,
};
use http_body_util::BodyExt;
use prost::Message;
use registry::Instance;
use tonic::Code;

use crate::live_routes::LiveRoutes;
use crate::resilience::BreakerConfig;
use crate::settings::{Balance, GatewaySection, Route, RouteTable};
use crate::state::Gateway;

/// A gateway over `instances` of `echo` (no health checks, nothing set aside: what a
/// test sends is what each node gets), with `route` for `echo`.
fn gateway(instances: Vec<Instance>, route: Route, budget_percent: f32) -> Arc<Gateway> {
    let settings = GatewaySection {
        retry_budget_percent: budget_percent,
        ..GatewaySection::default()
    };
    gateway_with(instances, route, settings)
}

fn gateway_with(instances: Vec<Instance>, route: Route, settings: GatewaySection) -> Arc<Gateway> {
    let view = plain_view(instances, ViewMetrics::GATEWAY);
    let routes = LiveRoutes::new(
        RouteTable::from([("echo".to_owned(), route)]),
        cluster::traffic::LiveTraffic::default(),
    );
    Arc::new(Gateway::new(view, routes, settings, None))
}

fn round_robin() -> Route {
    Route {
        balance: Balance::RoundRobin,
        ..Route::default()
    }
}

/// How a door answered: the gRPC code, and the body (JSON on `/api`).
struct Answer {
    code: Code,
    text: String,
}

async fn read(response: Response) -> Answer {
    let (parts, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(error) => {
            return Answer {
                code: Code::Unknown,
                text: error.to_string(),
            };
        }
    };
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    // The rpc port says why in `grpc-message`; `/api` in its JSON body.
    let grpc_message = trailers
        .as_ref()
        .and_then(tonic::Status::from_header_map)
        .or_else(|| tonic::Status::from_header_map(&parts.headers))
        .map(|status| status.message().to_owned())
        .filter(|message| !message.is_empty());
    let code = trailers
        .as_ref()
        .and_then(telemetry::grpc::status_of)
        .or_else(|| telemetry::grpc::status_of(&parts.headers));
    let code = match code {
        Some(code) => code,
        // `/api`: JSON; its `code` when it failed.
        None => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|json| json["code"].as_i64())
            .map(|code| Code::from(code as i32))
            .unwrap_or(Code::Ok),
    };
    Answer {
        code,
        text: grpc_message.unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
    }
}

async fn via_api(gateway: &Arc<Gateway>, method: &str) -> Answer {
    via_api_with(gateway, method, &[]).await
}

async fn via_api_with(gateway: &Arc<Gateway>, method: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = http::Request::post(format!("/api/echo/{method}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Body::from(r#"{"text":"hello"}"#))
        .expect("a request");
    let path = Path(("echo".to_owned(), method.to_owned()));
    read(crate::api::handle(State(gateway.clone()), path, request).await).await
}

async fn via_rpc(gateway: &Arc<Gateway>, method: &str, timeout: Option<&str>) -> Answer {
    let message = Word {
        text: "hello".into(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut request = http::Request::post(format!("/{ECHO}/{method}"))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let request = request.body(Body::from(framed)).expect("a request");
    read(crate::proxy::forward(State(gateway.clone()), request).await).await
}

#[derive(Clone, Copy, Debug)]
enum Door {
    Api,
    Rpc,
}

async fn call(door: Door, gateway: &Arc<Gateway>, method: &str) -> Answer {
    match door {
        Door::Api => via_api(gateway, method).await,
        Door::Rpc => via_rpc(gateway, method, None).await,
    }
}

#[tokio::test]
async fn both_doors_send_an_attempt_that_never_left_to_another_node() {
    for door in [Door::Api, Door::Rpc] {
        let answering = FakeNode::start("echo", "up", Behaviour::Answer)
            .await
            .unwrap();
        let dead = unreachable("echo", "dead").await.unwrap();
        // Round robin: every other call tries the unreachable node first.
        let gateway = gateway(vec![dead, answering.instance.clone()], round_robin(), 20.0);
        for n in 0..6 {
            let answer = call(door, &gateway, CHANGE).await;
            assert_eq!(answer.code, Code::Ok, "{door:?} call {n}: {}", answer.text);
        }
        assert_eq!(answering.calls(), 6, "{door:?}: each call ran once");
    }
}

#[tokio::test]
async fn both_doors_open_the_circuit_of_a_failing_service_and_stop_calling_it() {
    for door in [Door::Api, Door::Rpc] {
        let failing = FakeNode::start("echo", "down", Behaviour::Fail(Code::Unavailable))
            .await
            .unwrap();
        let route = Route {
            circuit_breaker: Some(BreakerConfig::for_tests(2)),
            ..Route::default()
        };
        let gateway = gateway(vec![failing.instance.clone()], route, 20.0);
        for _ in 0..2 {
            let answer = call(door, &gateway, CHANGE).await;
            assert_eq!(answer.code, Code::Unavailable, "{door:?}: {}", answer.text);
        }
        let refused = call(door, &gateway, CHANGE).await;
        assert_eq!(refused.code, Code::Unavailable, "{door:?}");
        assert!(
            refused.text.contains("circuit open"),
            "{door:?}: {}",
            refused.text
        );
        assert_eq!(
            failing.calls(),
            2,
            "{door:?}: the open circuit sent nothing"
        );
    }
}

#[tokio::test]
async fn the_api_door_ends_an_attempt_on_a_hung_node_and_retries_a_call_safe_to_repeat() {
    let (hung, answering) = beside_an_answering_node("echo", Behaviour::Hang)
        .await
        .unwrap();
    let route = Route {
        timeout: Duration::from_secs(6),
        ..round_robin()
    };
    let gateway = gateway(
        vec![hung.instance.clone(), answering.instance.clone()],
        route,
        20.0,
    );
    for n in 0..4 {
        let started = tokio::time::Instant::now();
        let answer = via_api(&gateway, LOOK).await;
        assert_eq!(answer.code, Code::Ok, "call {n}: {}", answer.text);
        assert!(answer.text.contains("hello"), "{}", answer.text);
        assert!(started.elapsed() < Duration::from_secs(6));
    }
    assert!(hung.calls() > 0, "the hung node was tried");
}

#[tokio::test]
async fn the_rpc_door_ends_a_call_on_a_hung_node_at_the_callers_deadline() {
    let hung = FakeNode::start("echo", "hung", Behaviour::Hang)
        .await
        .unwrap();
    let gateway = gateway(vec![hung.instance.clone()], Route::default(), 20.0);
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        via_rpc(&gateway, CHANGE, Some("300m")),
    )
    .await
    .expect("the gateway ends the call itself, at the caller's deadline");
    assert_eq!(answer.code, Code::DeadlineExceeded);
}

/// A node that breaks every stream beside one that answers, taken in turns, with a retry
/// budget of `budget_percent`.
async fn breaking_beside_answering(budget_percent: f32) -> (FakeNode, FakeNode, Arc<Gateway>) {
    let (breaking, answering) = beside_an_answering_node("echo", Behaviour::Break)
        .await
        .unwrap();
    let nodes = vec![breaking.instance.clone(), answering.instance.clone()];
    let gateway = gateway(nodes, round_robin(), budget_percent);
    (breaking, answering, gateway)
}

#[tokio::test]
async fn the_api_door_stops_retrying_calls_that_may_have_run_once_its_budget_is_spent() {
    // 0 %: only the floor of ten retries a second (a hundred in reserve) is left.
    let (breaking, _answering, gateway) = breaking_beside_answering(0.0).await;
    let mut refused = None;
    for _ in 0..3_000 {
        let answer = via_api(&gateway, LOOK).await;
        if answer.code != Code::Ok {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("with the budget spent, a call that broke is not retried");
    assert_eq!(refused.code, Code::Unavailable, "{}", refused.text);
    assert!(breaking.calls() > 100, "{}", breaking.calls());
}

#[tokio::test]
async fn the_rpc_door_never_repeats_a_call_whose_stream_broke() {
    let (breaking, answering, gateway) = breaking_beside_answering(1000.0).await;
    for _ in 0..4 {
        let _ = via_rpc(&gateway, LOOK, None).await;
    }
    assert_eq!(
        breaking.calls() + answering.calls(),
        4,
        "a pass-through call that may have run goes to no second node"
    );
}

#[tokio::test]
async fn the_api_door_checks_the_token_and_passes_on_its_claims_but_never_the_token() {
    let node = FakeNode::start("echo", "up", Behaviour::Answer)
        .await
        .unwrap();
    let mut settings = GatewaySection::default();
    settings.jwt.hs256_secret = Some("s3cret".into());
    let route = Route {
        jwt: true,
        forward_claims: vec!["sub".into()],
        ..Route::default()
    };
    let gateway = gateway_with(vec![node.instance.clone()], route, settings);
    let refused = via_api(&gateway, LOOK).await;
    assert_eq!(refused.code, Code::Unauthenticated, "{}", refused.text);
    assert_eq!(node.calls(), 0);

    let exp = registry::unix_millis_now() / 1000 + 60;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "ada", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
    )
    .unwrap();
    let bearer = format!("Bearer {token}");
    let answer = via_api_with(&gateway, LOOK, &[("authorization", &bearer)]).await;
    assert_eq!(answer.code, Code::Ok, "{}", answer.text);
    let seen = node.last_headers();
    assert_eq!(seen["x-jwt-sub"], "ada");
    assert!(
        !seen.contains_key("authorization"),
        "the caller's token stays at the gateway: {seen:?}"
    );
}

/// A node of `echo` whose every call fails with `status`, details and all; it serves
/// until `stop` is cancelled.
async fn failing_with(
    status: tonic::Status,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<Instance> {
    #[derive(Clone)]
    struct FailsWith(tonic::Status);

    impl tonic::server::NamedService for FailsWith {
        const NAME: &'static str = ECHO;
    }

    impl tower::Service<http::Request<tonic::body::Body>> for FailsWith {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
            std::future::ready(Ok(self.0.clone().into_http()))
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(cluster::testing::echo_descriptors())
        .build_v1()
        .map_err(std::io::Error::other)?;
    let server = tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(FailsWith(status))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            stop.cancelled_owned(),
        );
    tokio::spawn(server);
    let mut instance = Instance::new("echo", address).with_id("details");
    instance
        .metadata
        .insert(cluster::meta::GRPC_SERVICES.into(), ECHO.into());
    Ok(instance)
}

#[tokio::test]
async fn a_services_status_details_reach_api_as_json_and_the_rpc_port_unchanged() {
    use tonic_types::{BadRequest, ErrorInfo, StatusExt};
    let sent = tonic::Status::with_error_details_vec(
        Code::InvalidArgument,
        "bad word",
        [
            ErrorInfo::new("WORD_EMPTY", "echo", [("word".to_owned(), String::new())]).into(),
            BadRequest::with_violation("text", "must not be empty").into(),
        ],
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let node = failing_with(sent.clone(), stop).await.unwrap();
    let gateway = gateway(vec![node], Route::default(), 20.0);

    let answer = via_api(&gateway, CHANGE).await;
    assert_eq!(answer.code, Code::InvalidArgument, "{}", answer.text);
    let body: serde_json::Value = serde_json::from_str(&answer.text).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "code": 3,
            "message": "bad word",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "WORD_EMPTY",
                    "domain": "echo",
                    "metadata": {"word": ""},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"field": "text", "description": "must not be empty", "reason": ""},
                    ],
                },
            ],
        })
    );

    // The rpc port passes the node's bytes on: the same details, byte for byte.
    let message = Word {
        text: "hello".into(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let request = http::Request::post(format!("/{ECHO}/{CHANGE}"))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::from(framed))
        .unwrap();
    let response = crate::proxy::forward(State(gateway.clone()), request).await;
    let (parts, body) = response.into_parts();
    let trailers = body.collect().await.unwrap().trailers().cloned();
    let passed = trailers
        .as_ref()
        .and_then(tonic::Status::from_header_map)
        .or_else(|| tonic::Status::from_header_map(&parts.headers))
        .expect("a status");
    assert_eq!(passed.code(), Code::InvalidArgument);
    assert_eq!(passed.details(), sent.details());
    let info = passed.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "WORD_EMPTY");
}

#[tokio::test]
async fn the_api_door_holds_each_api_keys_share_of_the_cluster_limit_and_says_what_is_left() {
    let node = FakeNode::start("echo", "up", Behaviour::Answer)
        .await
        .unwrap();
    let route = Route {
        rate_limit: Some(crate::rate_limit::RateLimit {
            per_second: 0.001,
            burst: 6.0,
            per: Some(crate::rate_limit::ClientKey::Header("x-api-key".into())),
        }),
        ..Route::default()
    };
    // Three gateways in the registry (this one among them): each holds a third.
    let gateways = (1..=3).map(|n| Instance::new("gateway", format!("127.0.0.1:{n}")));
    let instances = std::iter::once(node.instance.clone())
        .chain(gateways)
        .collect();
    let gateway = gateway_with(instances, route, GatewaySection::default());
    let call = async |key: &str| {
        let request = http::Request::post("/api/echo/Look")
            .header("content-type", "application/json")
            .header("x-api-key", key)
            .body(Body::from(r#"{"text":"hello"}"#))
            .expect("a request");
        let path = Path(("echo".to_owned(), LOOK.to_owned()));
        crate::api::handle(State(gateway.clone()), path, request).await
    };
    let header =
        |response: &Response, name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let first = call("alice").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "ratelimit-limit"), "6");
    assert_eq!(
        header(&first, "ratelimit-remaining"),
        "3",
        "one of two left here, ×3"
    );
    assert_eq!(call("alice").await.status(), 200);
    let refused = call("alice").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        call("bob").await.status(),
        200,
        "bob has a bucket of his own"
    );
    assert_eq!(node.calls(), 3, "the refused call reached no node");
}
