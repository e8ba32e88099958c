//! The gateway as the integration tests run it: a real `gateway` binary on loopback ports
//! the OS picks, in front of real `user` nodes or an in-process probe, all on one etcd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::etcd::Etcd;
use crate::http::HttpClient;
use crate::process::Node;

/// How long a test waits for the gateway to see what it expects.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A gateway config whose user route marks the reads idempotent.
pub fn gateway_config(tag: &str) -> PathBuf {
    gateway_config_with(
        tag,
        "[routes.user]\ntimeout = \"5s\"\nidempotent = [\"Exists\", \"Get\"]\n",
    )
}

/// A gateway config on loopback ports the OS picks, with `sections` after the top keys.
pub fn gateway_config_with(tag: &str, sections: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rust-ms-gw-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!("http_port = 0\nrpc_port = 0\nadvertise_host = \"127.0.0.1\"\n{sections}"),
    )
    .unwrap();
    path
}

/// A running gateway and the addresses it listens on.
pub struct Gateway {
    pub node: Node,
    pub http: String,
    pub rpc: String,
    /// The admin port: `/admin/cluster`, `/admin/routes`, `/metrics`.
    pub admin: String,
}

pub async fn start_gateway(etcd: &Etcd, n: usize, config: &Path) -> Gateway {
    start_gateway_with(etcd, n, config, &[]).await
}

/// [`start_gateway`] with `env` set (`MS_REGISTRY__TTL`, say).
pub async fn start_gateway_with(
    etcd: &Etcd,
    n: usize,
    config: &Path,
    env: &[(&str, &str)],
) -> Gateway {
    let node = Node::start(
        "gateway",
        &format!("gateway-{n}"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--etcd-addr",
            &etcd.etcd_addr(),
        ],
        env,
    );
    let http = node.listening("http").await;
    let rpc = node.listening("rpc").await;
    let admin = node.listening("admin").await;
    Gateway {
        node,
        http,
        rpc,
        admin,
    }
}

pub async fn start_user(etcd: &Etcd, n: usize) -> (Node, String) {
    let node = node_on(etcd, "user", n, &[]);
    let address = node.listening("rpc").await;
    (node, address)
}

/// A `binary` node (`user`, `order`) on `etcd` as `{binary}-{n}`, its rpc port where the
/// OS puts it, advertised on loopback, with `env` (a user node gets the tests' token
/// secret).
pub fn node_on(etcd: &Etcd, binary: &str, n: usize, env: &[(&str, &str)]) -> Node {
    let mut all = Vec::new();
    if binary == "user" {
        all.push(("MS_USER__TOKEN_SECRET", "gateway-test-secret"));
    }
    all.extend_from_slice(env);
    Node::start(
        binary,
        &format!("{binary}-{n}"),
        &[
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd.etcd_addr(),
            "--advertise-host",
            "127.0.0.1",
        ],
        &all,
    )
}

/// Waits until the gateway routes to exactly `addresses` for `service`.
pub async fn wait_for_nodes(
    client: &HttpClient,
    gateway: &Gateway,
    service: &str,
    addresses: &[String],
) {
    let mut wanted: Vec<String> = addresses.to_vec();
    wanted.sort();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(reply) = client
            .get(&format!("http://{}/admin/cluster", gateway.admin))
            .await
        {
            let mut seen: Vec<String> = reply.body["services"][service]["nodes"]
                .as_array()
                .map(|nodes| {
                    nodes
                        .iter()
                        .filter_map(|n| n["address"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            seen.sort();
            if seen == wanted {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gateway never saw {service} nodes {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Gateway `n` (with `config`) once it routes to exactly `addresses` for `service`, and a
/// client to call it with.
pub async fn gateway_routing_to(
    etcd: &Etcd,
    n: usize,
    config: &Path,
    service: &str,
    addresses: &[String],
) -> (Gateway, HttpClient) {
    let gateway = start_gateway(etcd, n, config).await;
    let client = HttpClient::default();
    wait_for_nodes(&client, &gateway, service, addresses).await;
    (gateway, client)
}

/// `count` user nodes and one gateway (config `gateway_config(tag)`) that routes to them.
pub async fn users_behind_a_gateway(
    etcd: &Etcd,
    tag: &str,
    count: usize,
) -> (Vec<(Node, String)>, Gateway, HttpClient) {
    let config = gateway_config(tag);
    let mut users = Vec::new();
    for n in 1..=count {
        users.push(start_user(etcd, n).await);
    }
    let gateway = start_gateway(etcd, 1, &config).await;
    let client = HttpClient::default();
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
    wait_for_nodes(&client, &gateway, "user", &addresses).await;
    (users, gateway, client)
}

/// The JSON API address of a user method on `gateway`.
pub fn api(gateway: &Gateway, method: &str) -> String {
    format!("http://{}/api/user/{method}", gateway.http)
}

/// The in-process probe service (with `readiness`, when given) behind one gateway.
pub async fn probe_behind_a_gateway(
    etcd: &Etcd,
    config: &Path,
    readiness: Option<tokio::sync::watch::Receiver<bool>>,
) -> (crate::in_process::InProcessNode, Gateway, HttpClient) {
    let gateway = start_gateway(etcd, 1, config).await;
    let registry: std::sync::Arc<dyn registry::Registry> =
        std::sync::Arc::new(etcd.registry("go-ms").await);
    let probe = crate::probe::start(registry, readiness).await;
    let client = HttpClient::default();
    wait_for_nodes(
        &client,
        &gateway,
        "probe",
        std::slice::from_ref(&probe.address),
    )
    .await;
    (probe, gateway, client)
}
