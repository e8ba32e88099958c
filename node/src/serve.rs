//! Serving one node: listen, serve gRPC (with health and reflection) and optional HTTP,
//! register, log membership, and on shutdown leave first, then drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use config::NodeConfig;
use registry::{Instance, Registration, Registry};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::admin::NodeAdmin;
use crate::advertise::{join_host_port, resolve_host};
use crate::credentials::{ClusterCredentials, RequireCredentialLayer};
use crate::observe::ObserveLayer;
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

/// Mirrors `readiness` into grpc.health.v1 for `services` until it is dropped or
/// `stop` says the node is leaving.
async fn report_readiness(
    mut readiness: tokio::sync::watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    services: Vec<String>,
    admin: Arc<NodeAdmin>,
    stop: CancellationToken,
) {
    loop {
        let serving = *readiness.borrow_and_update();
        admin.serving(serving);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in &services {
            health.set_service_status(name, status).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = readiness.changed() => if changed.is_err() { return },
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
    mut spec: NodeSpec,
    config: &NodeConfig,
    registry: Arc<dyn Registry>,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let admin = Arc::new(crate::admin::process().node(&spec.service, &spec.version));
    let own_cluster_view = spec.admin_views.iter().any(|(name, _)| name == "cluster");
    for (name, view) in spec.admin_views.drain(..) {
        admin.publish(&name, 1, view);
    }
    let host = resolve_host(&config.advertise_host);
    let rpc_listener = bind(&config.listen_host, config.rpc_port).await?;
    let rpc_bound = bound_address(&rpc_listener)?;
    let rpc_address = join_host_port(&host, rpc_bound.port());

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &spec.grpc_services {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    // Reflection in both protocol versions: many tools still speak only v1alpha.
    let reflection = || {
        spec.descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let reflection_failed = |e: tonic_reflection::server::Error| NodeError::Serve {
        what: "building gRPC reflection",
        cause: e.to_string(),
    };
    let mut routes = spec.routes.add_service(health_service);
    if spec.reflection {
        routes = routes
            .add_service(reflection().build_v1().map_err(reflection_failed)?)
            .add_service(reflection().build_v1alpha().map_err(reflection_failed)?);
    }

    let drain = CancellationToken::new();
    let mut servers = JoinSet::new();
    let rpc_drain = drain.clone();
    // The gateway's callers come from outside: neither signature nor client certificate.
    let cluster = if spec.require_call_credential {
        ClusterCredentials::from_config(&config.security)?
    } else {
        ClusterCredentials::default()
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = cluster.server_tls() {
        server = server.tls_config(tls).map_err(|e| NodeError::Tls {
            key: "security.mtls".to_owned(),
            cause: e.to_string(),
        })?;
    }
    let unauthenticated =
        spec.require_call_credential && !cluster.key.is_set() && cluster.tls.is_none();
    let credentials = RequireCredentialLayer::new(cluster.key, config.security.max_clock_skew);
    let service_name = spec.service.clone();
    let call_spans = spec.call_spans;
    // A node that opens its own call spans (the gateway) records its calls itself too.
    let observe = ObserveLayer::new(&spec.service, spec.tracing.as_ref(), spec.call_spans);
    // One span per call, so that whatever a handler logs says which call it was in.
    let calls = tower_http::trace::TraceLayer::new(caller_errors_are_answers())
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN))
        .make_span_with(move |request: &http::Request<_>| {
            if !call_spans {
                return tracing::Span::none();
            }
            let request_id = request
                .headers()
                .get(crate::REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!(
                "call",
                service = %service_name,
                method = %request.uri().path(),
                request_id,
            )
        });
    servers.spawn(
        async move {
            server
                .layer(observe)
                .layer(calls)
                .layer(credentials)
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    // Replies (stream messages above all) leave at once, not after an ACK.
                    tonic::transport::server::TcpIncoming::from(rpc_listener)
                        .with_nodelay(Some(true)),
                    rpc_drain.cancelled_owned(),
                )
                .await
                .map_err(|e| NodeError::Serve {
                    what: "the gRPC server",
                    cause: e.to_string(),
                })
        }
        .in_current_span(),
    );
    // The bound address and the one others dial, in that order: tools read the last.
    tracing::info!(
        "Server [{}] rpc listening on {rpc_bound} as {rpc_address}",
        spec.service
    );
    if unauthenticated && !rpc_bound.ip().is_loopback() {
        tracing::warn!(
            "Server [{}] accepts calls from anyone on {rpc_bound}: set security.call_key or security.mtls, or listen_host = \"127.0.0.1\"",
            spec.service
        );
    }

    let mut instance = Instance::new(&spec.service, &rpc_address).with_version(&spec.version);
    instance.metadata = spec.metadata;
    if !spec.grpc_services.is_empty() {
        instance.metadata.insert(
            cluster::meta::GRPC_SERVICES.to_owned(),
            spec.grpc_services.join(","),
        );
    }
    // Where the operator finds this node's process, which may not be where they expect
    // (the default port was taken, or port 0).
    if let Some(admin) = crate::admin::process().published_address(&host) {
        instance
            .metadata
            .insert(crate::admin::METADATA_KEY.to_owned(), admin);
    }
    if let Some(http) = spec.http {
        let http_bound = bound_address(&http.listener)?;
        let http_address = join_host_port(&host, http_bound.port());
        instance
            .metadata
            .insert(cluster::meta::HTTP.to_owned(), http_address.clone());
        let http_drain = drain.clone();
        let limits = config.http.clone();
        servers.spawn(
            async move {
                crate::http_server::serve(http.listener, http.router, limits, http_drain).await;
                Ok(())
            }
            .in_current_span(),
        );
        tracing::info!(
            "Server [{}] http listening on {http_bound} as {http_address}",
            spec.service
        );
    }

    let registration = registry
        .register(Registration::new(instance.clone()).with_ttl(config.registry.ttl))
        .await
        .map_err(|source| NodeError::Registry {
            backend: registry.describe(),
            source,
        })?;
    tracing::info!(
        "Server [{}] registered as {} in {}",
        spec.service,
        instance.id,
        registry.describe()
    );
    admin.registered();
    metrics::gauge!(telemetry::prometheus::names::NODE_INFO,
        "service" => spec.service.clone(), "version" => spec.version.clone())
    .set(1.0);
    let watching = CancellationToken::new();
    let known = membership::Known::default();
    let view_of = known.clone();
    if !own_cluster_view {
        admin.publish(
            "cluster",
            0,
            Arc::new(move || {
                let view = view_of.to_json();
                Box::pin(async move { view })
            }),
        );
    }
    let listed = admin.clone();
    let membership = tokio::spawn(
        membership::log_membership(
            registry.clone(),
            instance,
            known,
            spec.join_gate.clone(),
            move || listed.listed(),
            watching.clone(),
        )
        .in_current_span(),
    );
    let readiness = spec.readiness.map(|readiness| {
        tokio::spawn(report_readiness(
            readiness,
            health.clone(),
            spec.grpc_services.clone(),
            admin.clone(),
            watching.clone(),
        ))
    });

    // Run until asked to stop, or until a server fails on its own.
    let failed = tokio::select! {
        _ = shutdown.cancelled() => None,
        ended = servers.join_next() => Some(ended),
    };

    // Not ready first (load balancers and probes stop sending), then leave, so that
    // nobody sends new work while we drain.
    admin.draining();
    watching.cancel();
    if let Some(readiness) = readiness {
        let _ = readiness.await;
    }
    if let Err(error) = registration.deregister().await {
        tracing::warn!(%error, "deregistering failed; the entry expires with its lease");
    }
    for name in &spec.grpc_services {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    drain.cancel();
    let _ = membership.await;
    if let Some(ended) = failed {
        return match ended {
            Some(Ok(Err(error))) => Err(error),
            _ => Err(NodeError::Serve {
                what: "a server",
                cause: "stopped unexpectedly".to_owned(),
            }),
        };
    }
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while let Some(ended) = servers.join_next().await {
            if let Ok(Err(error)) = ended {
                tracing::warn!(%error, "server ended with an error while draining");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "in-flight requests still running after the shutdown grace; stopping anyway"
        );
        servers.abort_all();
    }
    if let Some(tracing) = spec.tracing.take() {
        // Flushing waits on the exporter: off the async threads.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
    tracing::info!("Server [{}] stopped", spec.service);
    Ok(())
}

/// Statuses that answer a bad request (wrong input, no such thing, no right to it) are
/// the service doing its job; only the rest are logged as failures.
fn caller_errors_are_answers()
-> tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures> {
    use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier};
    let classifier = [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::FailedPrecondition,
        GrpcCode::OutOfRange,
        GrpcCode::Unauthenticated,
    ]
    .into_iter()
    .fold(
        GrpcErrorsAsFailures::new(),
        GrpcErrorsAsFailures::with_success,
    );
    SharedClassifier::new(classifier)
}
