//! The service client (`context.client("user")`) is as safe as the gateway: with the real
//! `gateway`, `user` and `order` binaries on etcd, `order` loses no call while one of
//! three `user` nodes is killed (-9) or frozen (SIGSTOP), and with no `user` node at all
//! it answers at once, naming `user`, instead of waiting out its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);
const CALLS: usize = 1_500;
const CALLERS: usize = 4;
/// The fault lands after this many calls are done.
const FAULT_AFTER: usize = 300;

struct Cluster {
    gateway: Node,
    http: String,
    users: Vec<Node>,
    order: Node,
}

async fn cluster(etcd: &Etcd, users: usize) -> Cluster {
    let addr = etcd.etcd_addr();
    let gateway = Node::on_etcd("gateway", "gateway", &addr, &[]);
    let http = gateway.listening("http").await;
    let mut nodes = Vec::new();
    for n in 1..=users {
        let user = Node::on_etcd("user", &format!("user-{n}"), &addr, &[]);
        user.listening("rpc").await;
        nodes.push(user);
    }
    let order = Node::on_etcd("order", "order", &addr, &[]);
    let order_address = order.listening("rpc").await;
    gateway
        .wait_for(
            &format!("Server [order] cluster [{order_address}] join"),
            PATIENCE,
        )
        .await;
    Cluster {
        gateway,
        http,
        users: nodes,
        order,
    }
}

impl Cluster {
    fn url(&self, path: &str) -> String {
        format!("http://{}/api/{path}", self.http)
    }

    /// `CALLS` order Create calls from `CALLERS` callers, with `fault` done to the first
    /// user node once `FAULT_AFTER` calls are done. The calls that failed, with why.
    async fn failed_creates_through(&mut self, fault: impl AsyncFnOnce(&mut Node)) -> Vec<String> {
        let account = json!({ "username": "alice", "password": "correct horse" });
        HttpClient::default()
            .post_until(&self.url("user/Register"), &account, 200, PATIENCE)
            .await;
        let create = self.url("order/Create");
        let body = json!({ "username": "alice", "item": "book" });
        HttpClient::default()
            .post_until(&create, &body, 200, PATIENCE)
            .await;
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (create, body) = (create.clone(), body.clone());
                let (done, failures) = (done.clone(), failures.clone());
                tokio::spawn(async move {
                    let client = HttpClient::default();
                    while done.fetch_add(1, Ordering::SeqCst) < CALLS {
                        match client.post(&create, &body).await {
                            Ok(reply) if reply.status == 200 => {}
                            Ok(reply) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{}: {}", reply.status, reply.text)),
                            Err(error) => failures.lock().unwrap().push(error),
                        }
                    }
                })
            })
            .collect();
        while done.load(Ordering::SeqCst) < FAULT_AFTER {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            done.load(Ordering::SeqCst) < CALLS,
            "the calls ended before the fault: the test would prove nothing"
        );
        fault(&mut self.users[0]).await;
        for caller in callers {
            caller.await.expect("a caller ran");
        }
        failures.lock().unwrap().clone()
    }

    async fn stop(self) {
        for user in &self.users {
            user.sigterm().await;
        }
        self.order.sigterm().await;
        self.gateway.sigterm().await;
    }
}

/// Three user nodes, `fault` done to one of them during the calls, and no call lost.
async fn no_create_lost_through(what: &str, fault: impl AsyncFnOnce(&mut Node)) {
    let etcd = require!(Etcd::start().await);
    let mut cluster = cluster(&etcd, 3).await;
    let failed = cluster.failed_creates_through(fault).await;
    eprintln!(
        "measured: {CALLS} order Create calls, {what} of one of three user nodes after {FAULT_AFTER}: {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let mut faulty = cluster.users.remove(0);
    if faulty.is_running() {
        faulty.sigkill().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn order_loses_no_call_when_one_of_three_user_nodes_is_killed() {
    no_create_lost_through("kill -9", async |user: &mut Node| user.sigkill().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn order_loses_no_call_when_a_user_node_freezes_once_its_attempts_time_out() {
    no_create_lost_through("SIGSTOP", async |user: &mut Node| user.sigstop().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn with_no_user_node_order_fails_at_once_naming_user_instead_of_waiting_out_its_deadline() {
    let etcd = require!(Etcd::start().await);
    let cluster = cluster(&etcd, 0).await;
    let create = cluster.url("order/Create");
    let body = json!({ "username": "alice", "item": "book" });
    let client = HttpClient::default();
    // The first call also has the gateway learn order's methods; the second is timed.
    for attempt in ["first", "second"] {
        let started = Instant::now();
        let reply = client.post(&create, &body).await.expect("a reply");
        let took = started.elapsed();
        eprintln!("measured: {attempt} Create with no user node answered in {took:?}");
        assert_eq!(reply.status, 503, "{}", reply.text);
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("\"user\""), "{}", reply.text);
        assert!(message.contains("no node"), "{}", reply.text);
        // The client's deadline is 5 s and the gateway's 10 s: an answer within 1 s
        // is one that did not wait for either.
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    }
    cluster.stop().await;
}
