//! The gateway's JSON API on the real binaries and a real etcd: JSON to gRPC by
//! reflection with calls split evenly, errors as grpc-gateway maps them, and a new
//! service version's methods without a gateway restart.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{PATIENCE, api, users_behind_a_gateway, wait_for_nodes};
use tests::require;
use tokio::time::Instant;

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
