//! A node written in Python with grpcio (`tests/python/shelf_node.py`), registered in etcd
//! by a bare JSON value and serving only the stock `grpc.reflection.v1alpha` of
//! grpcio-reflection: the gateway learns its methods through v1alpha and answers its
//! `/api` calls, and `rust-ms proto pull` reads its protos the same way.

use std::time::Duration;

use serde_json::json;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::outside::fresh_dir;
use tests::process::{Node, run_to_end};
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_python_node_with_only_v1alpha_reflection_answers_through_the_gateways_api() {
    let etcd = require!(Etcd::start().await);
    let (_python, address) = tests::python::start_node("shelf_node.py").await;
    let gateway = Node::on_etcd("gateway", "gateway", &etcd.etcd_addr(), &[]);
    let http = gateway.listening("http").await;
    etcd.register_bare("shelf", "python-1", &address).await;
    gateway
        .wait_for(
            &format!("Server [shelf] cluster [{address}] join"),
            PATIENCE,
        )
        .await;

    let http_client = HttpClient::default();
    let reply = http_client
        .post_until(
            &format!("http://{http}/api/shelf/Shout"),
            &json!({ "title": "dune", "pages": "412" }),
            200,
            PATIENCE,
        )
        .await;
    // Canonical JSON both ways: the int64 goes and comes back as a string.
    assert_eq!(reply.body, json!({ "title": "DUNE", "pages": "412" }));
    assert_eq!(reply.header("x-served-by"), Some(address.as_str()));

    // The Python service's own refusal reaches the caller as its status.
    let refused = http_client
        .post(
            &format!("http://{http}/api/shelf/Shout"),
            &json!({ "pages": 1 }),
        )
        .await
        .expect("a reply");
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["message"], "a book needs a title");

    // The protos of the same node, for a caller that has not got them.
    let out = fresh_dir("foreign-pull");
    let pulled = run_to_end(
        "rust-ms",
        &[
            "proto",
            "pull",
            "shelf",
            "--from",
            &address,
            "--out",
            out.to_str().expect("a UTF-8 temp path"),
        ],
        &[],
        PATIENCE,
    )
    .await;
    assert_eq!(pulled.code, Some(0), "{}", pulled.stderr);
    let proto = std::fs::read_to_string(out.join("shelf/v1/shelf.proto")).expect("written");
    assert!(
        proto.contains("rpc Shout(.shelf.v1.Book) returns (.shelf.v1.Book);"),
        "{proto}"
    );

    gateway.sigterm().await;
    let _ = std::fs::remove_dir_all(&out);
}
