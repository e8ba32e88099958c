//! Serving one node: listen, serve gRPC (with health and reflection) and optional HTTP,
//! register, log membership, and on shutdown leave first, then drain.
//!
//! In two steps: [`build`] turns the spec and configuration into a node whose ports are
//! bound and whose servers are assembled; [`run`] serves, registers and drains it.

mod build;
mod run;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use config::NodeConfig;
use registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{NodeError, membership};

/// What a node is and what it serves.
pub struct NodeSpec {
    /// The service name it registers under: `gateway`, `user`, `order`.
    pub service: String,
    pub version: String,
    /// The node's own gRPC services; health and reflection are added for it.
    pub routes: Routes,
    /// What answers the gRPC paths `routes` do not claim (the gateway's pass-through).
    /// Its calls are its own: the runtime's call spans, call metrics and deadline scope
    /// cover `routes`, not these. The call credential is checked for both.
    pub fallback: Option<axum::Router>,
    /// Full names of the gRPC services in `routes` (`user.v1.UserService`), for health
    /// and for the registry, so that callers can find who serves what.
    pub grpc_services: Vec<String>,
    /// Encoded `FileDescriptorSet`s describing `routes`, served by reflection.
    pub descriptor_sets: Vec<&'static [u8]>,
    /// An HTTP server beside gRPC (the gateway's).
    pub http: Option<HttpServer>,
    /// Extra instance metadata.
    pub metadata: BTreeMap<String, String>,
    /// Refuse calls without a valid call credential when `security.call_key` is set.
    /// The gateway turns this off: its callers are outside the cluster.
    pub require_call_credential: bool,
    /// Whether the node can do its work right now, as grpc.health.v1 reports it for
    /// `grpc_services`: a service sends `false` while, say, its store is unreachable,
    /// and the gateway's active checks take the node out of rotation until `true`.
    /// Without it the node reports SERVING from start to shutdown.
    pub readiness: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where the node's spans go, when a collector is configured.
    pub tracing: Option<telemetry::Tracing>,
    /// Views the node publishes on the admin port (`/admin/{name}`), beside the view of
    /// the registry every node publishes as `cluster`.
    pub admin_views: Vec<(String, crate::admin::View)>,
    /// Pages the node adds to the admin port (`/{name}`, their routes under
    /// `/admin/{name}/`).
    pub admin_pages: Vec<(String, crate::admin::AdminPage)>,
    /// What a join line waits for (see [`membership::JoinGate`]); none: it is logged as
    /// the registry tells of the join.
    pub join_gate: Option<membership::JoinGate>,
    /// The traffic rules in force: the headers they read are carried from each call the
    /// node serves to the calls its handler makes.
    pub traffic: Option<cluster::traffic::LiveTraffic>,
}

pub struct HttpServer {
    pub listener: TcpListener,
    pub router: axum::Router,
}

impl NodeSpec {
    pub fn new(service: impl Into<String>, version: impl Into<String>, routes: Routes) -> Self {
        Self {
            service: service.into(),
            version: version.into(),
            routes,
            fallback: None,
            grpc_services: Vec::new(),
            descriptor_sets: Vec::new(),
            http: None,
            metadata: BTreeMap::new(),
            require_call_credential: true,
            readiness: None,
            tracing: None,
            admin_views: Vec::new(),
            admin_pages: Vec::new(),
            join_gate: None,
            traffic: None,
        }
    }
}

/// Binds `host:port` (port 0: the OS chooses); `host` is an IP address.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, NodeError> {
    let address = format!("{host}:{port}");
    let ip: std::net::IpAddr = host.parse().map_err(|_| NodeError::Bind {
        address: address.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP address"),
    })?;
    TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .map_err(|source| NodeError::Bind { address, source })
}

fn bound_address(listener: &TcpListener) -> Result<SocketAddr, NodeError> {
    listener.local_addr().map_err(|e| NodeError::Serve {
        what: "reading the bound address",
        cause: e.to_string(),
    })
}

/// Runs a node until `shutdown` is cancelled, then deregisters, drains in-flight requests
/// for at most `shutdown_grace`, and returns. Errors only when the node cannot start or
/// a server fails.
pub async fn run_node(
    spec: NodeSpec,
    config: &NodeConfig,
    registry: Arc<dyn Registry>,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let node = build::BuiltNode::build(spec, config).await?;
    node.run(config, registry, shutdown).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use registry::Scope;
    use tower::ServiceExt;

    use super::*;

    /// What the fallback saw of each call: its path, and whether it ran inside the
    /// runtime's per-call deadline scope.
    type Seen = Arc<Mutex<Vec<(String, bool)>>>;

    fn recording_fallback(seen: Seen) -> axum::Router {
        axum::Router::new().fallback(move |request: axum::extract::Request| {
            let seen = seen.clone();
            async move {
                let in_scope = cluster::deadline::serving().is_some();
                if let Ok(mut seen) = seen.lock() {
                    seen.push((request.uri().path().to_owned(), in_scope));
                }
                (
                    [("content-type", "application/grpc"), ("grpc-status", "0")],
                    "",
                )
            }
        })
    }

    async fn registered_address(registry: &dyn Registry, service: &str) -> String {
        for _ in 0..200 {
            if let Ok(snapshot) = registry.snapshot(&Scope::service(service)).await
                && let Some(node) = snapshot.instances.into_iter().next()
            {
                return node.address;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the node never registered");
    }

    #[tokio::test]
    async fn a_node_that_only_forwards_leaves_reflection_and_its_calls_to_its_fallback() {
        let seen = Seen::default();
        let mut spec = NodeSpec::new("forwarder", "1.0.0", Routes::default());
        spec.fallback = Some(recording_fallback(seen.clone()));
        let config = NodeConfig {
            rpc_port: 0,
            listen_host: "127.0.0.1".to_owned(),
            advertise_host: "127.0.0.1".to_owned(),
            ..Default::default()
        };
        let registry: Arc<dyn Registry> = Arc::new(registry_memory::MemoryRegistry::new());
        let shutdown = CancellationToken::new();
        let node = tokio::spawn({
            let (registry, shutdown) = (registry.clone(), shutdown.clone());
            async move { run_node(spec, &config, registry, shutdown).await }
        });
        let address = registered_address(registry.as_ref(), "forwarder").await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("a loopback endpoint")
            .connect()
            .await
            .expect("the node's rpc port");

        for path in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/shop.v1.Shelf/List",
        ] {
            let request = http::Request::builder()
                .uri(format!("http://{address}{path}"))
                .header("content-type", "application/grpc")
                .header(cluster::deadline::GRPC_TIMEOUT, "5S")
                .body(tonic::body::Body::empty())
                .expect("a request");
            let reply = channel.clone().oneshot(request).await.expect("a reply");
            assert_eq!(reply.status(), http::StatusCode::OK, "{path}");
        }
        // The runtime still answers health for the node itself.
        let health = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health answers");
        assert_eq!(health.into_inner().status, 1, "SERVING");

        let seen = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
        assert_eq!(
            seen,
            [
                (
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned(),
                    false
                ),
                ("/shop.v1.Shelf/List".to_owned(), false),
            ],
            "both calls reach the fallback, outside the runtime's call layers"
        );
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), node).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    }
}
