//! etcd for tests, through testcontainers.
//!
//! The image comes from `MS_ETCD_IMAGE` (default: the official etcd image) and must already
//! be on the machine: the tests never pull. `scripts/build-etcd-image.sh` builds one from
//! Debian's package for machines that cannot pull.
//! `MS_TEST_ETCD_ENDPOINTS` points the tests at an etcd that is already running instead.
//!
//! Whether etcd can be had is decided when the tests are built (tests/build.rs): with no
//! Docker engine and no `MS_TEST_ETCD_ENDPOINTS` the tests that need etcd are built as
//! `ignored` (cfg `no_etcd`), and so are the tests that stop, pause, replace or cluster etcd
//! when it is not in a container the tests own (cfg `no_etcd_container`). A test that is
//! run all the same and finds no etcd fails ([`require!`](crate::require),
//! [`Etcd::require_container`]): the build-time answer is stale, rebuild the tests. Under
//! `CI=true` nothing is ignored for a missing Docker engine: the tests fail.

use std::net::TcpListener;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use registry_etcd::{EtcdOptions, EtcdRegistry};
use testcontainers::core::{ContainerPort, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// Used when `MS_ETCD_IMAGE` is not set.
pub const DEFAULT_IMAGE: &str = "gcr.io/etcd-development/etcd:v3.5.21";
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
const STARTUP: Duration = Duration::from_secs(60);

fn image_reference() -> String {
    std::env::var("MS_ETCD_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned())
}

/// The tests never pull: an image that is not on this machine is a clear failure.
fn require_local_image() {
    let reference = image_reference();
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", &reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        present,
        "etcd image {reference} is not on this machine and the tests do not pull: run `docker pull {reference}`, or scripts/build-etcd-image.sh and MS_ETCD_IMAGE=rust-ms/etcd:local"
    );
}

fn image() -> GenericImage {
    let reference = image_reference();
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (reference.clone(), "latest".to_owned()),
    };
    GenericImage::new(name, tag)
        .with_exposed_port(CLIENT_PORT.tcp())
        .with_wait_for(WaitFor::Nothing)
}

/// Whether a Docker engine can be asked for containers (saying so if not); panics under
/// `CI=true` if not.
fn docker_available() -> bool {
    let available = std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !available {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "no Docker engine answers `docker info`; under CI=true the etcd tests must run, not be skipped"
            );
        }
        eprintln!(
            "no Docker engine answers `docker info`, and MS_TEST_ETCD_ENDPOINTS is unset: no etcd for the tests"
        );
    }
    available
}

/// A port on 127.0.0.1 that nothing listens on right now, to pin a container's mapping
/// so that a restarted container answers on the same endpoint.
fn free_local_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn member_command(name: &str, initial_cluster: &str) -> Vec<String> {
    [
        "/usr/local/bin/etcd",
        "--name",
        name,
        "--data-dir",
        "/var/lib/etcd/data",
        "--listen-client-urls",
        "http://0.0.0.0:2379",
        "--advertise-client-urls",
        &format!("http://{name}:{CLIENT_PORT}"),
        "--listen-peer-urls",
        "http://0.0.0.0:2380",
        "--initial-advertise-peer-urls",
        &format!("http://{name}:{PEER_PORT}"),
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        "rust-ms-test",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// One etcd member in a container, or an etcd given by `MS_TEST_ETCD_ENDPOINTS`.
pub struct Etcd {
    endpoints: Vec<String>,
    container: Option<ContainerAsync<GenericImage>>,
}

impl Etcd {
    /// Starts a single-member etcd; `None` (after saying so) when it cannot run here, which
    /// a test turns into a failure with [`require!`](crate::require).
    pub async fn start() -> Option<Etcd> {
        if let Ok(list) = std::env::var("MS_TEST_ETCD_ENDPOINTS") {
            let endpoints = registry_etcd::parse_endpoints(&list).expect("MS_TEST_ETCD_ENDPOINTS");
            return Some(Etcd {
                endpoints,
                container: None,
            });
        }
        if !docker_available() {
            return None;
        }
        require_local_image();
        let host_port = free_local_port();
        let etcd = Etcd {
            endpoints: vec![format!("127.0.0.1:{host_port}")],
            container: Some(Self::start_container(host_port).await),
        };
        etcd.wait_ready().await;
        Some(etcd)
    }

    async fn start_container(host_port: u16) -> ContainerAsync<GenericImage> {
        let name = format!("etcd-{}", uuid::Uuid::new_v4().simple());
        let container = image()
            .with_container_name(&name)
            .with_mapped_port(host_port, ContainerPort::Tcp(CLIENT_PORT))
            .with_cmd(member_command(
                &name,
                &format!("{name}=http://{name}:{PEER_PORT}"),
            ))
            .with_startup_timeout(STARTUP)
            .start()
            .await
            .unwrap_or_else(|e| panic!("starting the etcd container failed: {e}"));
        eprintln!("etcd container {name} started, client port 127.0.0.1:{host_port}");
        container
    }

    /// Removes the member with all its data and starts an empty one on the same
    /// endpoint: etcd lost, leases and revisions gone.
    pub async fn replace_with_empty(&mut self) {
        let Some(old) = self.container.take() else {
            return;
        };
        let id = old.id().to_owned();
        let host_port = old
            .get_host_port_ipv4(CLIENT_PORT)
            .await
            .expect("the old member's client port");
        old.rm().await.expect("remove etcd container");
        eprintln!("etcd container {id} removed with its data");
        self.container = Some(Self::start_container(host_port).await);
        self.wait_ready().await;
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoints in GO-MS's `a|b` form, as `--etcd-addr` takes them.
    pub fn etcd_addr(&self) -> String {
        self.endpoints.join("|")
    }

    /// Whether the test owns the container, so it may stop and start it.
    pub fn is_container(&self) -> bool {
        self.container.is_some()
    }

    /// Panics unless the test owns the container, for a test that must `what` etcd (stop,
    /// pause, replace it). Such a test carries
    /// `#[cfg_attr(no_etcd_container, ignore = "...")]`, so reaching this with an etcd from
    /// `MS_TEST_ETCD_ENDPOINTS` means the tests were built without it set.
    #[track_caller]
    pub fn require_container(&self, what: &str) {
        assert!(
            self.is_container(),
            "this test must {what} etcd, but its etcd comes from MS_TEST_ETCD_ENDPOINTS; it should have been built as ignored: rebuild the tests with MS_TEST_ETCD_ENDPOINTS set (or touch tests/build.rs)"
        );
    }

    /// Stops the member; its data stays in the container.
    pub async fn stop(&self) {
        if let Some(container) = &self.container {
            container.stop().await.expect("stop etcd container");
            eprintln!("etcd container {} stopped", container.id());
        }
    }

    /// Freezes the member, as a network cut looks to its clients: nothing answers. Time
    /// goes on meanwhile, so leases whose TTL ran out expire as soon as it resumes.
    pub async fn pause(&self) {
        if let Some(container) = &self.container {
            container.pause().await.expect("pause etcd container");
            eprintln!("etcd container {} paused", container.id());
        }
    }

    pub async fn unpause(&self) {
        if let Some(container) = &self.container {
            container.unpause().await.expect("unpause etcd container");
            eprintln!("etcd container {} unpaused", container.id());
            self.wait_ready().await;
        }
    }

    /// Starts the stopped member again, on the same data and the same endpoint.
    pub async fn restart(&self) {
        if let Some(container) = &self.container {
            container.start().await.expect("start etcd container again");
            eprintln!("etcd container {} started again", container.id());
            self.wait_ready().await;
        }
    }

    async fn wait_ready(&self) {
        wait_ready(&self.endpoints).await
    }

    /// A registry on this etcd under a namespace of its own.
    pub async fn registry(&self, namespace: &str) -> EtcdRegistry {
        EtcdRegistry::connect(
            EtcdOptions::new(self.endpoints.clone())
                .with_namespace(namespace)
                .with_connect_timeout(STARTUP),
        )
        .await
        .expect("connect to test etcd")
    }

    /// A plain client, for doing what an operator would.
    pub async fn client(&self) -> Client {
        Client::connect(&self.endpoints, None)
            .await
            .expect("etcd client")
    }

    /// Registers a node as a program of another language does, with nothing but a key
    /// and a JSON value holding its address (no lease: it stays until the test ends).
    pub async fn register_bare(&self, service: &str, id: &str, address: &str) {
        let value = serde_json::json!({ "address": address }).to_string();
        self.client()
            .await
            .put(format!("go-ms/services/{service}/{id}"), value, None)
            .await
            .expect("write the bare value");
    }
}

/// Waits until a read succeeds on at least one endpoint.
async fn wait_ready(endpoints: &[String]) {
    let deadline = tokio::time::Instant::now() + STARTUP;
    loop {
        let ready = async {
            let mut client = Client::connect(endpoints, None).await.ok()?;
            client
                .get("health", Some(GetOptions::new().with_count_only()))
                .await
                .ok()
        };
        if tokio::time::timeout(Duration::from_secs(3), ready)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("etcd at {endpoints:?} not ready within {STARTUP:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A three-member etcd cluster: containers on a Docker network the fixture creates.
pub struct EtcdCluster {
    members: Vec<(String, ContainerAsync<GenericImage>)>,
}

impl EtcdCluster {
    /// Starts three members in containers; `None` (after saying so) with no Docker engine.
    pub async fn start() -> Option<EtcdCluster> {
        if !docker_available() {
            return None;
        }
        require_local_image();
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let network = format!("rust-ms-test-{tag}");
        let names: Vec<String> = (0..3).map(|n| format!("etcd{n}-{tag}")).collect();
        let initial_cluster = names
            .iter()
            .map(|n| format!("{n}=http://{n}:{PEER_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for name in &names {
            let host_port = free_local_port();
            let container = image()
                .with_container_name(name)
                .with_network(&network)
                .with_mapped_port(host_port, ContainerPort::Tcp(CLIENT_PORT))
                .with_cmd(member_command(name, &initial_cluster))
                .with_startup_timeout(STARTUP)
                .start()
                .await
                .unwrap_or_else(|e| panic!("starting etcd member {name} failed: {e}"));
            members.push((format!("127.0.0.1:{host_port}"), container));
        }
        eprintln!(
            "etcd cluster started on network {network}: {}",
            members
                .iter()
                .map(|(e, _)| e.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let cluster = EtcdCluster { members };
        for (endpoint, _) in &cluster.members {
            wait_ready(std::slice::from_ref(endpoint)).await;
        }
        Some(cluster)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|(e, _)| e.clone()).collect()
    }

    /// Kills member `n` (SIGKILL), leaving the other two to keep quorum.
    pub async fn kill(&self, n: usize) {
        let (endpoint, container) = &self.members[n];
        container
            .stop_with_timeout(Some(0))
            .await
            .expect("kill etcd member");
        eprintln!("etcd member {n} at {endpoint} killed");
    }

    pub async fn registry(&self, namespace: &str) -> EtcdRegistry {
        EtcdRegistry::connect(
            EtcdOptions::new(self.endpoints())
                .with_namespace(namespace)
                .with_connect_timeout(STARTUP),
        )
        .await
        .expect("connect to test etcd cluster")
    }
}

/// The fixture, or a failure when it could not start.
///
/// A test that needs etcd carries `#[cfg_attr(no_etcd, ignore = "...")]` (or
/// `no_etcd_container`), set by tests/build.rs when there is no etcd to be had, so it is
/// reported as ignored rather than run. Reaching `None` here means that build-time answer
/// is stale (Docker stopped, `MS_TEST_ETCD_ENDPOINTS` unset since the build): returning
/// early would report a test that never ran as passed, so this panics instead.
#[macro_export]
macro_rules! require {
    ($fixture:expr) => {
        match $fixture {
            Some(fixture) => fixture,
            None => panic!(
                "no etcd for this test (see above), yet it was built to run: tests/build.rs found Docker or MS_TEST_ETCD_ENDPOINTS when the tests were built. Start Docker, or rebuild the tests (touch tests/build.rs) so that they are reported as ignored"
            ),
        }
    };
}
