//! The gateway on the real binaries and a real etcd: JSON to gRPC by reflection, even
//! balancing, no failed call while nodes crash or restart, errors as grpc-gateway maps
//! them, routes changed through etcd, and native gRPC passed through the rpc port.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tests::etcd::Etcd;
use tests::grpc::channel as grpc_channel;
use tests::http::HttpClient;
use tests::process::{Node, run_to_end};
use tests::require;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);

/// A gateway config whose user route marks the reads idempotent.
fn gateway_config(tag: &str) -> PathBuf {
    gateway_config_with(
        tag,
        "[routes.user]\ntimeout = \"5s\"\nidempotent = [\"Exists\", \"Get\"]\n",
    )
}

/// A gateway config on loopback ports the OS picks, with `sections` after the top keys.
fn gateway_config_with(tag: &str, sections: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rust-ms-gw-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!("http_port = 0\nrpc_port = 0\nadvertise_host = \"127.0.0.1\"\n{sections}"),
    )
    .unwrap();
    path
}

struct Gateway {
    node: Node,
    http: String,
    rpc: String,
    /// The admin port: `/admin/cluster`, `/admin/routes`, `/metrics`.
    admin: String,
}

async fn start_gateway(etcd: &Etcd, n: usize, config: &Path) -> Gateway {
    let node = Node::start(
        "gateway",
        &format!("gateway-{n}"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--etcd-addr",
            &etcd.etcd_addr(),
        ],
        &[],
    );
    let http = node.listening("http").await;
    let rpc = node.listening("rpc").await;
    let admin = node.listening("admin").await;
    Gateway {
        node,
        http,
        rpc,
        admin,
    }
}

async fn start_user(etcd: &Etcd, n: usize) -> (Node, String) {
    let node = Node::start(
        "user",
        &format!("user-{n}"),
        &[
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd.etcd_addr(),
            "--advertise-host",
            "127.0.0.1",
        ],
        &[("MS_USER__TOKEN_SECRET", "gateway-test-secret")],
    );
    let address = node.listening("rpc").await;
    (node, address)
}

/// Waits until the gateway routes to exactly `addresses` for `service`.
async fn wait_for_nodes(
    client: &HttpClient,
    gateway: &Gateway,
    service: &str,
    addresses: &[String],
) {
    let mut wanted: Vec<String> = addresses.to_vec();
    wanted.sort();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(reply) = client
            .get(&format!("http://{}/admin/cluster", gateway.admin))
            .await
        {
            let mut seen: Vec<String> = reply.body["services"][service]["nodes"]
                .as_array()
                .map(|nodes| {
                    nodes
                        .iter()
                        .filter_map(|n| n["address"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            seen.sort();
            if seen == wanted {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gateway never saw {service} nodes {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `count` user nodes and one gateway (config `gateway_config(tag)`) that routes to them.
async fn users_behind_a_gateway(
    etcd: &Etcd,
    tag: &str,
    count: usize,
) -> (Vec<(Node, String)>, Gateway, HttpClient) {
    let config = gateway_config(tag);
    let mut users = Vec::new();
    for n in 1..=count {
        users.push(start_user(etcd, n).await);
    }
    let gateway = start_gateway(etcd, 1, &config).await;
    let client = HttpClient::default();
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
    wait_for_nodes(&client, &gateway, "user", &addresses).await;
    (users, gateway, client)
}

fn api(gateway: &Gateway, method: &str) -> String {
    format!("http://{}/api/user/{method}", gateway.http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn register_and_login_through_the_gateway_and_exists_calls_split_evenly() {
    let etcd = require!(Etcd::start().await);
    let (users, gateway, client) = users_behind_a_gateway(&etcd, "even", 3).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();

    let registered = client
        .post(
            &api(&gateway, "Register"),
            &json!({"username": "carol", "password": "carol-pass"}),
        )
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{}", registered.text);
    assert!(
        registered.body["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let login = client
        .post(
            &api(&gateway, "Login"),
            &json!({"username": "carol", "password": "carol-pass"}),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 200, "{}", login.text);
    assert!(
        login.body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3),
        "a JWT: {}",
        login.text
    );

    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..600 {
        let reply = client
            .post(&api(&gateway, "Exists"), &json!({"username": "carol"}))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["exists"], json!(true));
        *served
            .entry(reply.header("x-served-by").unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(served.len(), 3, "all three nodes served: {served:?}");
    // One call at a time leaves p2c nothing in flight to compare: each pick is a fair
    // draw, so a node's share is binomial (600, 1/3), mean 200, deviation 11.5. Five
    // deviations either way fail an even balancer once in millions of runs and still
    // catch one that gives a node half the calls, or a node a fifth of them.
    for address in &addresses {
        let count = served.get(address).copied().unwrap_or(0);
        assert!(
            (142..=258).contains(&count),
            "{address} served {count} of 600: {served:?}"
        );
    }
    eprintln!("measured: 600 Exists calls split {served:?}");
}

/// Sequential Exists calls until `limit` or `stop`, counted in `made` as they go; returns
/// (calls, failures as text).
async fn load(
    client: HttpClient,
    url: String,
    limit: usize,
    stop: tokio_util::sync::CancellationToken,
    made: Arc<AtomicUsize>,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut calls = 0;
    while calls < limit && !stop.is_cancelled() {
        calls += 1;
        made.store(calls, Ordering::SeqCst);
        match client.post(&url, &json!({"username": "dave"})).await {
            Ok(reply) if reply.status == 200 && reply.body["exists"] == json!(true) => {}
            Ok(reply) => failures.push(format!("call {calls}: {} {}", reply.status, reply.text)),
            Err(error) => failures.push(format!("call {calls}: {error}")),
        }
    }
    (calls, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn no_call_fails_while_a_node_is_killed_or_all_nodes_restart_one_by_one() {
    let etcd = require!(Etcd::start().await);
    let (mut users, gateway, client) = users_behind_a_gateway(&etcd, "zero", 3).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
    let registered = client
        .post(
            &api(&gateway, "Register"),
            &json!({"username": "dave", "password": "dave-pass"}),
        )
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{}", registered.text);

    // kill -9 in the middle of 2,000 sequential calls.
    let stop = tokio_util::sync::CancellationToken::new();
    let made = Arc::new(AtomicUsize::new(0));
    let running = tokio::spawn(load(
        client.clone(),
        api(&gateway, "Exists"),
        2_000,
        stop.clone(),
        made.clone(),
    ));
    while made.load(Ordering::SeqCst) < 500 && !running.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    users[0].0.sigkill().await;
    let made_before_the_kill = made.load(Ordering::SeqCst);
    assert!(
        made_before_the_kill < 2_000,
        "the load ended before the kill ({made_before_the_kill} calls)"
    );
    let (calls, failures) = running.await.unwrap();
    eprintln!(
        "measured: {calls} calls, {} failed, with a kill -9",
        failures.len()
    );
    assert_eq!(calls, 2_000);
    assert!(
        failures.is_empty(),
        "{} of {calls} failed after kill -9: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Rolling restart by SIGTERM of every node, under the same load.
    // Back to three nodes first: the one killed is replaced.
    let (_replacement_node, replacement) = start_user(&etcd, 4).await;
    let mut live = vec![addresses[1].clone(), addresses[2].clone(), replacement];
    wait_for_nodes(&client, &gateway, "user", &live).await;
    let running = tokio::spawn(load(
        client.clone(),
        api(&gateway, "Exists"),
        100_000,
        stop.clone(),
        Arc::default(),
    ));
    let mut fresh_nodes = Vec::new();
    for (round, old) in [1usize, 2].into_iter().enumerate() {
        users[old].0.sigterm().await;
        assert_eq!(
            users[old].0.exit_code(Duration::from_secs(30)).await,
            Some(0)
        );
        let (node, address) = start_user(&etcd, 5 + round).await;
        live[round] = address;
        fresh_nodes.push(node);
        wait_for_nodes(&client, &gateway, "user", &live).await;
    }
    stop.cancel();
    let (calls, failures) = running.await.unwrap();
    assert!(
        calls >= 10,
        "the load ran through the restarts ({calls} calls)"
    );
    eprintln!(
        "measured: {calls} calls, {} failed, through a rolling restart",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} failed during the rolling restart: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_node_that_refuses_connections_costs_no_call_on_api_or_the_rpc_port() {
    use services::proto::user::v1::ExistsRequest;
    use services::proto::user::v1::user_service_client::UserServiceClient;

    let etcd = require!(Etcd::start().await);
    // Active checks off, so that only the retry on another node can save the calls
    // the balancer gives to the dead node.
    let config = gateway_config_with("refused", "[gateway]\nhealth_interval = \"0s\"\n");
    let (_user, address) = start_user(&etcd, 1).await;
    let gateway = start_gateway(&etcd, 1, &config).await;
    // A user node that is registered but refuses every connection (nothing listens on
    // port 1 of loopback).
    let registry = etcd.registry("go-ms").await;
    let dead = registry::Instance::new("user", "127.0.0.1:1")
        .with_metadata("grpc.services", "user.v1.UserService");
    let _dead = registry::Registry::register(&registry, registry::Registration::new(dead))
        .await
        .unwrap();
    let client = HttpClient::default();
    wait_for_nodes(
        &client,
        &gateway,
        "user",
        &[address.clone(), "127.0.0.1:1".to_owned()],
    )
    .await;

    let channel = grpc_channel(&gateway.rpc).await;
    let mut users = UserServiceClient::new(channel);
    for n in 0..50 {
        let reply = users
            .exists(ExistsRequest {
                username: format!("nobody-{n}"),
            })
            .await
            .unwrap_or_else(|status| panic!("rpc port call {n} failed: {status:?}"));
        assert_eq!(
            reply
                .metadata()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok()),
            Some(address.as_str())
        );
        let reply = client
            .get(&format!("{}?username=nobody-{n}", api(&gateway, "Exists")))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "/api call {n}: {}", reply.text);
        assert_eq!(reply.header("x-served-by"), Some(address.as_str()));
    }
    assert_eq!(gateway.node.count("panicked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn bad_requests_get_grpc_gateway_statuses_and_a_json_error_body() {
    let etcd = require!(Etcd::start().await);
    let (users, gateway, client) = users_behind_a_gateway(&etcd, "errors", 1).await;
    let address = &users[0].1;

    let base = format!("http://{}/api", gateway.http);
    let cases: Vec<(&str, String, Bytes, u16, i64, &str)> = vec![
        (
            "POST",
            format!("{base}/nosuch/Get"),
            Bytes::from("{}"),
            404,
            5,
            "nosuch",
        ),
        (
            "POST",
            format!("{base}/user/Nope"),
            Bytes::from("{}"),
            404,
            5,
            "Exists, Get, List, Login, Register",
        ),
        (
            "POST",
            format!("{base}/user/Exists"),
            Bytes::from("{\"username\":"),
            400,
            3,
            "malformed JSON",
        ),
        (
            "POST",
            format!("{base}/user/Exists"),
            Bytes::from("{\"username\": 5}"),
            400,
            3,
            "username",
        ),
        (
            "POST",
            format!("{base}/user/Exists"),
            Bytes::from("{\"usrname\": \"x\"}"),
            400,
            3,
            "usrname",
        ),
        (
            "POST",
            format!("{base}/user/Exists"),
            Bytes::from(vec![b' '; 1024 * 1024 + 100]),
            413,
            8,
            "larger than",
        ),
        (
            "GET",
            format!("{base}/user/Get?username=nobody"),
            Bytes::new(),
            404,
            5,
            "nobody",
        ),
        (
            "POST",
            format!("{base}/user/Register"),
            Bytes::from("{\"username\":\"A\",\"password\":\"long-enough\"}"),
            400,
            3,
            "3 to 32 characters",
        ),
        (
            "POST",
            format!("{base}/user/List"),
            Bytes::from("{}"),
            501,
            12,
            "rpc port",
        ),
        (
            "POST",
            format!("{base}/user/Login"),
            Bytes::from("{\"username\":\"x\",\"password\":\"y\"}"),
            401,
            16,
            "wrong username or password",
        ),
    ];
    for (method, url, body, status, code, words) in cases {
        let reply = client
            .send(method, &url, &[("x-request-id", "req-42")], body)
            .await
            .unwrap();
        assert_eq!(reply.status, status, "{method} {url}: {}", reply.text);
        assert_eq!(reply.body["code"], json!(code), "{url}: {}", reply.text);
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{url}: {message:?} lacks {words:?}"
        );
        assert_eq!(reply.header("x-request-id"), Some("req-42"), "{url}");
        assert!(reply.header("x-served-by").is_some(), "{url}");
    }

    // A GET with query parameters reaches the method, with typed scalars.
    let reply = client
        .get(&format!("{base}/user/Exists?username=nobody"))
        .await
        .unwrap();
    assert_eq!(
        (reply.status, &reply.body),
        (200, &json!({"exists": false})),
        "{}",
        reply.text
    );
    assert_eq!(reply.header("x-served-by"), Some(address.as_str()));
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );

    // A service whose only node cannot be reached: 503.
    let registry = etcd.registry("go-ms").await;
    let ghost = registry::Instance::new("ghost", "127.0.0.1:1");
    let _ghost = registry::Registry::register(&registry, registry::Registration::new(ghost))
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let reply = loop {
        let reply = client
            .post(&format!("{base}/ghost/Anything"), &json!({}))
            .await
            .unwrap();
        if reply.status != 404 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.body["code"], json!(14));
    assert_eq!(gateway.node.count("panicked"), 0);
}

async fn route_timeout(client: &HttpClient, gateway: &Gateway) -> Option<String> {
    let reply = client
        .get(&format!("http://{}/admin/routes", gateway.admin))
        .await
        .ok()?;
    reply.body["routes"]["user"]["timeout"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_route_pushed_to_etcd_reaches_three_running_gateways_and_a_bad_one_is_refused() {
    let etcd = require!(Etcd::start().await);
    let config = gateway_config("routes");
    let (_user, address) = start_user(&etcd, 1).await;
    let mut gateways = Vec::new();
    for n in 1..=3 {
        gateways.push(start_gateway(&etcd, n, &config).await);
    }
    let client = HttpClient::default();
    for gateway in &gateways {
        wait_for_nodes(&client, gateway, "user", std::slice::from_ref(&address)).await;
        assert_eq!(route_timeout(&client, gateway).await.as_deref(), Some("5s"));
    }
    let dir = config.parent().unwrap();
    let push = |text: &'static str, name: &'static str| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let etcd_addr = etcd.etcd_addr();
        async move {
            run_to_end(
                "gateway",
                &[
                    "--etcd-addr",
                    &etcd_addr,
                    "routes",
                    "push",
                    file.to_str().unwrap(),
                ],
                &[],
                PATIENCE,
            )
            .await
        }
    };

    let pushed = push(
        "[routes.user]\ntimeout = \"1ns\"\nidempotent = [\"Exists\"]\n",
        "tight.toml",
    )
    .await;
    assert_eq!(pushed.code, Some(0), "{}", pushed.stderr);
    // How fast is the benchmark's business; here a loaded CI machine gets all its patience.
    let after_push = Instant::now();
    for gateway in &gateways {
        while route_timeout(&client, gateway).await.as_deref() != Some("1ns") {
            assert!(
                after_push.elapsed() < PATIENCE,
                "gateway never applied the route"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "measured: three gateways applied the pushed route in {:?}",
        after_push.elapsed()
    );
    // The new timeout is really in force: a 1 ns deadline ends in 504, whether the
    // gateway's timer or the node (told by grpc-timeout) notices first.
    for gateway in &gateways {
        for _ in 0..10 {
            let reply = client
                .post(&api(gateway, "Exists"), &json!({"username": "x"}))
                .await
                .unwrap();
            assert_eq!(reply.status, 504, "{}", reply.text);
            assert_eq!(reply.body["code"], json!(4));
        }
    }

    // An invalid table is refused whole; the gateways keep the last good one.
    let refused = push("[routes.user]\ntimeout = \"0s\"\n", "bad.toml").await;
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("routes.user.timeout"),
        "{}",
        refused.stderr
    );
    let shown = run_to_end(
        "gateway",
        &["--etcd-addr", &etcd.etcd_addr(), "routes", "show"],
        &[],
        PATIENCE,
    )
    .await;
    assert!(
        shown.stdout.contains("timeout = \"1ns\""),
        "{}",
        shown.stdout
    );
    for gateway in &gateways {
        assert_eq!(
            route_timeout(&client, gateway).await.as_deref(),
            Some("1ns")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_tonic_client_on_the_gateway_rpc_port_is_answered_by_a_user_node_unary_and_streaming() {
    use services::proto::order::v1::CreateRequest;
    use services::proto::order::v1::order_service_client::OrderServiceClient;
    use services::proto::user::v1::user_service_client::UserServiceClient;
    use services::proto::user::v1::{ExistsRequest, ListRequest, RegisterRequest};

    let etcd = require!(Etcd::start().await);
    let (users, gateway, _) = users_behind_a_gateway(&etcd, "grpc", 1).await;
    let address = &users[0].1;
    let channel = grpc_channel(&gateway.rpc).await;
    let reply = UserServiceClient::new(channel.clone())
        .exists(ExistsRequest {
            username: "nobody".into(),
        })
        .await
        .expect("Exists through the gateway");
    assert_eq!(
        reply
            .metadata()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok()),
        Some(address.as_str())
    );
    assert!(!reply.into_inner().exists);

    // A server stream passes through message by message, in order, to its end.
    let mut users = UserServiceClient::new(channel.clone());
    let names = ["stream-c", "stream-a", "stream-b", "other"];
    for name in names {
        users
            .register(RegisterRequest {
                username: name.into(),
                password: "long enough".into(),
            })
            .await
            .expect("Register through the gateway");
    }
    let mut stream = users
        .list(ListRequest {
            prefix: "stream-".into(),
            limit: 0,
        })
        .await
        .expect("List through the gateway")
        .into_inner();
    let mut listed = Vec::new();
    while let Some(user) = stream.message().await.expect("stream message") {
        listed.push(user.username);
    }
    assert_eq!(listed, ["stream-a", "stream-b", "stream-c"]);
    // A status the node returns on a stream reaches the caller as it was sent.
    let refused = users
        .list(ListRequest {
            prefix: String::new(),
            limit: 1_000_000,
        })
        .await
        .expect_err("limit over the cap");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("cap"), "{refused:?}");

    // A gRPC service nobody serves: UNIMPLEMENTED naming it, not a hang.
    let missing = OrderServiceClient::new(channel.clone())
        .create(CreateRequest {
            username: "nobody".into(),
            item: "book".into(),
        })
        .await
        .expect_err("no order node");
    assert_eq!(missing.code(), tonic::Code::Unimplemented, "{missing:?}");
    assert!(
        missing.message().contains("order.v1.OrderService"),
        "{missing:?}"
    );

    // The gateway's own health service answers on the same port.
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(
        status.is_ok(),
        "the gateway's own health service answers: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn jwt_routes_call_credentials_rate_limits_and_cors_guard_the_services() {
    use services::proto::order::v1::CreateRequest;
    use services::proto::order::v1::order_service_client::OrderServiceClient;
    use services::proto::user::v1::ExistsRequest;
    use services::proto::user::v1::user_service_client::UserServiceClient;

    let etcd = require!(Etcd::start().await);
    let config = gateway_config_with(
        "guards",
        "[gateway]\ncors_allow_origins = [\"https://app.example\"]\n\
         [gateway.jwt]\nhs256_secret = \"gateway-test-secret\"\nissuer = \"rust-ms/user\"\n\
         [routes.user]\njwt = true\nforward_claims = [\"sub\"]\n\
         rate_limit = { per_second = 0.5, burst = 4 }\n\
         [routes.user.methods.Register]\njwt = false\n\
         [routes.user.methods.Login]\njwt = false\n\
         [routes.order]\njwt = true\nforward_claims = [\"sub\"]\n",
    );
    let key = ("MS_SECURITY__CALL_KEY", "cluster-call-key");
    let order = Node::start(
        "order",
        "order-1",
        &[
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd.etcd_addr(),
            "--advertise-host",
            "127.0.0.1",
        ],
        &[key],
    );
    let order_address = order.listening("rpc").await;
    let user = Node::start(
        "user",
        "user-1",
        &[
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd.etcd_addr(),
            "--advertise-host",
            "127.0.0.1",
        ],
        &[("MS_USER__TOKEN_SECRET", "gateway-test-secret"), key],
    );
    let address = user.listening("rpc").await;
    let gateway_node = Node::start(
        "gateway",
        "gateway-1",
        &[
            "--config",
            config.to_str().unwrap(),
            "--etcd-addr",
            &etcd.etcd_addr(),
        ],
        &[key],
    );
    let gateway = Gateway {
        http: gateway_node.listening("http").await,
        rpc: gateway_node.listening("rpc").await,
        admin: gateway_node.listening("admin").await,
        node: gateway_node,
    };
    let client = HttpClient::default();
    wait_for_nodes(&client, &gateway, "user", std::slice::from_ref(&address)).await;
    wait_for_nodes(
        &client,
        &gateway,
        "order",
        std::slice::from_ref(&order_address),
    )
    .await;

    // Public methods pass without a token; the gateway's signed calls are accepted.
    let body = json!({"username": "erin", "password": "erin-pass"});
    let registered = client
        .post(&api(&gateway, "Register"), &body)
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{}", registered.text);
    let login = client.post(&api(&gateway, "Login"), &body).await.unwrap();
    let token = login.body["token"].as_str().expect("token").to_owned();

    // A protected method: 401 without a token, 200 with the one Login issued.
    let exists = json!({"username": "erin"});
    let refused = client
        .post(&api(&gateway, "Exists"), &exists)
        .await
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (401, json!(16)),
        "{}",
        refused.text
    );
    let bearer = format!("Bearer {token}");
    let allowed = client
        .post_authorized(&api(&gateway, "Exists"), &bearer, &exists)
        .await
        .unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    let forged = client
        .post_authorized(&api(&gateway, "Exists"), "Bearer a.b.c", &exists)
        .await
        .unwrap();
    assert_eq!(forged.status, 401, "{}", forged.text);

    // The verified subject reaches the order service, which lets one order only as
    // oneself; order's own call to user carries the cluster's credential.
    let create = |username: &str| json!({"username": username, "item": "book"});
    let orders = format!("http://{}/api/order/Create", gateway.http);
    let own = client
        .post_authorized(&orders, &bearer, &create("erin"))
        .await
        .unwrap();
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.body["order"]["username"], json!("erin"));
    let others = client
        .post_authorized(&orders, &bearer, &create("frank"))
        .await
        .unwrap();
    assert_eq!(
        (others.status, others.body["code"].clone()),
        (403, json!(7)),
        "{}",
        others.text
    );

    // The burst of 4 is spent (Register, Login, one Exists passed; refused calls spent none
    // or one): within a few calls the limit answers 429 with Retry-After.
    let mut limited = None;
    for _ in 0..6 {
        let reply = client
            .post_authorized(&api(&gateway, "Exists"), &bearer, &exists)
            .await
            .unwrap();
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("the rate limit answered 429");
    assert_eq!(limited.body["code"], json!(8));
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    // Native gRPC on the rpc port passes the same route: no token, no call; and the
    // same rate limit.
    let through = grpc_channel(&gateway.rpc).await;
    let exists_with = |authorization: Option<&str>| {
        let mut request = tonic::Request::new(ExistsRequest {
            username: "erin".into(),
        });
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    };
    let no_token = UserServiceClient::new(through.clone())
        .exists(exists_with(None))
        .await
        .expect_err("a JWT route over the rpc port without a token");
    assert_eq!(
        no_token.code(),
        tonic::Code::Unauthenticated,
        "{no_token:?}"
    );
    let mut limited = None;
    for _ in 0..6 {
        match UserServiceClient::new(through.clone())
            .exists(exists_with(Some(&bearer)))
            .await
        {
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                limited = Some(status);
                break;
            }
            Ok(_) => {}
            Err(other) => panic!("with a token: {other:?}"),
        }
    }
    let limited = limited.expect("the rate limit refused an rpc port call");
    assert!(limited.message().contains("retry in"), "{limited:?}");

    // CORS preflight for an allowed origin.
    let preflight = client
        .send(
            "OPTIONS",
            &api(&gateway, "Exists"),
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    // A direct call without the cluster's credential is refused; health stays open.
    let channel = grpc_channel(&address).await;
    let direct = UserServiceClient::new(channel.clone())
        .exists(ExistsRequest {
            username: "erin".into(),
        })
        .await
        .expect_err("unsigned direct call");
    assert_eq!(direct.code(), tonic::Code::Unauthenticated, "{direct:?}");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health checks need no credential");

    // Through the gateway's rpc port the call is signed on the way and answered, with
    // the token's subject forwarded. A caller cannot pose as another subject: its own
    // x-jwt-* metadata is dropped, the verified one put in its place.
    let create_as = |username: &str, posed_subject: &str| {
        let mut request = tonic::Request::new(CreateRequest {
            username: username.into(),
            item: "book".into(),
        });
        let metadata = request.metadata_mut();
        metadata.insert("authorization", bearer.parse().unwrap());
        metadata.insert("x-jwt-sub", posed_subject.parse().unwrap());
        request
    };
    let mut orders = OrderServiceClient::new(through);
    orders
        .create(create_as("erin", "frank"))
        .await
        .expect("signed by the gateway, erin orders as erin");
    let denied = orders
        .create(create_as("frank", "frank"))
        .await
        .expect_err("erin's token cannot order for frank");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_new_service_version_brings_its_methods_to_the_api_without_a_gateway_restart() {
    let etcd = require!(Etcd::start().await);
    let (users, gateway, client) = users_behind_a_gateway(&etcd, "upgrade", 1).await;
    let old_address = users[0].1.clone();
    let greet = json!({"name": "dora"});
    let before = client.post(&api(&gateway, "Greet"), &greet).await.unwrap();
    assert_eq!(before.status, 404, "{}", before.text);

    // The new release joins: its method is there at once, and only its nodes serve it.
    let registry: std::sync::Arc<dyn registry::Registry> =
        std::sync::Arc::new(etcd.registry("go-ms").await);
    let next = tests::user_next::start(registry).await;
    wait_for_nodes(
        &client,
        &gateway,
        "user",
        &[old_address.clone(), next.address.clone()],
    )
    .await;
    for _ in 0..10 {
        let reply = client.post(&api(&gateway, "Greet"), &greet).await.unwrap();
        assert_eq!(
            (reply.status, &reply.body),
            (200, &json!({"greeting": "hello dora, from user 0.2.0"})),
            "{}",
            reply.text
        );
        assert_eq!(reply.header("x-served-by"), Some(next.address.as_str()));
    }
    // A method only the old release has goes only to old nodes; one both have, to both.
    for n in 0..10 {
        let reply = client
            .get(&format!("{}?username=nobody-{n}", api(&gateway, "Get")))
            .await
            .unwrap();
        assert_eq!(reply.status, 404, "{}", reply.text);
        assert_eq!(reply.header("x-served-by"), Some(old_address.as_str()));
    }
    let mut served_by = std::collections::BTreeSet::new();
    for n in 0..40 {
        let reply = client
            .get(&format!("{}?username=nobody-{n}", api(&gateway, "Exists")))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        served_by.extend(reply.header("x-served-by").map(str::to_owned));
    }
    assert_eq!(
        served_by,
        [old_address.clone(), next.address.clone()].into(),
        "Exists is served by both releases"
    );

    // The new release leaves: its method goes with it.
    next.stop().await;
    wait_for_nodes(
        &client,
        &gateway,
        "user",
        std::slice::from_ref(&old_address),
    )
    .await;
    let after = client.post(&api(&gateway, "Greet"), &greet).await.unwrap();
    assert_eq!(after.status, 404, "{}", after.text);
    assert_eq!(gateway.node.count("panicked"), 0);
}

async fn probe_behind_a_gateway(
    etcd: &Etcd,
    config: &Path,
    readiness: Option<tokio::sync::watch::Receiver<bool>>,
) -> (tests::in_process::InProcessNode, Gateway, HttpClient) {
    let gateway = start_gateway(etcd, 1, config).await;
    let registry: std::sync::Arc<dyn registry::Registry> =
        std::sync::Arc::new(etcd.registry("go-ms").await);
    let probe = tests::probe::start(registry, readiness).await;
    let client = HttpClient::default();
    wait_for_nodes(
        &client,
        &gateway,
        "probe",
        std::slice::from_ref(&probe.address),
    )
    .await;
    (probe, gateway, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn client_and_bidirectional_streams_pass_through_the_rpc_port() {
    use tests::probe::proto::Note;
    use tests::probe::proto::probe_service_client::ProbeServiceClient;

    let etcd = require!(Etcd::start().await);
    let (probe, gateway, client) =
        probe_behind_a_gateway(&etcd, &gateway_config("streams"), None).await;
    let mut probes = ProbeServiceClient::new(grpc_channel(&gateway.rpc).await);
    let note = |text: &str| Note { text: text.into() };

    // Client stream: every note reaches the node, the one reply comes back.
    let joined = probes
        .collect(futures::stream::iter([note("a"), note("b"), note("c")]))
        .await
        .expect("Collect through the gateway")
        .into_inner();
    assert_eq!(joined.text, "a b c");

    // Bidirectional: each reply arrives before the next note is even sent, so nothing
    // on the way waits for the end of the request.
    let (notes, outgoing) = tokio::sync::mpsc::channel(1);
    let mut replies = probes
        .chat(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("Chat through the gateway")
        .into_inner();
    for text in ["one", "two", "three"] {
        notes.send(note(text)).await.expect("the call is open");
        let reply = tokio::time::timeout(PATIENCE, replies.message())
            .await
            .expect("a reply before the next note")
            .expect("a message, not an error")
            .expect("the stream goes on");
        assert_eq!(reply.text, format!("re: {text}"));
    }
    drop(notes);
    assert!(
        replies.message().await.expect("a clean end").is_none(),
        "the reply stream ends when the request stream does"
    );

    // The same node over /api: unary works, streaming methods point to the rpc port.
    let base = format!("http://{}/api/probe", gateway.http);
    let echoed = client
        .post(&format!("{base}/Echo"), &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!((echoed.status, &echoed.body), (200, &json!({"text": "hi"})));
    let streaming = client
        .post(&format!("{base}/Collect"), &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(streaming.status, 501, "{}", streaming.text);
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_failing_service_opens_its_circuit_and_a_good_probe_closes_it() {
    let etcd = require!(Etcd::start().await);
    let config = gateway_config_with(
        "breaker",
        "[routes.probe]\n\
         circuit_breaker = { error_rate = 0.5, min_calls = 4, window = \"60s\", open_for = \"2s\" }\n",
    );
    let (probe, gateway, client) = probe_behind_a_gateway(&etcd, &config, None).await;
    let base = format!("http://{}/api/probe", gateway.http);
    let (echo_url, hi) = (format!("{base}/Echo"), json!({"text": "hi"}));
    let echo = || client.post(&echo_url, &hi);

    for _ in 0..4 {
        let failed = client
            .post(&format!("{base}/Fail"), &json!({}))
            .await
            .unwrap();
        assert_eq!((failed.status, &failed.body["code"]), (500, &json!(13)));
        assert_eq!(failed.header("x-served-by"), Some(probe.address.as_str()));
    }
    // Open: the whole service is refused at the gateway, with a time to come back.
    let refused = echo().await.unwrap();
    assert_eq!(
        (refused.status, &refused.body["code"]),
        (503, &json!(14)),
        "{}",
        refused.text
    );
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("circuit open")
    );
    assert_eq!(refused.header("x-served-by"), Some("gateway"));
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    // After open_for one probe goes through; it succeeds, and the circuit closes.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = echo().await.unwrap();
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert!(Instant::now() < deadline, "the circuit never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..3 {
        assert_eq!(echo().await.unwrap().status, 200);
    }
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_node_failing_its_health_checks_leaves_rotation_until_they_pass() {
    let etcd = require!(Etcd::start().await);
    let config = gateway_config_with("health", "[gateway]\nhealth_interval = \"200ms\"\n");
    let (ready, readiness) = tokio::sync::watch::channel(true);
    let (probe, gateway, client) = probe_behind_a_gateway(&etcd, &config, Some(readiness)).await;
    let registry: std::sync::Arc<dyn registry::Registry> =
        std::sync::Arc::new(etcd.registry("go-ms").await);
    let steady = tests::probe::start(registry, None).await;
    let echo_url = format!("http://{}/api/probe/Echo", gateway.http);
    let hi = json!({"text": "hi"});
    let served_by = |reply: &tests::http::Reply| reply.header("x-served-by").map(str::to_owned);
    // Echo until the node with changing readiness answers one.
    let until_served_by = |address: String| {
        let (client, echo_url, hi) = (&client, &echo_url, &hi);
        async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let reply = client.post(echo_url, hi).await.expect("a reply");
                if reply.status == 200 && served_by(&reply).as_deref() == Some(address.as_str()) {
                    return;
                }
                assert!(Instant::now() < deadline, "{address} never served a call");
            }
        }
    };
    until_served_by(probe.address.clone()).await;

    // The node says it cannot work: its checks fail and the gateway stops sending to it.
    ready.send(false).unwrap();
    gateway
        .node
        .wait_for("node out of rotation", PATIENCE)
        .await;
    for _ in 0..30 {
        let reply = client.post(&echo_url, &hi).await.expect("a reply");
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(served_by(&reply), Some(steady.address.clone()));
    }

    // Ready again: back in rotation.
    ready.send(true).unwrap();
    gateway
        .node
        .wait_for("node back in rotation", PATIENCE)
        .await;
    until_served_by(probe.address.clone()).await;
    probe.stop().await;
    steady.stop().await;
}
