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

/// A gateway with more `MS_` variables, an in-process probe node behind it, a client,
/// and the URL of the probe's Echo, once a call through the gateway answers.
async fn probe_behind_a_gateway(
    etcd: &Etcd,
    more: &[(&str, &str)],
) -> (
    Node,
    String,
    tests::in_process::InProcessNode,
    HttpClient,
    String,
) {
    let (gateway, http) = gateway_with(etcd, more).await;
    let probe = tests::probe::start(registry(etcd).await, None).await;
    let client = HttpClient::default();
    let echo = format!("http://{http}/api/probe/Echo");
    client
        .post_until(&echo, &json!({ "text": "up" }), 200, PATIENCE)
        .await;
    (gateway, http, probe, client, echo)
}

async fn registry(etcd: &Etcd) -> Arc<dyn registry::Registry> {
    Arc::new(etcd.registry("go-ms").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_call_that_may_have_run_is_never_sent_to_a_second_node() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let admin = gateway.listening("admin").await;
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
    // The join log comes from the gateway's membership follower; wait for its routing
    // view to hold both nodes too.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let cluster = client
            .get(&format!("http://{admin}/admin/cluster"))
            .await
            .expect("a reply");
        if cluster.body["services"]["probe"]["nodes"]
            .as_array()
            .map(Vec::len)
            == Some(2)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", cluster.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_status_too_large_for_the_gateway_fails_that_call_and_never_the_node() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http, probe, client, echo) = probe_behind_a_gateway(&etcd, &[]).await;

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
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn only_post_and_get_of_safe_methods_run_anything() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
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
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn bodies_that_lie_about_their_size_are_answered_400_and_oversized_ones_413() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http, probe, client, echo) =
        probe_behind_a_gateway(&etcd, &[("MS_GATEWAY__MAX_BODY_BYTES", "65536")]).await;
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
#[cfg_attr(no_etcd_container, ignore = "needs Docker: it stops etcd")]
async fn an_etcd_outage_is_answered_by_the_service_naming_its_store_and_ejects_no_node() {
    let etcd = require!(Etcd::start().await);
    etcd.require_container("stop");
    let (gateway, http) = gateway(&etcd).await;
    let etcd_addr = etcd.etcd_addr();
    let users: Vec<Node> = (1..=2)
        .map(|n| Node::on_etcd("user", &format!("user-{n}"), etcd_addr.as_str(), &[]))
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

/// Whether the server closed the connection within `patience` (a read saw its end).
async fn closed_within(stream: &mut tokio::net::TcpStream, patience: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(patience, stream.read_to_end(&mut seen)).await;
    closed
        .is_ok()
        .then(|| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn stalled_headers_stalled_bodies_and_idle_connections_are_cut_off() {
    let etcd = require!(Etcd::start().await);
    let limits = [
        ("MS_HTTP__HEADER_READ_TIMEOUT", "500ms"),
        ("MS_HTTP__BODY_READ_TIMEOUT", "500ms"),
        ("MS_HTTP__IDLE_TIMEOUT", "1s"),
    ];
    let (gateway, http, probe, client, echo) = probe_behind_a_gateway(&etcd, &limits).await;
    let patience = Duration::from_secs(10);

    // Headers that never end.
    let mut stalled = tokio::net::TcpStream::connect(&http)
        .await
        .expect("connect");
    stalled
        .write_all(b"POST /api/probe/Echo HTTP/1.1\r\nHost: gw\r\n")
        .await
        .expect("send");
    assert!(
        closed_within(&mut stalled, patience).await.is_some(),
        "stalled headers held open"
    );

    // A body that stops after 18 of its 100 bytes: 408, and the connection closes.
    let mut short = tokio::net::TcpStream::connect(&http)
        .await
        .expect("connect");
    short
        .write_all(b"POST /api/probe/Echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n{\"text\":\"eighteen")
        .await
        .expect("send");
    let reply = closed_within(&mut short, patience)
        .await
        .expect("a stalled body held open");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // Connections that say nothing at all, then one that served a call and went quiet.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            tokio::net::TcpStream::connect(&http)
                .await
                .expect("connect"),
        );
    }
    for connection in &mut idle {
        assert!(
            closed_within(connection, patience).await.is_some(),
            "an idle connection held open"
        );
    }
    let mut used = tokio::net::TcpStream::connect(&http)
        .await
        .expect("connect");
    let body = "{\"text\":\"once\"}";
    let request = format!(
        "POST /api/probe/Echo HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    used.write_all(request.as_bytes()).await.expect("send");
    let reply = closed_within(&mut used, patience)
        .await
        .expect("a quiet keep-alive connection held open");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Through it all, ordinary calls are served.
    let reply = client
        .post(&echo, &json!({ "text": "after" }))
        .await
        .expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.sigterm().await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn past_the_connection_cap_new_clients_wait_until_one_leaves() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http, probe, client, echo) =
        probe_behind_a_gateway(&etcd, &[("MS_HTTP__MAX_CONNECTIONS", "2")]).await;
    // Let the client's pooled connection go, then hold both places.
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = tokio::net::TcpStream::connect(&http)
        .await
        .expect("connect");
    let second = tokio::net::TcpStream::connect(&http)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let waiting = tokio::spawn({
        let echo = echo.clone();
        async move {
            HttpClient::default()
                .post(&echo, &json!({ "text": "third" }))
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served past the cap of 2"
    );
    drop(first);
    let reply = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("served once a place was free")
        .expect("the task ran")
        .expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.text);
    drop(second);
    gateway.sigterm().await;
    probe.stop().await;
}

/// `kill -SIG pid`.
fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_node_that_hangs_under_load_costs_no_safe_call_and_is_back_after_it_resumes() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway_with(&etcd, &[("MS_ROUTES__USER__TIMEOUT", "3s")]).await;
    let etcd_addr = etcd.etcd_addr();
    let mut users = Vec::new();
    for n in 1..=3 {
        let node = Node::on_etcd("user", &format!("user-{n}"), etcd_addr.as_str(), &[]);
        let address = node.listening("rpc").await;
        gateway
            .wait_for(&format!("Server [user] cluster [{address}] join"), PATIENCE)
            .await;
        users.push((node, address));
    }
    let client = HttpClient::default();
    let exists = format!("http://{http}/api/user/Exists");
    let body = json!({ "username": "nobody" });
    client.post_until(&exists, &body, 200, PATIENCE).await;

    // Four callers for six seconds; the first node hangs from the first second to the fourth.
    let load_ends = tokio::time::Instant::now() + Duration::from_secs(6);
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (client, exists, body) = (HttpClient::default(), exists.clone(), body.clone());
            tokio::spawn(async move {
                let (mut calls, mut failed, mut slowest) = (0, Vec::new(), Duration::ZERO);
                while tokio::time::Instant::now() < load_ends && calls < 2_000 {
                    let started = tokio::time::Instant::now();
                    let reply = client.post(&exists, &body).await;
                    slowest = slowest.max(started.elapsed());
                    calls += 1;
                    match reply {
                        Ok(reply) if reply.status == 200 => {}
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (calls, failed, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (hung, hung_address) = &users[0];
    signal(hung.pid(), "STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(hung.pid(), "CONT");
    let (mut calls, mut failed, mut slowest) = (0, Vec::new(), Duration::ZERO);
    for caller in callers {
        let (n, f, s) = caller.await.expect("a caller ran");
        calls += n;
        failed.extend(f);
        slowest = slowest.max(s);
    }
    eprintln!(
        "measured: {calls} Exists calls with a node stopped for 3 s: {} failed, slowest {slowest:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    // An attempt gets a third of the route's 3 s, then the call moves on: no call waits
    // out the whole 3 s hang.
    assert!(
        slowest < Duration::from_secs(3),
        "a call waited {slowest:?}, as long as the hang"
    );
    assert!(
        gateway.count("set aside") + gateway.count("out of rotation") > 0,
        "the hung node was never taken out: {:?}",
        gateway.lines()
    );

    // Resumed, it serves again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = client.post(&exists, &body).await.expect("a reply");
        if reply.header("x-served-by") == Some(hung_address.as_str()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{hung_address} never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (node, _) in &users {
        node.sigterm().await;
    }
    gateway.sigterm().await;
}

/// The status code of a raw HTTP/1.1 exchange; `None` when the gateway closed without
/// answering.
async fn raw_status(address: &str, request: &[u8]) -> Option<u16> {
    let reply = raw_exchange(address, request, false).await;
    reply
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn bad_input_of_every_kind_gets_a_4xx_and_ordinary_calls_go_on_throughout() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
    user.listening("rpc").await;
    let client = HttpClient::default();
    let exists = format!("http://{http}/api/user/Exists");
    let body = json!({ "username": "nobody" });
    client.post_until(&exists, &body, 200, PATIENCE).await;
    // Connections held open and silent all along.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(
            tokio::net::TcpStream::connect(&http)
                .await
                .expect("connect"),
        );
    }

    let post = |path: &str, body: &[u8]| {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{extra}Connection: close\r\n\r\n")
            .into_bytes()
    };
    let long_method = "m".repeat(10_000);
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    let many_params: String = (0..5_000).map(|n| format!("&p{n}=1")).collect();
    let big_header = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an overlong method name",
            post(&format!("/api/user/{long_method}"), b"{}"),
        ),
        ("a path with too few parts", post("/api/user", b"{}")),
        (
            "a path with too many parts",
            post("/api/user/Exists/more", b"{}"),
        ),
        ("a path of escaped garbage", post("/api/%ff%fe/%00", b"{}")),
        ("a path climbing out", post("/api/../../etc/passwd", b"{}")),
        ("an unknown service", post("/api/nobody/Exists", b"{}")),
        (
            "invalid UTF-8",
            post("/api/user/Exists", &[0xff, 0xfe, 0xfd]),
        ),
        (
            "deeply nested JSON",
            post("/api/user/Exists", nested.as_bytes()),
        ),
        (
            "a huge number for a string",
            post("/api/user/Exists", b"{\"username\": 1e400}"),
        ),
        (
            "an array for an object",
            post("/api/user/Exists", b"[1, 2, 3]"),
        ),
        (
            "a string for an object",
            post("/api/user/Exists", b"\"username\""),
        ),
        (
            "an unknown field",
            post("/api/user/Exists", b"{\"usernam\": \"x\"}"),
        ),
        (
            "thousands of query parameters",
            get(&format!("/api/user/Exists?username=a{many_params}"), ""),
        ),
        (
            "a 100 KB header",
            get("/api/user/Exists?username=a", &big_header),
        ),
        (
            "a method no one knows",
            b"BREW /api/user/Exists HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "a request line that is not HTTP",
            b"hello there\r\n\r\n".to_vec(),
        ),
    ];
    for (what, request) in cases {
        let status = raw_status(&http, &request).await;
        eprintln!("measured: {what}: {status:?}");
        assert!(
            status.is_some_and(|s| (400..500).contains(&s)),
            "{what}: answered {status:?}, not a 4xx"
        );
        let reply = client.post(&exists, &body).await.expect("a reply");
        assert_eq!(reply.status, 200, "after {what}: {}", reply.text);
    }
    assert_eq!(gateway.count("panicked"), 0, "{:?}", gateway.lines());
    drop(idle);
    user.sigterm().await;
    gateway.sigterm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_service_whose_last_node_left_is_unavailable_while_a_name_never_seen_is_not_found() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
    let address = user.listening("rpc").await;
    let client = HttpClient::default();
    let exists = format!("http://{http}/api/user/Exists");
    let body = json!({ "username": "bob" });
    client.post_until(&exists, &body, 200, PATIENCE).await;

    user.sigterm().await;
    gateway
        .wait_for(
            &format!("Server [user] cluster [{address}] leave"),
            PATIENCE,
        )
        .await;
    let down = client.post(&exists, &body).await.expect("a reply");
    assert_eq!(down.status, 503, "{}", down.text);
    assert_eq!(down.body["code"], 14, "{}", down.text);
    assert!(
        down.text.contains("no node of \\\"user\\\""),
        "{}",
        down.text
    );

    let never = client
        .post(&format!("http://{http}/api/usr/Exists"), &body)
        .await
        .expect("a reply");
    assert_eq!(never.status, 404, "{}", never.text);
    assert!(never.text.contains("unknown service"), "{}", never.text);
    gateway.sigterm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_call_sent_as_soon_as_the_gateway_logs_a_join_reaches_the_node() {
    let etcd = require!(Etcd::start().await);
    let (gateway, http) = gateway(&etcd).await;
    let client = HttpClient::default();
    let exists = format!("http://{http}/api/user/Exists");
    let body = json!({ "username": "bob" });
    // Before any user node: nothing to call.
    let before = client.post(&exists, &body).await.expect("a reply");
    assert_eq!(before.status, 404, "{}", before.text);

    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
    let address = user.listening("rpc").await;
    gateway
        .wait_for(&format!("Server [user] cluster [{address}] join"), PATIENCE)
        .await;
    // The line is the signal: the very next call is routed.
    let reply = client.post(&exists, &body).await.expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.text);
    user.sigterm().await;
    gateway.sigterm().await;
}
