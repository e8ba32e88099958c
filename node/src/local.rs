//! Several nodes in one process on one in-memory registry, started and stopped together:
//! what a service's tests start (its own service, those it calls, a gateway), and what
//! the dev stack runs.

use std::collections::BTreeSet;
use std::time::Duration;

use config::NodeConfig;
use registry::{Instance, Registry, Scope};
use registry_memory::MemoryRegistry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::credentials::ClusterCredentials;
use crate::{Connected, Launch, NodeError, Service, ServiceChannel};

/// How long [`LocalCluster::start`] waits for a node to register.
const REGISTER_PATIENCE: Duration = Duration::from_secs(30);

/// Nodes of any services on one in-memory registry, on loopback ports the OS chooses.
/// Dropping it stops them; [`LocalCluster::stop`] also waits for them and reports the
/// first that failed.
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), node::NodeError> {
/// use node::{LocalCluster, Service};
///
/// let mut cluster = LocalCluster::new();
/// let address = cluster.start(Service::new("greeter", "1.0.0")).await?;
/// assert!(address.starts_with("127.0.0.1:"));
/// cluster.stop().await
/// # }
/// ```
pub struct LocalCluster {
    registry: MemoryRegistry,
    config: NodeConfig,
    nodes: JoinSet<Result<(), NodeError>>,
    shutdown: CancellationToken,
}

impl Default for LocalCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalCluster {
    /// An empty cluster whose nodes listen on `127.0.0.1`, each on a port of its own.
    pub fn new() -> Self {
        Self::with_config(NodeConfig {
            rpc_port: 0,
            http_port: 0,
            listen_host: "127.0.0.1".to_owned(),
            advertise_host: "127.0.0.1".to_owned(),
            shutdown_grace: Duration::from_secs(2),
            ..NodeConfig::default()
        })
    }

    /// An empty cluster whose nodes take `config` (a test's own deadlines, the dev
    /// stack's loaded configuration).
    pub fn with_config(config: NodeConfig) -> Self {
        Self {
            registry: MemoryRegistry::new(),
            config,
            nodes: JoinSet::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The registry every node of the cluster is on.
    pub fn registry(&self) -> &MemoryRegistry {
        &self.registry
    }

    /// The configuration the next node takes; change it between starts (`http_port`
    /// for a gateway on a fixed port, say).
    pub fn config_mut(&mut self) -> &mut NodeConfig {
        &mut self.config
    }

    /// Starts a node of `service` with its default settings and returns its address
    /// once the registry lists it.
    pub async fn start<S: Default + Send + 'static>(
        &mut self,
        service: Service<S>,
    ) -> Result<String, NodeError> {
        self.start_with(service, S::default()).await
    }

    /// [`LocalCluster::start`] with `settings` for the service's own sections.
    pub async fn start_with<S: Send + 'static>(
        &mut self,
        service: Service<S>,
        settings: S,
    ) -> Result<String, NodeError> {
        let name = service.name().to_owned();
        let before = self.addresses(&name).await?;
        self.spawn(service, settings);
        let deadline = tokio::time::Instant::now() + REGISTER_PATIENCE;
        loop {
            if let Some(address) = self.addresses(&name).await?.difference(&before).next() {
                return Ok(address.clone());
            }
            // A node that failed to start says why.
            if let Some(ended) = self.nodes.try_join_next() {
                ended_as_error(ended)?;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Unsupported(format!(
                    "a node of {name} did not register within {REGISTER_PATIENCE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts a node of `service` without waiting for it (the dev stack starts them all
    /// at once).
    pub fn spawn<S: Send + 'static>(&mut self, service: Service<S>, settings: S) {
        let launch = Launch {
            config: self.config.clone(),
            settings,
            backend: Connected::Memory(self.registry.clone()),
            shutdown: self.shutdown.clone(),
        };
        let span = tracing::info_span!("node", service = %service.name());
        self.nodes
            .spawn(tracing::Instrument::instrument(service.serve(launch), span));
    }

    /// A channel to every node of `service`, as `context.client(service)` gives a node.
    pub async fn client(&self, service: &str) -> Result<ServiceChannel, NodeError> {
        let options = cluster::ClientOptions::from_config(
            &self.config.client,
            service,
            ClusterCredentials::default(),
        );
        let registry: std::sync::Arc<dyn Registry> = std::sync::Arc::new(self.registry.clone());
        crate::service::connect_client(registry, service, options, &self.shutdown).await
    }

    /// The HTTP address a node of `service` registered (a gateway's public port).
    pub async fn http_address(&self, service: &str) -> Result<Option<String>, NodeError> {
        Ok(self
            .instances(service)
            .await?
            .into_iter()
            .find_map(|node| node.metadata.get(cluster::meta::HTTP).cloned()))
    }

    /// Runs until one node ends: a failed node stops the others and is the error; the
    /// cluster also ends, with `Ok`, when every node has left (after a shutdown signal).
    pub async fn run_until_one_fails(mut self) -> Result<(), NodeError> {
        let mut first_error = None;
        while let Some(ended) = self.nodes.join_next().await {
            if let Err(error) = ended_as_error(ended) {
                self.shutdown.cancel();
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The token that stops every node; cancelled by [`LocalCluster::stop`] and on drop.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Stops every node (each deregisters, then drains) and waits for them; the first
    /// failure of any node, if one failed.
    pub async fn stop(self) -> Result<(), NodeError> {
        self.shutdown.cancel();
        self.run_until_one_fails().await
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>, NodeError> {
        self.registry
            .snapshot(&Scope::service(service))
            .await
            .map(|snapshot| snapshot.instances)
            .map_err(|source| NodeError::Registry {
                backend: "memory".to_owned(),
                source,
            })
    }

    async fn addresses(&self, service: &str) -> Result<BTreeSet<String>, NodeError> {
        Ok(self
            .instances(service)
            .await?
            .into_iter()
            .map(|node| node.address)
            .collect())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn ended_as_error(
    ended: Result<Result<(), NodeError>, tokio::task::JoinError>,
) -> Result<(), NodeError> {
    match ended {
        Ok(result) => result,
        Err(join) => Err(NodeError::Serve {
            what: "a node",
            cause: join.to_string(),
        }),
    }
}

/// What the gateway answered to a [`LocalCluster::post`].
#[cfg(feature = "testing")]
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// The body as JSON; `Null` when it is not JSON.
    pub body: serde_json::Value,
    pub text: String,
}

#[cfg(feature = "testing")]
impl LocalCluster {
    /// `POST path` with the JSON `body` and `headers` on the public HTTP port of the
    /// cluster's gateway (`/api/order/Create`), over HTTP/1.1 as a front end sends it.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Result<HttpReply, NodeError> {
        use http_body_util::BodyExt;

        let failed = |cause: String| NodeError::Serve {
            what: "a call to the gateway's HTTP port",
            cause,
        };
        let address = self
            .http_address("gateway")
            .await?
            .ok_or_else(|| failed("no gateway in the cluster serves HTTP".to_owned()))?;
        let mut request = http::Request::post(format!("http://{address}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .map_err(|e| failed(e.to_string()))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let reply = client
            .request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = reply.status().as_u16();
        let bytes = reply
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(HttpReply {
            status,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            text,
        })
    }
}
