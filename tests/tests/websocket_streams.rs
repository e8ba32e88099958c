//! Streams of requests over HTTP: a WebSocket upgrade of a method's `/api` path carries
//! client and bidirectional streams (JSON text frames, an empty frame ending the
//! requests, the status in the close frame), from a client the project did not write
//! (tokio-tungstenite) and from a page in Chromium, through a real gateway on etcd.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tests::browser::Browser;
use tests::etcd::Etcd;
use tests::gateway::{
    Gateway, gateway_config_with, probe_behind_a_gateway, start_user, wait_for_nodes,
};
use tests::http::HttpClient;
use tests::require;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const PATIENCE: Duration = Duration::from_secs(60);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A gateway whose probe route needs the token `user`'s Login issues, the user node that
/// issues it, and the in-process probe; the token.
async fn probe_behind_a_guarded_gateway(
    etcd: &Etcd,
    tag: &str,
) -> (
    Gateway,
    tests::process::Node,
    tests::in_process::InProcessNode,
    String,
) {
    let config = gateway_config_with(
        tag,
        "[gateway.jwt]\nhs256_secret = \"gateway-test-secret\"\nissuer = \"rust-ms/user\"\n\
         [routes.probe]\njwt = true\n",
    );
    let (user, user_address) = start_user(etcd, 1).await;
    let (probe, gateway, client) = probe_behind_a_gateway(etcd, &config, None).await;
    wait_for_nodes(
        &client,
        &gateway,
        "user",
        std::slice::from_ref(&user_address),
    )
    .await;
    let account = json!({ "username": "wanda", "password": "socket-pass" });
    let url = format!("http://{}/api/user/Register", gateway.http);
    client.post_until(&url, &account, 200, PATIENCE).await;
    let login = client
        .post(&format!("http://{}/api/user/Login", gateway.http), &account)
        .await
        .expect("a reply");
    let token = login.body["token"].as_str().expect("a token").to_owned();
    (gateway, user, probe, token)
}

/// Opens `/api/probe/{method}` as a WebSocket offering the JSON subprotocol and, when
/// given, the token as a `bearer.` subprotocol.
async fn open(http: &str, method: &str, token: Option<&str>) -> Result<Socket, WsError> {
    let mut request = format!("ws://{http}/api/probe/{method}")
        .into_client_request()
        .expect("a WebSocket request");
    let protocols = match token {
        Some(token) => format!("rust-ms.json, bearer.{token}"),
        None => "rust-ms.json".to_owned(),
    };
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&protocols).expect("a header value"),
    );
    let (socket, response) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
            .await
            .expect("the upgrade is answered")?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok()),
        Some("rust-ms.json"),
        "the gateway selects the JSON subprotocol"
    );
    Ok(socket)
}

async fn send(socket: &mut Socket, text: &str) {
    socket
        .send(Message::text(text))
        .await
        .expect("the frame is sent");
}

/// What the gateway sends next: a message's JSON, or the close frame (code and reason).
enum Next {
    Reply(Value),
    Closed(Option<CloseFrame>),
}

async fn next(socket: &mut Socket) -> Next {
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("the gateway answers");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Next::Reply(serde_json::from_str(text.as_str()).expect("a JSON frame"));
            }
            Some(Ok(Message::Close(frame))) => return Next::Closed(frame),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("an unexpected frame: {other:?}"),
        }
    }
}

async fn reply(socket: &mut Socket) -> Value {
    match next(socket).await {
        Next::Reply(value) => value,
        Next::Closed(frame) => panic!("closed where a reply was due: {frame:?}"),
    }
}

async fn closed_with(socket: &mut Socket) -> (u16, String) {
    match next(socket).await {
        Next::Closed(Some(frame)) => (u16::from(frame.code), frame.reason.to_string()),
        Next::Closed(None) => panic!("closed without a code"),
        Next::Reply(value) => panic!("a reply where the close was due: {value}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn client_and_bidi_streams_cross_a_websocket_with_the_status_in_its_close_frame() {
    let etcd = require!(Etcd::start().await);
    let (gateway, user, probe, token) = probe_behind_a_guarded_gateway(&etcd, "ws").await;
    let http = gateway.http.clone();

    // Bidirectional (Chat answers "re: " and the note): each reply arrives before the next note is sent; the empty frame
    // ends the requests and the service's OK closes the socket with 1000.
    let mut chat = open(&http, "Chat", Some(&token))
        .await
        .expect("the upgrade");
    for text in ["one", "two", "three"] {
        send(&mut chat, &json!({ "text": text }).to_string()).await;
        assert_eq!(
            reply(&mut chat).await,
            json!({ "text": format!("re: {text}") })
        );
    }
    send(&mut chat, "").await;
    assert_eq!(closed_with(&mut chat).await.0, 1000);

    // A client stream: the one reply comes after the half-close.
    let mut collect = open(&http, "Collect", Some(&token))
        .await
        .expect("the upgrade");
    for text in ["a", "b", "c"] {
        send(&mut collect, &json!({ "text": text }).to_string()).await;
    }
    send(&mut collect, "").await;
    assert_eq!(reply(&mut collect).await, json!({ "text": "a b c" }));
    assert_eq!(closed_with(&mut collect).await.0, 1000);

    // A unary method over a socket: one message in, one out.
    let mut echo = open(&http, "Echo", Some(&token))
        .await
        .expect("the upgrade");
    send(&mut echo, r#"{"text":"hello"}"#).await;
    assert_eq!(reply(&mut echo).await, json!({ "text": "hello" }));
    assert_eq!(closed_with(&mut echo).await.0, 1000);

    // What cannot be read ends the call: the error as the last frame, then 4000 + code.
    let mut bad = open(&http, "Chat", Some(&token))
        .await
        .expect("the upgrade");
    send(&mut bad, "{not json").await;
    let error = reply(&mut bad).await;
    assert_eq!(error["error"]["code"], 3, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("malformed JSON")),
        "{error}"
    );
    let (code, reason) = closed_with(&mut bad).await;
    assert_eq!(code, 4003);
    assert!(reason.contains("malformed JSON"), "{reason}");

    // A field the method's input does not have is the same INVALID_ARGUMENT.
    let mut unknown_field = open(&http, "Collect", Some(&token))
        .await
        .expect("the upgrade");
    send(&mut unknown_field, r#"{"txt":"typo"}"#).await;
    assert_eq!(reply(&mut unknown_field).await["error"]["code"], 3);
    assert_eq!(closed_with(&mut unknown_field).await.0, 4003);

    // A service's failure: Fail answers INTERNAL, so the socket closes with 4013.
    let mut failing = open(&http, "Fail", Some(&token))
        .await
        .expect("the upgrade");
    send(&mut failing, r#"{"text":"x"}"#).await;
    let error = reply(&mut failing).await;
    assert_eq!(error["error"]["code"], 13, "{error}");
    assert_eq!(closed_with(&mut failing).await.0, 4013);

    // The route's JWT check holds on a socket: without the token, UNAUTHENTICATED.
    let mut anonymous = open(&http, "Chat", None).await.expect("the upgrade");
    send(&mut anonymous, r#"{"text":"hi"}"#).await;
    assert_eq!(reply(&mut anonymous).await["error"]["code"], 16);
    assert_eq!(closed_with(&mut anonymous).await.0, 4016);

    // An unknown method is an HTTP error before any socket opens.
    match open(&http, "Nope", Some(&token)).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 404),
        other => panic!("an unknown method was upgraded: {:?}", other.map(|_| ())),
    }

    // A page of a foreign origin is refused (a browser cannot be asked by CORS first).
    let mut foreign = format!("ws://{http}/api/probe/Chat")
        .into_client_request()
        .expect("a request");
    foreign.headers_mut().insert(
        "origin",
        HeaderValue::from_static("https://elsewhere.example"),
    );
    match tokio_tungstenite::connect_async(foreign).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("a foreign origin was upgraded: {:?}", other.map(|_| ())),
    }

    // A caller that leaves an endless server stream cancels it on the node.
    let before = tests::probe::TICKS_CANCELLED.load(Ordering::SeqCst);
    let mut tick = open(&http, "Tick", Some(&token))
        .await
        .expect("the upgrade");
    send(&mut tick, r#"{"text":"0"}"#).await;
    for n in 1..=3 {
        assert_eq!(reply(&mut tick).await, json!({ "text": n.to_string() }));
    }
    drop(tick);
    tests::probe::wait_for_a_tick_cancelled_after(before, PATIENCE).await;

    // The calls are in the gateway's metrics under their own door.
    let metrics = HttpClient::default()
        .get(&format!("http://{}/metrics", gateway.admin))
        .await
        .expect("metrics");
    assert!(
        metrics
            .text
            .lines()
            .any(|line| line.contains("door=\"websocket\"")),
        "no websocket door in the metrics"
    );

    gateway.node.sigterm().await;
    user.sigterm().await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
#[cfg_attr(no_chromium, ignore = "needs chromium (apt-get install chromium)")]
async fn a_page_in_chromium_chats_with_a_service_over_a_websocket_with_its_token_as_a_subprotocol()
{
    let etcd = require!(Etcd::start().await);
    let (gateway, user, probe, token) = probe_behind_a_guarded_gateway(&etcd, "ws-page").await;
    let mut browser = Browser::launch(&format!("http://{}/healthz", gateway.http))
        .await
        .expect("chromium opens a page of the gateway");

    // The browser's own WebSocket: a note sent on each reply, the empty frame at the end.
    let script = format!(
        r#"new Promise((resolve) => {{
  const notes = ["one", "two", "three"];
  const replies = [];
  const socket = new WebSocket(`ws://${{location.host}}/api/probe/Chat`,
                               ["rust-ms.json", "bearer.{token}"]);
  socket.onopen = () => socket.send(JSON.stringify({{ text: notes[0] }}));
  socket.onmessage = (event) => {{
    replies.push(JSON.parse(event.data));
    socket.send(replies.length < notes.length ? JSON.stringify({{ text: notes[replies.length] }}) : "");
  }};
  socket.onclose = (event) => resolve({{
    protocol: socket.protocol, code: event.code, reason: event.reason, replies,
  }});
}})"#
    );
    let chat = browser.eval(&script).await.expect("the page's chat");
    assert_eq!(chat["protocol"], "rust-ms.json", "{chat}");
    assert_eq!(chat["code"], 1000, "{chat}");
    assert_eq!(
        chat["replies"],
        json!([{ "text": "re: one" }, { "text": "re: two" }, { "text": "re: three" }]),
        "{chat}"
    );

    // Without its token the page learns why from the close event.
    let refused = browser
        .eval(
            r#"new Promise((resolve) => {
  const socket = new WebSocket(`ws://${location.host}/api/probe/Chat`, ["rust-ms.json"]);
  socket.onopen = () => socket.send(JSON.stringify({ text: "hi" }));
  socket.onclose = (event) => resolve({ code: event.code, reason: event.reason });
})"#,
        )
        .await
        .expect("the page's refused chat");
    assert_eq!(refused["code"], 4016, "{refused}");
    assert!(
        refused["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{refused}"
    );

    drop(browser);
    gateway.node.sigterm().await;
    user.sigterm().await;
    probe.stop().await;
}
