//! What an operator sees of a running cluster: metrics that Prometheus's own parser reads
//! and that count every call, one trace from a caller through the gateway, order and
//! user, the access log, the admin port's readiness during a drain, its token, and
//! `gateway nodes`.

use std::time::Duration;

use serde_json::{Value, json};
use telemetry::collector::Collector;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::metrics::{promtool_check, sum};
use tests::process::{Node, run_to_end};
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

fn node(binary: &str, label: &str, etcd: &Etcd, more: &[(&str, &str)]) -> Node {
    Node::on_etcd(binary, label, &etcd.etcd_addr(), more)
}

async fn get_text(client: &HttpClient, url: &str) -> String {
    let reply = client.get(url).await.expect("a reply");
    assert_eq!(reply.status, 200, "{url}: {}", reply.text);
    reply.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn metrics_parse_with_promtool_and_count_every_call_at_the_gateway_and_the_node() {
    let etcd = require!(Etcd::start().await);
    let user = node("user", "user", &etcd, &[]);
    let gateway = node("gateway", "gateway", &etcd, &[]);
    let (http, user_admin, gateway_admin) = (
        gateway.listening("http").await,
        user.listening("admin").await,
        gateway.listening("admin").await,
    );
    let client = HttpClient::default();
    let exists = format!("http://{http}/api/user/Exists");
    let bob = json!({ "username": "bob" });
    client.post_until(&exists, &bob, 200, PATIENCE).await;

    let gateway_metrics = format!("http://{gateway_admin}/metrics");
    let user_metrics = format!("http://{user_admin}/metrics");
    let api_exists = [
        ("door", "api"),
        ("service", "user"),
        ("method", "Exists"),
        ("grpc_code", "OK"),
        ("http_status", "200"),
    ];
    let served_exists = [
        ("method", "/user.v1.UserService/Exists"),
        ("grpc_code", "OK"),
    ];
    let before = get_text(&client, &gateway_metrics).await;
    let served_before = get_text(&client, &user_metrics).await;

    const CALLS: usize = 20;
    const INVENTED: usize = 3;
    for _ in 0..CALLS {
        let reply = client.post(&exists, &bob).await.expect("a reply");
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    for n in 0..INVENTED {
        let url = format!("http://{http}/api/user/Invented{n}");
        let reply = client.post(&url, &bob).await.expect("a reply");
        assert_eq!(reply.status, 404, "{}", reply.text);
    }
    // A method the service has, refused for how it was called, is still a call of it.
    let register = format!("http://{http}/api/user/Register");
    let refused = client.get(&register).await.expect("a reply");
    assert_eq!(refused.status, 405, "{}", refused.text);

    let after = get_text(&client, &gateway_metrics).await;
    let served_after = get_text(&client, &user_metrics).await;
    for (text, whose) in [(&after, "gateway"), (&served_after, "user")] {
        if let Err(problems) = promtool_check(text) {
            panic!("promtool rejects the {whose}'s /metrics:\n{problems}\n{text}");
        }
    }
    let moved = |name: &str, labels: &[(&str, &str)], before: &str, after: &str| {
        sum(after, name, labels) - sum(before, name, labels)
    };
    assert_eq!(
        moved(
            "rustms_gateway_requests_total",
            &api_exists,
            &before,
            &after
        ),
        CALLS as f64,
        "{after}"
    );
    let latency = &api_exists[..3];
    assert_eq!(
        moved(
            "rustms_gateway_request_duration_seconds_count",
            latency,
            &before,
            &after
        ),
        CALLS as f64
    );
    assert_eq!(
        moved(
            "rustms_server_requests_total",
            &served_exists,
            &served_before,
            &served_after
        ),
        CALLS as f64,
        "{served_after}"
    );
    // Made-up methods count under one label, not one series each.
    assert_eq!(
        moved(
            "rustms_gateway_requests_total",
            &[
                ("service", "user"),
                ("method", "unknown"),
                ("grpc_code", "NOT_FOUND")
            ],
            &before,
            &after
        ),
        INVENTED as f64
    );
    assert!(!after.contains("Invented"), "{after}");
    assert_eq!(
        moved(
            "rustms_gateway_requests_total",
            &[
                ("service", "user"),
                ("method", "Register"),
                ("http_status", "405")
            ],
            &before,
            &after
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        sum(&after, "rustms_gateway_nodes", &[("service", "user")]),
        1.0
    );
    assert_eq!(sum(&after, "rustms_gateway_requests_in_flight", &[]), 0.0);
    assert!(sum(&after, "rustms_registry_events_total", &[("event", "join")]) >= 1.0);

    // The access log: one line per call, with its request id and the node that answered.
    let lines = gateway.lines();
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("access") && l.contains("path=/api/user/Exists"))
        .collect();
    assert!(access.len() > CALLS, "{access:?}");
    let last = access.last().expect("an access line");
    for field in [
        "status=200",
        "grpc_code=\"OK\"",
        "request_id=",
        "duration_ms=",
    ] {
        assert!(last.contains(field), "{field} missing from {last}");
    }
    let user_rpc = user.listening("rpc").await;
    assert!(last.contains(&user_rpc), "{last}");

    // `gateway nodes`: the registry as a table, and as JSON for scripts.
    let etcd_addr = etcd.etcd_addr();
    let table = run_to_end(
        "gateway",
        &["nodes", "--etcd-addr", &etcd_addr],
        &[],
        PATIENCE,
    )
    .await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.starts_with("SERVICE"), "{}", table.stdout);
    assert!(table.stdout.contains(&user_rpc), "{}", table.stdout);
    assert!(
        table.stdout.contains("2 node(s) of 2 service(s)"),
        "{}",
        table.stdout
    );
    let listed = run_to_end(
        "gateway",
        &["nodes", "--json", "--etcd-addr", &etcd_addr],
        &[],
        PATIENCE,
    )
    .await;
    let nodes: Vec<Value> = serde_json::from_str(&listed.stdout).expect("JSON nodes");
    let services: Vec<&str> = nodes.iter().filter_map(|n| n["service"].as_str()).collect();
    assert_eq!(services, ["gateway", "user"], "{}", listed.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn one_trace_runs_from_the_caller_through_the_gateway_order_and_user() {
    let etcd = require!(Etcd::start().await);
    let collector = Collector::start().await.expect("a collector on loopback");
    let traced = [
        ("MS_TELEMETRY__OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("MS_LOG__FORMAT", "json"),
    ];
    let user = node("user", "user", &etcd, &traced);
    let order = node("order", "order", &etcd, &traced);
    let gateway = node("gateway", "gateway", &etcd, &traced);
    let http = gateway.listening("http").await;
    let (_, _) = (user.listening("rpc").await, order.listening("rpc").await);
    let client = HttpClient::default();
    client
        .post_until(
            &format!("http://{http}/api/user/Register"),
            &json!({ "username": "ada", "password": "correct horse" }),
            200,
            PATIENCE,
        )
        .await;
    client
        .post_until(
            &format!("http://{http}/api/order/Create"),
            &json!({ "username": "ada", "item": "warm-up" }),
            200,
            PATIENCE,
        )
        .await;

    // The caller's own trace: the gateway continues it, it does not start another.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let reply = client
        .send(
            "POST",
            &format!("http://{http}/api/order/Create"),
            &[("traceparent", &format!("00-{trace_id}-{caller_span}-01"))],
            json!({ "username": "ada", "item": "tea" })
                .to_string()
                .into(),
        )
        .await
        .expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Each node sends its spans in batches of its own: wait for all four hops.
    let wanted = [
        ("gateway", "/api/order/Create"),
        ("gateway", "attempt"),
        ("order", "/order.v1.OrderService/Create"),
        ("order", "attempt"),
        ("user", "/user.v1.UserService/Exists"),
    ];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let spans = loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let has = |(service, name): &(&str, &str)| {
            spans
                .iter()
                .any(|s| s.service == *service && s.name == *name)
        };
        if wanted.iter().all(has) {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {trace_id} lacks some of {wanted:?}: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {service} span {name:?} in {spans:#?}"))
    };
    let call = find("gateway", "/api/order/Create");
    let attempt = find("gateway", "attempt");
    let order_served = find("order", "/order.v1.OrderService/Create");
    let order_attempt = find("order", "attempt");
    let user_served = find("user", "/user.v1.UserService/Exists");
    assert_eq!(
        call.parent_span_id, caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(attempt.parent_span_id, call.span_id);
    assert_eq!(order_served.parent_span_id, attempt.span_id);
    // order's call to user (its service client) is an attempt of its own.
    assert_eq!(order_attempt.parent_span_id, order_served.span_id);
    assert_eq!(user_served.parent_span_id, order_attempt.span_id);

    // The gateway's access log line names the same trace, in JSON.
    let line = gateway
        .wait_for(&format!("\"trace_id\":\"{trace_id}\""), PATIENCE)
        .await;
    let json_start = line.find('{').expect("a JSON line");
    let access: Value = serde_json::from_str(&line[json_start..]).expect("JSON");
    assert_eq!(access["path"], "/api/order/Create", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["grpc_code"], "OK", "{access}");
    assert!(
        access["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_gateway_that_exports_no_spans_passes_the_callers_trace_on_through_both_doors() {
    use services::proto::user::v1::ExistsRequest;
    use services::proto::user::v1::user_service_client::UserServiceClient;

    let etcd = require!(Etcd::start().await);
    let collector = Collector::start().await.expect("a collector on loopback");
    let user = node(
        "user",
        "user",
        &etcd,
        &[("MS_TELEMETRY__OTLP_ENDPOINT", collector.endpoint.as_str())],
    );
    let gateway = node("gateway", "gateway", &etcd, &[]);
    let (http, rpc) = (
        gateway.listening("http").await,
        gateway.listening("rpc").await,
    );
    let _ = user.listening("rpc").await;
    let client = HttpClient::default();
    let exists = format!("http://{http}/api/user/Exists");
    client
        .post_until(&exists, &json!({ "username": "nobody" }), 200, PATIENCE)
        .await;

    let (api_trace, rpc_trace) = (
        "0af7651916cd43dd8448eb211c80319c",
        "5b8efff798038103d269b633813fc60c",
    );
    let caller_span = "b7ad6b7169203331";
    let reply = client
        .send(
            "POST",
            &exists,
            &[("traceparent", &format!("00-{api_trace}-{caller_span}-01"))],
            json!({ "username": "nobody" }).to_string().into(),
        )
        .await
        .expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let channel = tests::grpc::channel(&rpc).await;
    let mut request = tonic::Request::new(ExistsRequest {
        username: "nobody".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{rpc_trace}-{caller_span}-01")
            .parse()
            .expect("an ASCII value"),
    );
    UserServiceClient::new(channel)
        .exists(request)
        .await
        .expect("Exists through the rpc port");

    // The node's server span is the caller's child: nothing in between was exported, and
    // the caller's context arrived as it was sent.
    for trace_id in [api_trace, rpc_trace] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let served = loop {
            let found = collector
                .spans()
                .into_iter()
                .find(|s| s.trace_id == trace_id);
            if let Some(span) = found {
                break span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span of trace {trace_id} arrived: {:#?}",
                collector.spans()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(served.service, "user", "{served:?}");
        assert_eq!(served.name, "/user.v1.UserService/Exists", "{served:?}");
        assert_eq!(served.parent_span_id, caller_span, "{served:?}");
    }
    assert!(
        collector.spans().iter().all(|s| s.service == "user"),
        "the gateway exported spans: {:#?}",
        collector.spans()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn readyz_says_not_ready_while_the_gateway_drains_and_the_admin_port_shows_no_secret() {
    use tests::probe::proto::Note;
    use tests::probe::proto::probe_service_client::ProbeServiceClient;

    let etcd = require!(Etcd::start().await);
    let registry: std::sync::Arc<dyn registry::Registry> =
        std::sync::Arc::new(etcd.registry("go-ms").await);
    let _probe = tests::probe::start(registry, None).await;
    let gateway = node(
        "gateway",
        "gateway",
        &etcd,
        &[("MS_SHUTDOWN_GRACE", "30s"), ("MS_ADMIN__TOKEN", "t0ken")],
    );
    let (http, rpc, admin) = (
        gateway.listening("http").await,
        gateway.listening("rpc").await,
        gateway.listening("admin").await,
    );
    let client = HttpClient::default();
    client
        .post_until(
            &format!("http://{http}/api/probe/Echo"),
            &json!({ "text": "up" }),
            200,
            PATIENCE,
        )
        .await;
    // Ready once registered and listed: /api may answer a moment before that.
    let readyz = format!("http://{admin}/readyz");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ready = client.get(&readyz).await.expect("a reply");
        if ready.status == 200 {
            assert_eq!(ready.body["ready"], true, "{}", ready.text);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", ready.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The token guards what the admin port tells, not the probes of liveness.
    let metrics = format!("http://{admin}/metrics");
    assert_eq!(client.get(&metrics).await.unwrap().status, 401);
    let authorized = client
        .send(
            "GET",
            &metrics,
            &[("authorization", "Bearer t0ken")],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(authorized.status, 200, "{}", authorized.text);
    assert_eq!(
        client
            .get(&format!("http://{admin}/healthz"))
            .await
            .unwrap()
            .status,
        200
    );
    // What the admin port shows holds no secret of the configuration.
    for view in ["/admin", "/admin/cluster", "/admin/routes"] {
        let shown = client
            .send(
                "GET",
                &format!("http://{admin}{view}"),
                &[("authorization", "Bearer t0ken")],
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(shown.status, 200, "{view}: {}", shown.text);
        assert!(
            !shown.text.contains("do-not-show"),
            "{view}: {}",
            shown.text
        );
        assert!(!shown.text.contains("t0ken"), "{view}: {}", shown.text);
    }

    // A stream held open through the gateway keeps it draining after SIGTERM.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{rpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the rpc port");
    let mut probes = ProbeServiceClient::new(channel);
    let (notes, outgoing) = tokio::sync::mpsc::channel(1);
    let mut replies = probes
        .chat(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("Chat through the gateway")
        .into_inner();
    let note = |text: &str| Note { text: text.into() };
    notes.send(note("before")).await.expect("open");
    replies
        .message()
        .await
        .expect("a reply")
        .expect("a message");

    gateway.sigterm().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let draining = loop {
        let reply = client
            .get(&readyz)
            .await
            .expect("the admin port still answers");
        if reply.status == 503 {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(draining.body["ready"], false, "{}", draining.text);
    assert!(draining.text.contains("shutting down"), "{}", draining.text);
    // Not ready, yet the call in flight goes on.
    notes.send(note("during")).await.expect("still open");
    let reply = replies
        .message()
        .await
        .expect("a reply while draining")
        .expect("a message");
    assert_eq!(reply.text, "re: during");
    drop(notes);
    drop(replies);
    let mut gateway = gateway;
    assert_eq!(gateway.exit_code(PATIENCE).await, Some(0));
}
