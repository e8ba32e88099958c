//! Safe retries with zero configuration: the gateway reads each method's
//! `idempotency_level` from the reflected proto. Killing one of three `user` nodes with
//! calls in flight on it (frozen first, so that some surely are) under a loop of `Exists`
//! calls loses none; a route that turns retries off for `Exists` loses those calls, which
//! shows the proto's word is what saved them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);
const CALLERS: usize = 16;
const CALLS: usize = 2_000;

struct Stack {
    gateway: Node,
    http: String,
    admin: String,
    users: Vec<Node>,
    etcd_addr: String,
}

fn user(etcd_addr: &str, n: usize) -> Node {
    Node::on_etcd("user", &format!("user-{n}"), etcd_addr, &[])
}

/// Three user nodes behind a gateway whose configuration file holds `routes` (TOML).
async fn stack(etcd: &Etcd, routes: &str) -> Stack {
    let etcd_addr = etcd.etcd_addr();
    let env = [
        ("MS_HTTP_PORT", "0"),
        ("MS_RPC_PORT", "0"),
        ("MS_ADVERTISE_HOST", "127.0.0.1"),
        ("MS_REGISTRY__ETCD_ADDR", etcd_addr.as_str()),
        // Sixteen callers as fast as they go saturate a small machine, which load shedding
        // would rightly answer by refusing some; this test counts what retries save.
        ("MS_GATEWAY__LOAD_SHEDDING", "false"),
    ];
    let dir = std::env::temp_dir().join(format!("rust-ms-retries-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temp folder");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, routes).expect("write the gateway config");
    let config = config.to_str().expect("a UTF-8 temp path").to_owned();
    let gateway = Node::start("gateway", "gateway", &["--config", &config], &env);
    let http = gateway.listening("http").await;
    let admin = gateway.listening("admin").await;
    let mut stack = Stack {
        gateway,
        http,
        admin,
        users: Vec::new(),
        etcd_addr,
    };
    for n in 1..=3 {
        stack.add_user(n).await;
    }
    stack
}

impl Stack {
    async fn add_user(&mut self, n: usize) {
        let node = user(&self.etcd_addr, n);
        let address = node.listening("rpc").await;
        self.gateway
            .wait_for(&format!("Server [user] cluster [{address}] join"), PATIENCE)
            .await;
        self.users.push(node);
    }

    /// `CALLS` Exists calls from `CALLERS` callers. Once a quarter of them are done, the
    /// first user node is frozen (SIGSTOP) until the gateway has calls in flight on it,
    /// then killed (-9) with them there. How many calls failed, and how many were in
    /// flight on the node when it died (at least one).
    async fn failed_calls_through_a_kill(&mut self) -> (usize, usize) {
        let exists = format!("http://{}/api/user/Exists", self.http);
        let body = json!({ "username": "nobody" });
        HttpClient::default()
            .post_until(&exists, &body, 200, PATIENCE)
            .await;
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (exists, body) = (exists.clone(), body.clone());
                let (done, failed) = (done.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = HttpClient::default();
                    while done.fetch_add(1, Ordering::SeqCst) < CALLS {
                        let ok =
                            matches!(client.post(&exists, &body).await, Ok(r) if r.status == 200);
                        if !ok {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        while done.load(Ordering::SeqCst) < CALLS / 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut killed = self.users.remove(0);
        let address = killed.listening("rpc").await;
        killed.sigstop().await;
        let in_flight = self.in_flight_on(&address).await;
        killed.sigkill().await;
        for caller in callers {
            caller.await.expect("a caller ran");
        }
        (failed.load(Ordering::SeqCst), in_flight)
    }

    /// Waits until the gateway's `/admin/cluster` shows calls in flight on the node at
    /// `address`; how many.
    async fn in_flight_on(&self, address: &str) -> usize {
        let cluster = format!("http://{}/admin/cluster", self.admin);
        let client = HttpClient::default();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = client.get(&cluster).await.expect("/admin/cluster answers");
            let in_flight = reply.body["services"]["user"]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|node| node["address"] == address)
                .and_then(|node| node["in_flight"].as_u64())
                .unwrap_or(0);
            if in_flight > 0 {
                return in_flight as usize;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no call in flight on the frozen node {address} within {PATIENCE:?}: {}",
                reply.text
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) {
        for user in &self.users {
            user.sigterm().await;
        }
        self.gateway.sigterm().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn with_no_route_a_kill_9_loses_no_call_of_a_method_the_proto_marks_safe() {
    let etcd = require!(Etcd::start().await);
    let mut stack = stack(&etcd, "").await;
    // The policy and where it comes from, as /routes shows it.
    let routes = HttpClient::default()
        .get(&format!("http://{}/admin/routes", stack.admin))
        .await
        .expect("a reply");
    let exists = &routes.body["methods"]["user"]["Exists"];
    assert_eq!(exists["idempotent"], true, "{}", routes.text);
    assert_eq!(exists["from"], "proto", "{}", routes.text);
    assert_eq!(
        routes.body["methods"]["user"]["Register"]["idempotent"],
        false
    );

    let (failed, in_flight) = stack.failed_calls_through_a_kill().await;
    eprintln!(
        "measured: {CALLS} Exists calls, no route, kill -9 of one of three user nodes with {in_flight} in flight on it: {failed} failed"
    );
    assert_eq!(failed, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_route_that_turns_retries_off_loses_the_calls_in_flight_on_a_killed_node() {
    let etcd = require!(Etcd::start().await);
    let off = "[routes.user.methods.Exists]\nidempotent = false\n";
    let mut stack = stack(&etcd, off).await;
    let routes = HttpClient::default()
        .get(&format!("http://{}/admin/routes", stack.admin))
        .await
        .expect("a reply");
    assert_eq!(
        routes.body["methods"]["user"]["Exists"]["from"], "route",
        "{}",
        routes.text
    );
    let (failed, in_flight) = stack.failed_calls_through_a_kill().await;
    eprintln!(
        "measured: retries off for Exists, kill -9 of a node with {in_flight} calls in flight on it: {failed} failed"
    );
    assert!(
        failed > 0,
        "{in_flight} calls were in flight on the killed node and none was lost with retries off"
    );
    stack.stop().await;
}
