//! A server stream over the gateway's HTTP port: newline-delimited JSON by default,
//! Server-Sent Events for a client that accepts them, a failure as the last event, and a
//! caller that goes away cancelling the call on the node.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_server_stream_reaches_http_callers_as_json_lines_or_events_and_a_leaving_caller_cancels_it()
 {
    let etcd = require!(Etcd::start().await);
    let gateway = Node::on_etcd("gateway", "gateway", &etcd.etcd_addr(), &[]);
    let http = gateway.listening("http").await;
    let private = std::sync::Arc::new(registry_memory::MemoryRegistry::new());
    let probe = tests::probe::start(private, None).await;
    etcd.register_bare("probe", "by-hand", &probe.address).await;
    gateway
        .wait_for(
            &format!("Server [probe] cluster [{}] join", probe.address),
            PATIENCE,
        )
        .await;
    let client = HttpClient::default();
    let url = format!("http://{http}/api/probe/Tick");

    // JSON lines by default, one message a line.
    let lines = client
        .post_until(&url, &json!({ "text": "3" }), 200, PATIENCE)
        .await;
    assert_eq!(lines.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(
        lines.text,
        "{\"text\":\"1\"}\n{\"text\":\"2\"}\n{\"text\":\"3\"}\n"
    );

    // Events for a client that asks for them; GET for a method safe to repeat.
    let events = client
        .send(
            "GET",
            &format!("{url}?text=2"),
            &[("accept", "text/event-stream")],
            Bytes::new(),
        )
        .await
        .expect("a reply");
    assert_eq!(events.status, 200, "{}", events.text);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        events.text,
        "data: {\"text\":\"1\"}\n\ndata: {\"text\":\"2\"}\n\n"
    );

    // A status that ends the stream in failure is its last line or event.
    let failed = client
        .post(&url, &json!({ "text": "fail" }))
        .await
        .expect("a reply");
    let mut lines = failed.text.lines();
    assert_eq!(lines.next(), Some("{\"text\":\"1\"}"));
    let last: serde_json::Value =
        serde_json::from_str(lines.next().expect("an error line")).expect("JSON");
    assert_eq!(last["error"]["code"], 10);
    assert_eq!(last["error"]["message"], "tick failed");
    let failed = client
        .send(
            "POST",
            &url,
            &[("accept", "text/event-stream")],
            Bytes::from(json!({ "text": "fail" }).to_string()),
        )
        .await
        .expect("a reply");
    assert!(
        failed
            .text
            .ends_with("event: error\ndata: {\"code\":10,\"message\":\"tick failed\"}\n\n"),
        "{}",
        failed.text
    );

    // A stream of requests still needs gRPC.
    let collect = client
        .post(&format!("http://{http}/api/probe/Collect"), &json!({}))
        .await
        .expect("a reply");
    assert_eq!(collect.status, 501, "{}", collect.text);

    // An endless stream, read a little, then the caller leaves: the node's side ends.
    let before = tests::probe::TICKS_CANCELLED.load(Ordering::SeqCst);
    let mut socket = tokio::net::TcpStream::connect(&http)
        .await
        .expect("connect");
    let body = json!({ "text": "0" }).to_string();
    let request = format!(
        "POST /api/probe/Tick HTTP/1.1\r\nhost: {http}\r\naccept: text/event-stream\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("data: ").count() < 3 {
        let read = tokio::time::timeout(PATIENCE, socket.read(&mut buffer))
            .await
            .expect("events keep coming")
            .expect("read");
        assert!(
            read > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..read]);
    }
    drop(socket);
    tests::probe::wait_for_a_tick_cancelled_after(before, PATIENCE).await;

    gateway.sigterm().await;
    probe.stop().await;
}
