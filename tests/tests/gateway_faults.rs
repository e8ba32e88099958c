//! Bad input and faults that must not hurt the gateway or the services behind it: calls
//! that may have run are never run twice, a service's oversized status fails only that
//! call, HTTP verbs other than POST (and GET for safe methods) run nothing, and bodies
//! that lie about their size are answered, not dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tests::dropping_node::DroppingNode;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(60);

/// A gateway on etcd with no configuration but loopback ports.
async fn gateway(etcd: &Etcd) -> (Node, String) {
    gateway_with(etcd, &[]).await
}

/// [`gateway`] with more `MS_` variables.
async fn gateway_with(etcd: &Etcd, more: &[(&str, &str)]) -> (Node, String) {
    let etcd_addr = etcd.etcd_addr();
    let mut env = vec![
        ("MS_HTTP_PORT", "0"),
        ("MS_RPC_PORT", "0"),
        ("MS_ADVERTISE_HOST", "127.0.0.1"),
        ("MS_REGISTRY__ETCD_ADDR", etcd_addr.as_str()),
    ];
    env.extend_from_slice(more);
    let node = Node::start("gateway", "gateway", &[], &env);
    let http = node.listening("http").await;
    (node, http)
}

async fn registry(etcd: &Etcd) -> Arc<dyn registry::Registry> {
    Arc::new(etcd.registry("go-ms").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_may_have_run_is_never_sent_to_a_second_node() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let (probe, echoes) = tests::probe::start_counting(registry(&etcd).await, None).await;
    // A second node of the same service and version that reads each call whole, then
    // drops its connection: the call may have run there.
    let dropping = DroppingNode::start().await;
    let value = json!({
        "address": dropping.address,
        "version": "1.0.0",
        "metadata": { "grpc.services": "probe.v1.ProbeService" },
    });
    etcd.client()
        .await
        .put(
            "go-ms/services/probe/drops-after-reading",
            value.to_string(),
            None,
        )
        .await
        .expect("register the dropping node");
    gateway
        .wait_for(&format!("cluster [{}] join", dropping.address), PATIENCE)
        .await;

    // Echo is not marked safe to repeat, by route or proto.
    let client = HttpClient::default();
    let url = format!("http://{http}/api/probe/Echo");
    let (mut served, mut failed) = (0, 0);
    for n in 0..60 {
        let reply = client
            .post(&url, &json!({ "text": format!("call {n}") }))
            .await
            .expect("a reply");
        match reply.status {
            200 => served += 1,
            _ => {
                if failed == 0 {
                    eprintln!(
                        "measured: a call the node dropped answers {} {}",
                        reply.status, reply.text
                    );
                }
                failed += 1;
                assert_eq!(
                    reply.header("x-served-by"),
                    Some(dropping.address.as_str()),
                    "{}",
                    reply.text
                );
            }
        }
    }
    let read_by_the_dropping_node = dropping.calls_read.load(Ordering::SeqCst);
    eprintln!(
        "measured: 60 calls, {served} served, {failed} failed at the node that dropped them, {read_by_the_dropping_node} read there"
    );
    assert!(
        failed > 0,
        "no call reached the dropping node, or each was run again elsewhere"
    );
    assert_eq!(
        failed, read_by_the_dropping_node,
        "every call it read failed, none went on"
    );
    assert_eq!(served, echoes.load(Ordering::SeqCst), "no call ran twice");

    gateway.sigterm().await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_too_large_for_the_gateway_fails_that_call_and_never_the_node() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let probe = tests::probe::start(registry(&etcd).await, None).await;
    let client = HttpClient::default();
    let echo = format!("http://{http}/api/probe/Echo");
    client
        .post_until(&echo, &json!({ "text": "up" }), 200, PATIENCE)
        .await;

    // The probe's NOT_FOUND repeats 20 KB of input in its grpc-message header.
    let shout = format!("http://{http}/api/probe/Shout");
    let loud = json!({ "text": "x".repeat(20_000) });
    for _ in 0..10 {
        let reply = client.post(&shout, &loud).await.expect("a reply");
        assert_ne!(reply.status, 200, "{}", reply.text);
        assert!(
            reply.text.len() < 20_000 + 200,
            "the gateway's reply is bounded too"
        );
    }
    // The node was never set aside: ordinary calls go on at once.
    let reply = client
        .post(&echo, &json!({ "text": "still here" }))
        .await
        .expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(gateway.count("set aside"), 0, "{:?}", gateway.lines());

    gateway.sigterm().await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_post_and_get_of_safe_methods_run_anything() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let user = Node::start(
        "user",
        "user",
        &[],
        &[
            ("MS_RPC_PORT", "0"),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
            ("MS_REGISTRY__ETCD_ADDR", &etcd.etcd_addr()),
        ],
    );
    user.listening("rpc").await;
    let client = HttpClient::default();
    let exists = |name: &str| format!("http://{http}/api/user/Exists?username={name}");
    // GET of a method the proto marks NO_SIDE_EFFECTS answers, with no route configured.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = client.get(&exists("nobody")).await;
        if matches!(&reply, Ok(r) if r.status == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let register = format!("http://{http}/api/user/Register");
    let account = json!({ "username": "verbs", "password": "secret-password" }).to_string();
    for verb in ["HEAD", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "BREW"] {
        let reply = client
            .send(verb, &register, &[], account.clone().into())
            .await
            .expect("a reply");
        assert_eq!(reply.status, 405, "{verb}: {}", reply.text);
        assert_eq!(reply.header("allow"), Some("POST"), "{verb}");
    }
    let reply = client
        .get(&format!(
            "{register}?username=verbs&password=secret-password"
        ))
        .await
        .expect("a reply");
    assert_eq!(reply.status, 405, "a password in a URL: {}", reply.text);
    let reply = client.get(&exists("verbs")).await.expect("a reply");
    assert_eq!(
        reply.body["exists"], false,
        "no verb above created the account"
    );

    // The gateway itself has no methods, and says so.
    let reply = client
        .post(&format!("http://{http}/api/gateway/Exists"), &json!({}))
        .await
        .expect("a reply");
    assert_eq!(reply.status, 404);
    assert!(reply.text.contains("not a service"), "{}", reply.text);

    user.sigterm().await;
    gateway.sigterm().await;
}

/// Sends raw bytes, half-closes, and returns what came back (bounded).
async fn raw_exchange(address: &str, request: &[u8], then_close: bool) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send");
    if then_close {
        stream.shutdown().await.expect("half-close");
    }
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_lie_about_their_size_are_answered_400_and_oversized_ones_413() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway_with(&etcd, &[("MS_GATEWAY__MAX_BODY_BYTES", "65536")]).await;
    let probe = tests::probe::start(registry(&etcd).await, None).await;
    let client = HttpClient::default();
    let echo = format!("http://{http}/api/probe/Echo");
    client
        .post_until(&echo, &json!({ "text": "up" }), 200, PATIENCE)
        .await;
    let head = |extra: &str| {
        format!(
            "POST /api/probe/Echo HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{extra}\r\n"
        )
    };

    // Fewer bytes than Content-Length, then the end of the stream.
    let short = head("Content-Length: 100\r\n") + "{\"text\":\"short\"}";
    let reply = raw_exchange(&http, short.as_bytes(), true).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");

    // A chunk size that is not hexadecimal.
    let lying = head("Transfer-Encoding: chunked\r\n") + "zz\r\n{}\r\n0\r\n\r\n";
    let reply = raw_exchange(&http, lying.as_bytes(), false).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");

    // 256 KB, over the 64 KB limit, sent whole without `Expect: 100-continue`: the 413 is
    // read, not a reset.
    let big = "x".repeat(256 * 1024);
    let oversized = head(&format!("Content-Length: {}\r\n", big.len())) + &big;
    let reply = raw_exchange(&http, oversized.as_bytes(), false).await;
    assert!(
        reply.starts_with("HTTP/1.1 413"),
        "{}",
        &reply[..reply.len().min(300)]
    );

    // And the gateway serves on.
    client
        .post_until(&echo, &json!({ "text": "after" }), 200, PATIENCE)
        .await;
    gateway.sigterm().await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_is_answered_by_the_service_naming_its_store_and_ejects_no_node() {
    let etcd = require!(Etcd::start().await);
    if !etcd.is_container() {
        eprintln!("SKIPPED: an etcd from MS_TEST_ETCD_ENDPOINTS cannot be stopped by the test");
        return;
    }
    let (gateway, http) = gateway(&etcd).await;
    let etcd_addr = etcd.etcd_addr();
    let users: Vec<Node> = (1..=2)
        .map(|n| {
            Node::start(
                "user",
                &format!("user-{n}"),
                &[],
                &[
                    ("MS_RPC_PORT", "0"),
                    ("MS_ADVERTISE_HOST", "127.0.0.1"),
                    ("MS_REGISTRY__ETCD_ADDR", etcd_addr.as_str()),
                ],
            )
        })
        .collect();
    for user in &users {
        let address = user.listening("rpc").await;
        gateway
            .wait_for(&format!("Server [user] cluster [{address}] join"), PATIENCE)
            .await;
    }
    let client = HttpClient::default();
    let register = format!("http://{http}/api/user/Register");
    let account = |name: &str| json!({ "username": name, "password": "secret-password" });
    client
        .post_until(&register, &account("before"), 200, PATIENCE)
        .await;

    etcd.stop().await;
    // Each node finds its store gone and reports NOT_SERVING; the gateway still lets the
    // service answer, and the answer says what is wrong.
    for user in &users {
        user.wait_for("user store", PATIENCE).await;
    }
    let during = client
        .post_until(&register, &account("during"), 503, PATIENCE)
        .await;
    let message = during.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("user store (etcd)"), "{}", during.text);
    assert!(
        !message.contains("tcp connect"),
        "no client internals: {message}"
    );
    assert_eq!(gateway.count("set aside"), 0, "{:?}", gateway.lines());

    etcd.restart().await;
    let back = tokio::time::Instant::now();
    client
        .post_until(&register, &account("after"), 200, PATIENCE)
        .await;
    eprintln!(
        "measured: Register answered again {:?} after etcd was back",
        back.elapsed()
    );
    for user in &users {
        user.sigterm().await;
    }
    gateway.sigterm().await;
}
