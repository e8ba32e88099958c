//! What GO-MS's README walked a user through, with the real `gateway` and `user`
//! binaries against etcd in a container: six nodes find each other, leave cleanly or by
//! crashing, and come back by themselves after etcd was down.

use std::time::Duration;

use etcd_client::GetOptions;
use tests::etcd::Etcd;
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
