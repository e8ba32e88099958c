//! From a [`NodeSpec`] and its configuration to a [`BuiltNode`]: the admin state, the
//! bound gRPC port, the gRPC server with its layers (not yet polled), and the instance
//! the node will register as.

use std::collections::BTreeMap;
use std::sync::Arc;

use config::NodeConfig;
use futures_util::future::BoxFuture;
use registry::Instance;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use super::{HttpServer, NodeSpec, bind, bound_address};
use crate::NodeError;
use crate::admin::{NodeAdmin, View};
use crate::advertise::{join_host_port, resolve_host};
use crate::credentials::{ClusterCredentials, RequireCredentialLayer};
use crate::membership::JoinGate;
use crate::observe::ObserveLayer;

/// A node ready to serve: its ports bound and its servers assembled, but nothing served
/// and nothing registered yet.
pub(super) struct BuiltNode {
    pub(super) node: Node,
    pub(super) servers: Servers,
}

/// Who the node is and what it reports, for registering, leaving and draining.
pub(super) struct Node {
    pub(super) service: String,
    pub(super) version: String,
    pub(super) admin: Arc<NodeAdmin>,
    /// The spec published its own `cluster` view (the gateway's, with health).
    pub(super) own_cluster_view: bool,
    pub(super) health: HealthReporter,
    pub(super) grpc_services: Vec<String>,
    /// What the node registers as.
    pub(super) instance: Instance,
    pub(super) readiness: Option<tokio::sync::watch::Receiver<bool>>,
    pub(super) join_gate: Option<JoinGate>,
    pub(super) tracing: Option<telemetry::Tracing>,
    /// Cancelled once the node has left: the servers finish what is in flight and stop.
    pub(super) drain: CancellationToken,
}

/// The node's servers, assembled but not started (a future that is not polled yet).
pub(super) struct Servers {
    /// The gRPC server, serving until the node's `drain`.
    pub(super) grpc: BoxFuture<'static, Result<(), NodeError>>,
    pub(super) http: Option<HttpServer>,
    /// The HTTP port's TLS, read before the node registers: a bad file stops start-up.
    pub(super) http_tls: Option<crate::http_tls::PublicTls>,
}

/// How the gRPC server treats calls: who may call, and what is recorded of each call.
struct CallPolicy<'a> {
    service: &'a str,
    require_call_credential: bool,
    tracing: Option<&'a telemetry::Tracing>,
    traffic: Option<&'a cluster::traffic::LiveTraffic>,
}

impl BuiltNode {
    pub(super) async fn build(spec: NodeSpec, config: &NodeConfig) -> Result<Self, NodeError> {
        let NodeSpec {
            service,
            version,
            routes,
            fallback,
            grpc_services,
            descriptor_sets,
            http,
            metadata,
            require_call_credential,
            readiness,
            tracing,
            admin_views,
            admin_pages,
            join_gate,
            traffic,
        } = spec;
        let (admin, own_cluster_view) = open_admin(&service, &version, admin_views);
        for (name, page) in admin_pages {
            admin.add_page(&name, page);
        }
        let host = resolve_host(&config.advertise_host);
        let rpc_listener = bind(&config.listen_host, config.rpc_port).await?;
        let rpc_bound = bound_address(&rpc_listener)?;
        let rpc_address = join_host_port(&host, rpc_bound.port());

        let (health, health_service) = health_serving(&grpc_services).await;
        // A node that only forwards (a fallback and no services of its own: the gateway)
        // has nothing to describe; its fallback answers reflection if anything does.
        let reflects = !grpc_services.is_empty() || fallback.is_none();
        let reflected = reflects.then_some(descriptor_sets.as_slice());
        let routes = with_health_and_reflection(routes, health_service, reflected)?;
        let drain = CancellationToken::new();
        let policy = CallPolicy {
            service: &service,
            require_call_credential,
            tracing: tracing.as_ref(),
            traffic: traffic.as_ref(),
        };
        // Before anything is served or logged: a certificate that cannot be used is the
        // one line a failed start says.
        let http_tls = match (&http, config.http.tls.files()) {
            (Some(_), Ok(Some((cert, key)))) => Some(
                crate::http_tls::PublicTls::load(cert, key).map_err(|error| NodeError::Serve {
                    what: "the HTTP port",
                    cause: error.to_string(),
                })?,
            ),
            (Some(_), Err(reason)) => {
                return Err(NodeError::Serve {
                    what: "the HTTP port",
                    cause: format!("http.tls {reason}"),
                });
            }
            _ => None,
        };
        let (grpc, unauthenticated) = grpc_server(
            policy,
            config,
            routes,
            fallback,
            rpc_listener,
            drain.clone(),
        )?;
        // The bound address and the one others dial, in that order: tools read the last.
        tracing::info!("Server [{service}] rpc listening on {rpc_bound} as {rpc_address}");
        if unauthenticated && !rpc_bound.ip().is_loopback() {
            tracing::warn!(
                "Server [{service}] accepts calls from anyone on {rpc_bound}: set security.call_key or security.mtls, or listen_host = \"127.0.0.1\""
            );
        }

        let mut instance = Instance::new(&service, &rpc_address).with_version(&version);
        instance.metadata = node_metadata(metadata, &config.labels, &grpc_services, &host);
        if let Some(http) = &http {
            let http_bound = bound_address(&http.listener)?;
            let http_address = join_host_port(&host, http_bound.port());
            instance
                .metadata
                .insert(cluster::meta::HTTP.to_owned(), http_address.clone());
            tracing::info!("Server [{service}] http listening on {http_bound} as {http_address}");
            if let Ok(Some((cert, _))) = config.http.tls.files() {
                tracing::info!("Server [{service}] http speaks TLS with {}", cert.display());
            }
        }
        let node = Node {
            service,
            version,
            admin,
            own_cluster_view,
            health,
            grpc_services,
            instance,
            readiness,
            join_gate,
            tracing,
            drain,
        };
        Ok(Self {
            node,
            servers: Servers {
                grpc,
                http,
                http_tls,
            },
        })
    }
}

/// The node's entry in the process's admin state, with the spec's views published; also
/// whether one of them is the `cluster` view every node otherwise publishes itself.
fn open_admin(service: &str, version: &str, views: Vec<(String, View)>) -> (Arc<NodeAdmin>, bool) {
    let admin = Arc::new(crate::admin::process().node(service, version));
    let own_cluster_view = views.iter().any(|(name, _)| name == "cluster");
    for (name, view) in views {
        admin.publish(&name, 1, view);
    }
    (admin, own_cluster_view)
}

/// grpc.health.v1 with every one of `services` SERVING.
async fn health_serving(
    services: &[String],
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in services {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    (health, health_service)
}

/// The node's routes plus health, plus reflection of `reflected` when it is given.
fn with_health_and_reflection(
    routes: Routes,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    reflected: Option<&[&'static [u8]]>,
) -> Result<Routes, NodeError> {
    let routes = routes.add_service(health);
    let Some(descriptor_sets) = reflected else {
        return Ok(routes);
    };
    // The files' bytes as compiled, so that their custom options reach the reader.
    let reflection = descriptor_sets.iter().fold(
        reflect::server::Builder::new()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |builder, set| builder.register_encoded_file_descriptor_set(*set),
    );
    let reflection_failed = |e: reflect::server::BuildError| NodeError::Serve {
        what: "building gRPC reflection",
        cause: e.to_string(),
    };
    // Reflection in both protocol versions: many tools still speak only v1alpha.
    Ok(routes
        .add_service(reflection.clone().build_v1().map_err(reflection_failed)?)
        .add_service(reflection.build_v1alpha().map_err(reflection_failed)?))
}

/// The gRPC server on `listener`, serving until `drain`, and whether it accepts calls
/// that carry no credential at all.
fn grpc_server(
    policy: CallPolicy<'_>,
    config: &NodeConfig,
    routes: Routes,
    fallback: Option<axum::Router>,
    listener: TcpListener,
    drain: CancellationToken,
) -> Result<(BoxFuture<'static, Result<(), NodeError>>, bool), NodeError> {
    // The gateway's callers come from outside: neither signature nor client certificate.
    let cluster = if policy.require_call_credential {
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
        policy.require_call_credential && !cluster.key.is_set() && cluster.tls.is_none();
    // Without a call key there is nothing to check: no layer at all, not one that passes.
    let credentials = cluster
        .key
        .is_set()
        .then(|| RequireCredentialLayer::new(cluster.key, config.security.max_clock_skew));
    let observe = ObserveLayer::new(policy.service, policy.tracing, policy.traffic.cloned());
    let calls = tower_http::trace::TraceLayer::new(caller_errors_are_answers())
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN))
        .make_span_with(CallSpan {
            service: policy.service.to_owned(),
        });
    let credentials = tower::util::option_layer(credentials);
    // Spans and metrics wrap the node's own services (and the UNIMPLEMENTED answer to a
    // path none claims), a refused call included; a fallback set afterwards is outside
    // them and records its own. Both check the call credential.
    let mut router = routes
        .into_axum_router()
        .layer(credentials.clone())
        .layer(calls)
        .layer(observe);
    if let Some(fallback) = fallback {
        router = router.fallback_service(tower::Layer::layer(&credentials, fallback));
    }
    let serving = async move {
        server
            .add_routes(Routes::from(router))
            .serve_with_incoming_shutdown(
                // Replies (stream messages above all) leave at once, not after an ACK.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                drain.cancelled_owned(),
            )
            .await
            .map_err(|e| NodeError::Serve {
                what: "the gRPC server",
                cause: e.to_string(),
            })
    };
    Ok((Box::pin(serving.in_current_span()), unauthenticated))
}

/// One span per call, so that whatever a handler logs says which call it was in.
#[derive(Clone)]
struct CallSpan {
    service: String,
}

impl<B> tower_http::trace::MakeSpan<B> for CallSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        let request_id = request
            .headers()
            .get(crate::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!(
            "call",
            service = %self.service,
            method = %request.uri().path(),
            request_id,
        )
    }
}

/// The spec's metadata, the configured labels over it, and what the runtime publishes:
/// the gRPC services served and the admin port's address.
fn node_metadata(
    mut metadata: BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    grpc_services: &[String],
    host: &str,
) -> BTreeMap<String, String> {
    metadata.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    if !grpc_services.is_empty() {
        metadata.insert(
            cluster::meta::GRPC_SERVICES.to_owned(),
            grpc_services.join(","),
        );
    }
    // Where the operator finds this node's process, which may not be where they expect
    // (the default port was taken, or port 0).
    if let Some(admin) = crate::admin::process().published_address(host) {
        metadata.insert(crate::admin::METADATA_KEY.to_owned(), admin);
    }
    metadata
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
