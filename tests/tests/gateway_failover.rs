//! The gateway while nodes fail, on the real binaries and a real etcd: no failed call while
//! nodes crash or restart, a refusing node costs nothing, circuits open and close, and
//! failing health checks take a node out of rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{
    PATIENCE, api, gateway_config_with, probe_behind_a_gateway, start_gateway, start_user,
    users_behind_a_gateway, wait_for_nodes,
};
use tests::grpc::channel as grpc_channel;
use tests::http::HttpClient;
use tests::require;
use tokio::time::Instant;

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
