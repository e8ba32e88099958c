//! What GO-MS's README walked a user through, with the real `gateway` and `user`
//! binaries against etcd in a container: six nodes find each other, leave cleanly or by
//! crashing, and come back by themselves after etcd was down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::GetOptions;
use serde_json::json;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;
use tokio::time::Instant;

const STARTUP: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(5);

/// A gateway started the GO-MS way: environment variables only, no file.
fn gateway(etcd: &Etcd, n: usize) -> Node {
    let addr = etcd.etcd_addr();
    Node::start(
        "gateway",
        &format!("gateway-{n}"),
        &[],
        &[
            ("MS_HTTP_PORT", "0"),
            ("MS_RPC_PORT", "0"),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
            ("MS_REGISTRY__ETCD_ADDR", &addr),
        ],
    )
}

/// A user node started with GO-MS's underscore flags.
fn user(etcd: &Etcd, n: usize) -> Node {
    Node::start(
        "user",
        &format!("user-{n}"),
        &[
            "--rpc_port",
            "0",
            "--etcd_addr",
            &etcd.etcd_addr(),
            "--advertise-host",
            "127.0.0.1",
        ],
        &[],
    )
}

fn join_line(service: &str, address: &str) -> String {
    format!("Server [{service}] cluster [{address}] join")
}

fn leave_line(service: &str, address: &str) -> String {
    format!("Server [{service}] cluster [{address}] leave")
}

/// Every instance etcd holds, as its JSON, by address.
async fn registered_instances(etcd: &Etcd) -> BTreeMap<String, serde_json::Value> {
    let mut client = etcd.client().await;
    let found = client
        .get("go-ms/services/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("list keys");
    found
        .kvs()
        .iter()
        .map(|kv| {
            let value: serde_json::Value =
                serde_json::from_slice(kv.value()).expect("instance JSON");
            let address = value["address"].as_str().expect("address").to_owned();
            (address, value)
        })
        .collect()
}

async fn registered_addresses(etcd: &Etcd) -> Vec<String> {
    let mut client = etcd.client().await;
    let found = client
        .get("go-ms/services/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("list keys");
    let mut addresses: Vec<String> = found
        .kvs()
        .iter()
        .map(|kv| {
            let value: serde_json::Value =
                serde_json::from_slice(kv.value()).expect("instance JSON");
            value["address"].as_str().expect("address").to_owned()
        })
        .collect();
    addresses.sort();
    addresses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn six_nodes_join_each_other_and_leave_on_sigterm_and_on_kill() {
    let etcd = require!(Etcd::start().await);
    let mut nodes: Vec<(String, Node)> = Vec::new();
    for n in 1..=3 {
        nodes.push(("gateway".into(), gateway(&etcd, n)));
        nodes.push(("user".into(), user(&etcd, n)));
    }
    let mut addresses = Vec::new();
    for (_, node) in &nodes {
        addresses.push(node.listening("rpc").await);
    }

    // Every node logs a join for each of the five others.
    for (i, (_, node)) in nodes.iter().enumerate() {
        for (j, (service, _)) in nodes.iter().enumerate() {
            if i != j {
                node.wait_for(&join_line(service, &addresses[j]), STARTUP)
                    .await;
            }
        }
    }
    // etcd holds exactly the six live nodes.
    let mut expected = addresses.clone();
    expected.sort();
    assert_eq!(registered_addresses(&etcd).await, expected);

    // SIGTERM: the node deregisters first; the others log its leave before its lease would end.
    let (observer, rest) = nodes.split_first_mut().expect("nodes");
    let observer = &observer.1;
    let term_address = addresses[1].clone();
    let sent = Instant::now();
    rest[0].1.sigterm().await;
    observer
        .wait_for(&leave_line("user", &term_address), Duration::from_secs(10))
        .await;
    let after_term = sent.elapsed();
    eprintln!("measured: leave logged {after_term:?} after SIGTERM");
    assert_eq!(
        rest[0].1.exit_code(Duration::from_secs(15)).await,
        Some(0),
        "SIGTERM exits 0"
    );
    // Before the lease could run out: the node took its key away itself.
    assert!(
        after_term < TTL,
        "leave after SIGTERM took {after_term:?}, as long as the lease (TTL {TTL:?})"
    );

    // kill -9: nobody deregisters; the others log leave once the lease runs out.
    let kill_address = addresses[3].clone();
    let killed = Instant::now();
    rest[2].1.sigkill().await;
    observer
        .wait_for(&leave_line("user", &kill_address), TTL * 3)
        .await;
    let after_kill = killed.elapsed();
    eprintln!("measured: leave logged {after_kill:?} after kill -9 (TTL {TTL:?})");
    // The last keepalive was at most a third of the TTL before the kill.
    assert!(
        after_kill >= TTL / 2,
        "leave after kill -9 came after {after_kill:?}, before the lease (TTL {TTL:?}) could end"
    );

    let mut left = expected.clone();
    left.retain(|a| *a != term_address && *a != kill_address);
    assert_eq!(
        registered_addresses(&etcd).await,
        left,
        "only the four live nodes stay listed"
    );
    for (_, node) in &nodes {
        assert_eq!(node.count("panicked"), 0, "{} panicked", node.name);
    }
}

/// The default admin address, which only one process of a host can have.
const DEFAULT_ADMIN: &str = "127.0.0.1:9900";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn go_ms_commands_with_no_admin_setting_run_six_nodes_on_one_host_each_publishing_its_own_admin_port()
 {
    let etcd = require!(Etcd::start().await);
    let addr = etcd.etcd_addr();
    // GO-MS's README: `gateway -http_port 8080 -rpc_port 8180 -etcd_addr 127.0.0.1:2379`,
    // three times on other ports, and three user nodes the same way. The OS picks the
    // ports here, every node advertises loopback, and nothing says where the admin port
    // goes: one of them may get the default, unless another process of this host (another
    // test's) has it.
    let loopback = [("MS_ADVERTISE_HOST", "127.0.0.1")];
    let mut nodes: Vec<(&str, Node)> = Vec::new();
    for n in 1..=3 {
        let gateway_args = ["--http_port", "0", "--rpc_port", "0", "--etcd_addr", &addr];
        let user_args = ["--rpc_port", "0", "--etcd_addr", &addr];
        let gateway = Node::start_with_default_admin(
            "gateway",
            &format!("gateway-{n}"),
            &gateway_args,
            &loopback,
        );
        let user =
            Node::start_with_default_admin("user", &format!("user-{n}"), &user_args, &loopback);
        nodes.push(("gateway", gateway));
        nodes.push(("user", user));
    }
    let (mut rpc, mut admin) = (Vec::new(), Vec::new());
    for (_, node) in &nodes {
        rpc.push(node.listening("rpc").await);
        admin.push(node.listening("admin").await);
    }

    // Every node logs a join for each of the five others.
    for (i, (_, node)) in nodes.iter().enumerate() {
        for (j, (service, _)) in nodes.iter().enumerate() {
            if i != j {
                node.wait_for(&join_line(service, &rpc[j]), STARTUP).await;
            }
        }
    }
    // All six serve: each gateway answers a call that a user node serves.
    let client = HttpClient::default();
    for (service, node) in &nodes {
        if *service == "gateway" {
            let http = node.listening("http").await;
            client
                .post_until(
                    &format!("http://{http}/api/user/Exists"),
                    &json!({ "username": "ada" }),
                    200,
                    STARTUP,
                )
                .await;
        }
    }
    for (_, node) in &mut nodes {
        assert!(
            node.is_running(),
            "{} exited; its log:\n{}",
            node.name,
            node.lines().join("\n")
        );
    }

    // Each registry entry carries the admin address its node logged, one per node, and
    // the node's own admin port answers there.
    let instances = registered_instances(&etcd).await;
    let mut published = BTreeSet::new();
    for (k, (service, node)) in nodes.iter().enumerate() {
        let instance = instances
            .get(&rpc[k])
            .unwrap_or_else(|| panic!("{} ({}) is not in etcd: {instances:?}", node.name, rpc[k]));
        let address = instance["metadata"]["admin"].as_str().unwrap_or_else(|| {
            panic!(
                "{}: no admin address in its metadata: {instance}",
                node.name
            )
        });
        assert_eq!(
            address, admin[k],
            "{}: the admin address it logged",
            node.name
        );
        assert!(
            published.insert(address.to_owned()),
            "{}: {address} is published by another node too",
            node.name
        );
        let health = client
            .get(&format!("http://{address}/healthz"))
            .await
            .unwrap_or_else(|e| panic!("{}: /healthz on {address}: {e}", node.name));
        assert_eq!(
            (health.status, health.text.as_str()),
            (200, "ok"),
            "{}",
            node.name
        );
        let index = client
            .get(&format!("http://{address}/admin"))
            .await
            .unwrap_or_else(|e| panic!("{}: /admin on {address}: {e}", node.name));
        assert_eq!(
            index.body["node"]["service"], *service,
            "{}: {address}",
            node.name
        );
    }

    // Whoever has the default (one of the six or another process), every other node said
    // on one line that it was taken and where its admin port is instead.
    let mut moved = 0;
    for (k, (_, node)) in nodes.iter().enumerate() {
        let said = node
            .lines()
            .into_iter()
            .find(|line| line.contains(&format!("{DEFAULT_ADMIN} is taken")));
        match said {
            Some(line) => {
                assert!(line.contains(&admin[k]), "{}: {line}", node.name);
                moved += 1;
            }
            None => assert_eq!(admin[k], DEFAULT_ADMIN, "{}", node.name),
        }
    }
    assert!(
        moved >= 5,
        "only {moved} nodes moved off {DEFAULT_ADMIN}: {admin:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd_container, ignore = "needs Docker: it stops etcd")]
async fn nodes_register_again_after_etcd_is_down_for_ten_seconds_without_restarting() {
    let etcd = require!(Etcd::start().await);
    etcd.require_container("stop");
    let mut gateway = gateway(&etcd, 1);
    let mut user = user(&etcd, 1);
    let mut expected = vec![gateway.listening("rpc").await, user.listening("rpc").await];
    expected.sort();
    let deadline = Instant::now() + STARTUP;
    while registered_addresses(&etcd).await != expected {
        assert!(Instant::now() < deadline, "both nodes registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    etcd.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        gateway.is_running() && user.is_running(),
        "nodes keep serving while etcd is down"
    );
    etcd.restart().await;
    let back = Instant::now();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if registered_addresses(&etcd).await == expected {
            eprintln!(
                "measured: nodes listed again {:?} after etcd restarted",
                back.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes not listed again within 30 s of etcd's return"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        gateway.is_running() && user.is_running(),
        "no restart was needed"
    );
}
