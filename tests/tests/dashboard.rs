//! The dashboard on the admin port, in a real browser (Debian's headless Chromium): it
//! lists the cluster's nodes live and marks, then drops, a node that dies. The screenshot
//! is kept as a CI artifact under `target/artifacts/`, not in git.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tests::browser::Browser;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

fn artifacts() -> PathBuf {
    std::env::var_os("MS_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts"))
}

fn node(binary: &str, label: &str, etcd: &Etcd) -> Node {
    // A killed node leaves the registry two seconds after its last refresh.
    Node::on_etcd(
        binary,
        label,
        &etcd.etcd_addr(),
        &[("MS_REGISTRY__TTL", "2s")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
#[cfg_attr(no_chromium, ignore = "needs chromium (apt-get install chromium)")]
async fn the_dashboard_lists_the_live_nodes_and_drops_one_that_is_killed() {
    let etcd = require!(Etcd::start().await);
    let gateway = node("gateway", "gateway", &etcd);
    let first = node("user", "user-1", &etcd);
    let mut second = node("user", "user-2", &etcd);
    let (http, admin) = (
        gateway.listening("http").await,
        gateway.listening("admin").await,
    );
    let (first_rpc, second_rpc) = (first.listening("rpc").await, second.listening("rpc").await);
    let client = HttpClient::default();
    let exists = format!("http://{http}/api/user/Exists");
    client
        .post_until(&exists, &json!({ "username": "ada" }), 200, PATIENCE)
        .await;

    let mut browser = Browser::launch(&format!("http://{admin}/"))
        .await
        .expect("chromium opens the dashboard");
    let row = |address: &str| format!("document.querySelector('[data-address=\"{address}\"]')");
    let state_of = |address: &str| format!("{}?.dataset.state", row(address));
    browser
        .wait_for(
            &format!(
                "{} === 'up' && {} === 'up'",
                state_of(&first_rpc),
                state_of(&second_rpc)
            ),
            PATIENCE,
        )
        .await
        .expect("both user nodes listed as up");
    // Calls while the page polls: it shows their rate and latency.
    let traffic = tokio::spawn({
        let (client, exists) = (client.clone(), exists.clone());
        async move {
            for _ in 0..400 {
                let _ = client.post(&exists, &json!({ "username": "ada" })).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });
    let user_rate = "Number((/([0-9.]+)\\s*req\\/s/.exec(document.querySelector('[data-service-card=\"user\"]')?.innerText ?? '') ?? [])[1] ?? 0)";
    browser
        .wait_for(&format!("{user_rate} > 0"), PATIENCE)
        .await
        .expect("the user card shows the calls' rate");
    let shot = artifacts().join("dashboard.png");
    browser.screenshot(&shot).await.expect("a screenshot");
    eprintln!("dashboard screenshot: {}", shot.display());
    traffic.abort();

    // kill -9: no goodbye; the node leaves when its lease expires.
    second.sigkill().await;
    browser
        .wait_for(&format!("{} === 'left'", state_of(&second_rpc)), PATIENCE)
        .await
        .expect("the killed node is marked as left");
    browser
        .screenshot(&artifacts().join("dashboard-node-left.png"))
        .await
        .expect("a screenshot");
    browser
        .wait_for(&format!("{} === null", row(&second_rpc)), PATIENCE)
        .await
        .expect("the killed node is no longer listed");
    let still = browser
        .eval(&state_of(&first_rpc))
        .await
        .expect("the other node");
    assert_eq!(still, json!("up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
#[cfg_attr(no_chromium, ignore = "needs chromium (apt-get install chromium)")]
async fn the_dashboard_links_every_node_to_the_admin_port_it_publishes() {
    let etcd = require!(Etcd::start().await);
    let gateway = node("gateway", "gateway", &etcd);
    let user = node("user", "user", &etcd);
    let mut rows = Vec::new();
    for node in [&gateway, &user] {
        rows.push((node.listening("rpc").await, node.listening("admin").await));
    }
    let gateway_admin = &rows[0].1;
    let mut browser = Browser::launch(&format!("http://{gateway_admin}/"))
        .await
        .expect("chromium opens the dashboard");
    for (rpc, admin) in &rows {
        let link = format!(
            "document.querySelector('[data-address=\"{rpc}\"] a.admin')?.getAttribute('href')"
        );
        browser
            .wait_for(&format!("{link} === 'http://{admin}/'"), PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("the row of {rpc} links to http://{admin}/: {e:?}"));
    }
}
