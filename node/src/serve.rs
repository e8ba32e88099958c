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
    /// Whether the node serves gRPC reflection of `descriptor_sets` (v1 and v1alpha).
    /// The gateway answers reflection itself, for the whole cluster.
    pub reflection: bool,
    /// Whether the runtime opens a span per call (service, method, request id). The
    /// gateway opens its own, at debug, off its hot path.
    pub call_spans: bool,
    /// Where the node's spans go, when a collector is configured.
    pub tracing: Option<telemetry::Tracing>,
    /// Views the node publishes on the admin port (`/admin/{name}`), beside the view of
    /// the registry every node publishes as `cluster`.
    pub admin_views: Vec<(String, crate::admin::View)>,
    /// What a join line waits for (see [`membership::JoinGate`]); none: it is logged as
    /// the registry tells of the join.
    pub join_gate: Option<membership::JoinGate>,
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
            grpc_services: Vec::new(),
            descriptor_sets: Vec::new(),
            http: None,
            metadata: BTreeMap::new(),
            require_call_credential: true,
            readiness: None,
            reflection: true,
            call_spans: true,
            tracing: None,
            admin_views: Vec::new(),
            join_gate: None,
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
