//! The browser's doors of the gateway's public port, used by a page in Chromium: gRPC-Web
//! with `fetch` and hand-made frames, as a browser library would send them (a unary call,
//! a server stream, a failing status), and a server stream read with `EventSource` as
//! Server-Sent Events.

use std::time::Duration;

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

/// A gRPC-Web call from the page: `message` (protobuf bytes) to `path`; the reply's HTTP
/// status, content type, data frames (as byte arrays) and trailers (as text).
fn call_script(path: &str, message: &[u8]) -> String {
    format!(
        r#"(async () => {{
  const message = new Uint8Array({message:?});
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  const reply = await fetch("{path}", {{
    method: "POST",
    headers: {{ "content-type": "application/grpc-web+proto", "x-grpc-web": "1" }},
    body: frame,
  }});
  const bytes = new Uint8Array(await reply.arrayBuffer());
  const data = [];
  let trailers = null;
  for (let at = 0; at + 5 <= bytes.length; ) {{
    const length = new DataView(bytes.buffer, at + 1, 4).getUint32(0);
    const body = bytes.slice(at + 5, at + 5 + length);
    if (bytes[at] & 0x80) {{ trailers = new TextDecoder().decode(body); }}
    else {{ data.push(Array.from(body)); }}
    at += 5 + length;
  }}
  // A status with no message may come as headers alone (trailers-only), as the protocol
  // allows.
  if (trailers === null && reply.headers.get("grpc-status") !== null) {{
    trailers = "grpc-status:" + reply.headers.get("grpc-status") + "\r\n" +
      "grpc-message:" + decodeURIComponent(reply.headers.get("grpc-message") || "") + "\r\n";
  }}
  return {{ status: reply.status, type: reply.headers.get("content-type"), data, trailers }};
}})()"#
    )
}

/// `string field 1` of a message.
fn field_one(text: &str) -> Vec<u8> {
    let mut message = vec![0x0a, text.len() as u8];
    message.extend_from_slice(text.as_bytes());
    message
}

fn trailer(trailers: &Value, name: &str) -> Option<String> {
    trailers.as_str()?.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
#[cfg_attr(no_chromium, ignore = "needs chromium (apt-get install chromium)")]
async fn a_page_in_chromium_calls_services_over_grpc_web_and_reads_a_stream_with_event_source() {
    let etcd = require!(Etcd::start().await);
    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
    let gateway = Node::on_etcd("gateway", "gateway", &etcd.etcd_addr(), &[]);
    let http = gateway.listening("http").await;
    let user_address = user.listening("rpc").await;
    gateway
        .wait_for(
            &format!("Server [user] cluster [{user_address}] join"),
            PATIENCE,
        )
        .await;
    HttpClient::default()
        .post_until(
            &format!("http://{http}/api/user/Register"),
            &json!({ "username": "ada", "password": "correct horse battery" }),
            200,
            PATIENCE,
        )
        .await;

    // A page of the gateway's own origin: fetch needs no CORS there.
    let mut browser = Browser::launch(&format!("http://{http}/healthz"))
        .await
        .expect("chromium opens a page of the gateway");

    let exists = browser
        .eval(&call_script(
            "/user.v1.UserService/Exists",
            &field_one("ada"),
        ))
        .await
        .expect("the page's call");
    assert_eq!(exists["status"], 200, "{exists}");
    assert_eq!(exists["type"], "application/grpc-web+proto", "{exists}");
    // ExistsResponse { exists: true }.
    assert_eq!(exists["data"], json!([[0x08, 0x01]]), "{exists}");
    assert_eq!(
        trailer(&exists["trailers"], "grpc-status").as_deref(),
        Some("0")
    );

    // A server stream: one data frame per account under the prefix.
    let listed = browser
        .eval(&call_script("/user.v1.UserService/List", &field_one("a")))
        .await
        .expect("the page's stream");
    let accounts = listed["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(accounts.len(), 1, "{listed}");
    assert_eq!(
        trailer(&listed["trailers"], "grpc-status").as_deref(),
        Some("0")
    );

    // A service's refusal is its status in the trailer frame, message included.
    let mut login = field_one("ada");
    login.extend_from_slice(&[0x12, 4]);
    login.extend_from_slice(b"nope");
    let refused = browser
        .eval(&call_script("/user.v1.UserService/Login", &login))
        .await
        .expect("the page's failing call");
    assert_eq!(refused["data"], json!([]), "{refused}");
    assert_eq!(
        trailer(&refused["trailers"], "grpc-status").as_deref(),
        Some("16"),
        "{refused}"
    );
    assert!(
        trailer(&refused["trailers"], "grpc-message")
            .is_some_and(|message| message.contains("wrong username or password")),
        "{refused}"
    );

    // The same stream as Server-Sent Events, read by the browser's own EventSource: it
    // asks for text/event-stream; the end of the stream closes the connection.
    let events = browser
        .eval(
            r#"new Promise((resolve) => {
  const events = [];
  const source = new EventSource("/api/user/List?prefix=a");
  source.onmessage = (event) => events.push(JSON.parse(event.data));
  source.onerror = () => { source.close(); resolve(events); };
})"#,
        )
        .await
        .expect("EventSource reads the stream");
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
    assert_eq!(events[0]["username"], "ada", "{events}");
    assert!(
        events[0]["createdAtMs"].is_string(),
        "int64 as a string: {events}"
    );

    drop(browser);
    gateway.sigterm().await;
    user.sigterm().await;
}
