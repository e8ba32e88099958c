//! The compose cluster (deploy/compose.yml: three etcd members, two gateways, three user
//! and two order nodes, all containers on networks of their own) under faults, with a
//! steady loop of calls through both gateways: a user container killed, one etcd member
//! killed, a user node cut off from etcd but not from its callers, and etcd stopped
//! entirely for 30 seconds. Needs the images of scripts/build-images.sh and
//! scripts/build-etcd-image.sh (scripts/test.sh builds them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tests::http::HttpClient;
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(90);
const USERS: [&str; 3] = ["10.213.1.31:8190", "10.213.1.32:8190", "10.213.1.33:8190"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Cluster {
    project: String,
    file: PathBuf,
    /// (api, admin) per gateway, on loopback.
    gateways: [(String, String); 2],
    env: Vec<(String, String)>,
}

impl Cluster {
    async fn up() -> Cluster {
        for image in [
            "rust-ms/gateway:local",
            "rust-ms/user:local",
            "rust-ms/order:local",
        ] {
            let found = run("docker", &["image", "inspect", image]).await;
            assert!(
                found.0,
                "{image} is missing: build it with scripts/build-images.sh (scripts/test.sh does)"
            );
        }
        let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let env = vec![
            ("MS_COMPOSE_GATEWAY_1".to_owned(), ports[0].to_string()),
            ("MS_COMPOSE_ADMIN_1".to_owned(), ports[1].to_string()),
            ("MS_COMPOSE_GATEWAY_2".to_owned(), ports[2].to_string()),
            ("MS_COMPOSE_ADMIN_2".to_owned(), ports[3].to_string()),
        ];
        let cluster = Cluster {
            project: "rustmsfaults".to_owned(),
            file: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose.yml"),
            gateways: [
                (
                    format!("127.0.0.1:{}", ports[0]),
                    format!("127.0.0.1:{}", ports[1]),
                ),
                (
                    format!("127.0.0.1:{}", ports[2]),
                    format!("127.0.0.1:{}", ports[3]),
                ),
            ],
            env,
        };
        // What a run that was killed may have left.
        cluster.compose(&["down", "-v", "--remove-orphans"]).await;
        let (ok, output) = cluster.compose(&["up", "-d"]).await;
        assert!(ok, "docker-compose up failed: {output}");
        cluster
    }

    fn compose_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("docker-compose");
        command
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    async fn compose(&self, args: &[&str]) -> (bool, String) {
        let output = Command::from(self.compose_command(args))
            .output()
            .await
            .expect("run docker-compose");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    async fn docker(&self, args: &[&str]) {
        let (ok, output) = run("docker", args).await;
        assert!(ok, "docker {args:?}: {output}");
    }

    /// Every gateway's view of `service`'s node addresses.
    async fn views(&self, client: &HttpClient, service: &str) -> Vec<Vec<String>> {
        let mut views = Vec::new();
        for (_, admin) in &self.gateways {
            let reply = client.get(&format!("http://{admin}/admin/cluster")).await;
            let mut seen: Vec<String> = reply
                .ok()
                .and_then(|r| r.body["services"][service]["nodes"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n["address"].as_str().map(str::to_owned))
                .collect();
            seen.sort();
            views.push(seen);
        }
        views
    }

    /// Waits until both gateways route to exactly `wanted` for `service`.
    async fn wait_for_view(&self, client: &HttpClient, service: &str, wanted: &[&str]) -> Duration {
        let started = Instant::now();
        let mut wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        wanted.sort();
        loop {
            let views = self.views(client, service).await;
            if views.iter().all(|v| *v == wanted) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the gateways never saw {service} as {wanted:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .compose_command(&["down", "-v", "--remove-orphans"])
            .output();
    }
}

async fn run(program: &str, args: &[&str]) -> (bool, String) {
    match Command::new(program).args(args).output().await {
        Ok(output) => (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ),
        Err(error) => (false, error.to_string()),
    }
}

/// Calls and failures per phase of the test.
#[derive(Default)]
struct Tally {
    calls: u64,
    failed: u64,
    examples: Vec<String>,
}

/// A steady loop of `Exists` calls through every gateway, counted by phase.
struct CallLoop {
    phase: Arc<Mutex<&'static str>>,
    tallies: Arc<Mutex<BTreeMap<&'static str, Tally>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl CallLoop {
    fn start(client: &HttpClient, gateways: &[(String, String)]) -> CallLoop {
        let phase = Arc::new(Mutex::new("settled"));
        let tallies: Arc<Mutex<BTreeMap<&'static str, Tally>>> = Arc::default();
        let stop = CancellationToken::new();
        let tasks = gateways
            .iter()
            .map(|(api, _)| {
                let (client, phase, tallies, stop) =
                    (client.clone(), phase.clone(), tallies.clone(), stop.clone());
                let url = format!("http://{api}/api/user/Exists");
                tokio::spawn(async move {
                    let body = json!({ "username": "ada" });
                    while !stop.is_cancelled() {
                        let now = *phase.lock().unwrap();
                        let call = client.post(&url, &body);
                        let outcome =
                            match tokio::time::timeout(Duration::from_secs(15), call).await {
                                Ok(Ok(reply))
                                    if reply.status == 200 && reply.body["exists"] == true =>
                                {
                                    None
                                }
                                Ok(Ok(reply)) => Some(format!("{} {}", reply.status, reply.text)),
                                Ok(Err(error)) => Some(error),
                                Err(_) => Some("no answer within 15 s".to_owned()),
                            };
                        {
                            let mut tallies = tallies.lock().unwrap();
                            let tally = tallies.entry(now).or_default();
                            tally.calls += 1;
                            if let Some(failure) = outcome {
                                tally.failed += 1;
                                if tally.examples.len() < 5 {
                                    tally.examples.push(failure);
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        CallLoop {
            phase,
            tallies,
            stop,
            tasks,
        }
    }

    fn enter(&self, phase: &'static str) {
        *self.phase.lock().unwrap() = phase;
    }

    /// Calls and failures of `phase`, printed for the record.
    fn report(&self, phase: &'static str) -> (u64, u64, Vec<String>) {
        let tallies = self.tallies.lock().unwrap();
        let tally = tallies.get(phase).map_or((0, 0, Vec::new()), |t| {
            (t.calls, t.failed, t.examples.clone())
        });
        eprintln!(
            "measured: {phase}: {} calls through both gateways, {} failed {:?}",
            tally.0, tally.1, tally.2
        );
        tally
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd_container, ignore = "needs a Docker engine")]
async fn the_compose_cluster_serves_through_a_killed_node_a_lost_etcd_member_a_partition_and_an_etcd_outage()
 {
    let cluster = Cluster::up().await;
    let client = HttpClient::default();
    // The cluster comes up: both gateways serve /api, and see every node.
    for (n, (api, _)) in cluster.gateways.iter().enumerate() {
        let reply = client
            .post_until(
                &format!("http://{api}/api/user/Register"),
                &json!({ "username": format!("ada-{n}"), "password": "correct horse" }),
                200,
                PATIENCE,
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    let register = format!("http://{}/api/user/Register", cluster.gateways[0].0);
    client
        .post(
            &register,
            &json!({ "username": "ada", "password": "correct horse" }),
        )
        .await
        .expect("a reply");
    cluster.wait_for_view(&client, "user", &USERS).await;
    cluster
        .wait_for_view(&client, "order", &["10.213.1.41:8200", "10.213.1.42:8200"])
        .await;
    let order = client
        .post_until(
            &format!("http://{}/api/order/Create", cluster.gateways[1].0),
            &json!({ "username": "ada", "item": "tea" }),
            200,
            PATIENCE,
        )
        .await;
    assert_eq!(order.body["order"]["username"], "ada", "{}", order.text);

    let calls = CallLoop::start(&client, &cluster.gateways);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // (a) kill -9 of a user container: its calls go elsewhere, then it leaves.
    calls.enter("a: user container killed");
    cluster
        .docker(&["kill", &cluster.container("user-1")])
        .await;
    let dropped = cluster.wait_for_view(&client, "user", &USERS[1..]).await;
    eprintln!("measured: a killed user node left both gateways' views after {dropped:?}");
    cluster.compose(&["start", "user-1"]).await;
    cluster.wait_for_view(&client, "user", &USERS).await;
    let (a_calls, a_failed, a_examples) = calls.report("a: user container killed");

    // (b) one etcd member killed: calls go on, a node registers again (a restart) and
    // both gateways' watches see it, and the member rejoins.
    calls.enter("b: etcd member killed");
    cluster
        .docker(&["kill", &cluster.container("etcd-2")])
        .await;
    let (ok, output) = cluster.compose(&["restart", "user-2"]).await;
    assert!(ok, "{output}");
    cluster.wait_for_view(&client, "user", &USERS).await;
    cluster.compose(&["start", "etcd-2"]).await;
    let started = Instant::now();
    loop {
        let (ok, output) = run(
            "docker",
            &[
                "exec",
                &cluster.container("etcd-1"),
                "/usr/local/bin/etcdctl",
                "--endpoints=http://10.213.0.11:2379,http://10.213.0.12:2379,http://10.213.0.13:2379",
                "endpoint",
                "health",
            ],
        )
        .await;
        if ok {
            eprintln!(
                "measured: the killed etcd member was healthy again {:?} after its start",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "etcd-2 never rejoined: {output}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (b_calls, b_failed, b_examples) = calls.report("b: etcd member killed");

    // (c) user-3 loses etcd but not its callers: dropped when its lease runs out, back
    // when it can reach etcd again.
    calls.enter("c: user node cut off from etcd");
    let registry_network = format!("{}_registry", cluster.project);
    cluster
        .docker(&[
            "network",
            "disconnect",
            &registry_network,
            &cluster.container("user-3"),
        ])
        .await;
    let dropped = cluster.wait_for_view(&client, "user", &USERS[..2]).await;
    eprintln!("measured: the cut-off user node left both views after {dropped:?}");
    cluster
        .docker(&[
            "network",
            "connect",
            "--ip",
            "10.213.0.33",
            &registry_network,
            &cluster.container("user-3"),
        ])
        .await;
    let back = cluster.wait_for_view(&client, "user", &USERS).await;
    eprintln!("measured: reconnected, it was listed again after {back:?}");
    let (c_calls, c_failed, c_examples) = calls.report("c: user node cut off from etcd");

    // (d) etcd stopped entirely for 30 s: known nodes keep answering; what needs etcd to
    // write says so; everything registers again after.
    calls.enter("d: etcd stopped for 30 s");
    for member in ["etcd-1", "etcd-2", "etcd-3"] {
        cluster
            .docker(&["stop", "-t", "1", &cluster.container(member)])
            .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refused = client
        .post(
            &register,
            &json!({ "username": "bob", "password": "correct horse" }),
        )
        .await
        .expect("an answer while etcd is down");
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.body["code"], json!(14), "{}", refused.text);
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("etcd"), "{message}");
    tokio::time::sleep(Duration::from_secs(25)).await;
    for member in ["etcd-1", "etcd-2", "etcd-3"] {
        cluster.docker(&["start", &cluster.container(member)]).await;
    }
    let registered = client
        .post_until(
            &register,
            &json!({ "username": "bob", "password": "correct horse" }),
            200,
            PATIENCE,
        )
        .await;
    assert_eq!(registered.status, 200);
    cluster.wait_for_view(&client, "user", &USERS).await;
    cluster
        .wait_for_view(&client, "order", &["10.213.1.41:8200", "10.213.1.42:8200"])
        .await;
    cluster
        .wait_for_view(
            &client,
            "gateway",
            &["10.213.1.21:8180", "10.213.1.22:8180"],
        )
        .await;
    let nodes = run(
        "docker",
        &[
            "exec",
            &cluster.container("etcd-1"),
            "/usr/local/bin/etcdctl",
            "--endpoints=http://10.213.0.11:2379",
            "get",
            "--prefix",
            "--keys-only",
            "go-ms/services/",
        ],
    )
    .await;
    let keys = nodes.1.lines().filter(|l| !l.is_empty()).count();
    assert_eq!(keys, 7, "every node registered again: {}", nodes.1);
    let (d_calls, d_failed, d_examples) = calls.report("d: etcd stopped for 30 s");
    calls.stop().await;

    for (phase, total, failed, examples) in [
        ("a", a_calls, a_failed, a_examples),
        ("b", b_calls, b_failed, b_examples),
        ("c", c_calls, c_failed, c_examples),
        ("d", d_calls, d_failed, d_examples),
    ] {
        assert!(total > 0, "({phase}) made no call");
        assert_eq!(
            failed, 0,
            "({phase}) {failed} of {total} calls failed: {examples:?}"
        );
    }
}
