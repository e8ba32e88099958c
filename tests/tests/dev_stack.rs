//! The README's first command: the whole stack in one process, with no etcd at all.

use std::time::Duration;

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
    let cluster = http_get(&http, "/cluster").await;
    let body = cluster.split("\r\n\r\n").nth(1).expect("HTTP body");
    let nodes: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(nodes["user"].as_array().map(Vec::len), Some(3), "{nodes}");
    assert_eq!(nodes["order"].as_array().map(Vec::len), Some(2), "{nodes}");
    assert_eq!(
        nodes["gateway"].as_array().map(Vec::len),
        Some(1),
        "{nodes}"
    );
    assert!(
        !stack.lines().iter().any(|l| l.contains("etcd")),
        "the dev stack never touches etcd"
    );

    stack.sigterm().await;
    assert_eq!(stack.exit_code(Duration::from_secs(30)).await, Some(0));
}
