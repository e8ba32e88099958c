//! The README's first command: the whole stack in one process, with no etcd at all.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tests::http::HttpClient;
use tests::process::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(address: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stack_runs_gateway_three_users_two_orders_on_the_memory_registry() {
    let mut stack = Node::start(
        "dev-stack",
        "dev-stack",
        &["--http-port", "0", "--rpc-port", "0"],
        &[],
    );
    let http = stack.listening("http").await;
    // The gateway sees the five service nodes join.
    stack
        .wait_until(
            Duration::from_secs(30),
            "five join lines at the gateway",
            |lines| {
                let joins = lines
                    .iter()
                    .filter(|l| l.contains("service=gateway") && l.contains("] join"))
                    .count();
                (joins >= 5).then_some(())
            },
        )
        .await;
    // One admin port for the process, where the gateway's view of the stack is.
    let admin = stack.listening("admin").await;
    let cluster = http_get(&admin, "/admin/cluster").await;
    let body = cluster.split("\r\n\r\n").nth(1).expect("HTTP body");
    let view: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let nodes = |service: &str| view["services"][service]["nodes"].as_array().map(Vec::len);
    assert_eq!(nodes("user"), Some(3), "{view}");
    assert_eq!(nodes("order"), Some(2), "{view}");
    assert_eq!(nodes("gateway"), Some(1), "{view}");
    // Every node of the process registered and listed: the one admin port is ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http_get(&admin, "/readyz").await;
        if ready.starts_with("HTTP/1.0 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What runs where is not on the public port.
    let public = http_get(&http, "/cluster").await;
    assert!(public.starts_with("HTTP/1.0 404"), "{public}");
    assert!(
        !stack.lines().iter().any(|l| l.contains("etcd")),
        "the dev stack never touches etcd"
    );
    let warnings: Vec<String> = stack
        .lines()
        .into_iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        warnings.is_empty(),
        "the dev stack starts without warnings: {warnings:?}"
    );

    // `GET /` says where to go, naming the services behind the gateway.
    let index = http_get(&http, "/").await;
    assert!(index.starts_with("HTTP/1.0 200"), "{index}");
    for wanted in [
        "/api/user/{method}",
        "/api/order/{method}",
        "/admin/cluster",
    ] {
        assert!(index.contains(wanted), "{wanted} missing from {index}");
    }

    same_token_from_every_user_node(&http).await;

    stack.sigterm().await;
    assert_eq!(stack.exit_code(Duration::from_secs(30)).await, Some(0));
}

/// The user nodes sign with one development secret: two logins of the same user in the
/// same second, answered by different nodes, carry the same HS256 signature (a node with
/// a secret of its own signs differently, and the other nodes would not accept its tokens).
async fn same_token_from_every_user_node(http: &str) {
    let client = HttpClient::default();
    let account = json!({ "username": "dev-ada", "password": "secret-password" });
    let register = format!("http://{http}/api/user/Register");
    client
        .post_until(&register, &account, 200, Duration::from_secs(30))
        .await;
    // node → (header and payload, signature) of a token it issued
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for _ in 0..300 {
        let reply = client
            .post(&format!("http://{http}/api/user/Login"), &account)
            .await
            .expect("a reply");
        assert_eq!(reply.status, 200, "{}", reply.text);
        let node = reply.header("x-served-by").expect("x-served-by").to_owned();
        let token = reply.body["token"].as_str().expect("a token").to_owned();
        let (signed, signature) = token.rsplit_once('.').expect("a JWT");
        let twin = seen
            .iter()
            .find(|(other, (claims, _))| **other != node && claims == signed);
        if let Some((other, (_, other_signature))) = twin {
            assert_eq!(
                signature, other_signature,
                "{node} and {other} signed the same claims differently"
            );
            return;
        }
        seen.insert(node, (signed.to_owned(), signature.to_owned()));
    }
    panic!("300 logins never gave two nodes the same claims to sign: {seen:?}");
}
