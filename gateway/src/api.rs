//! `/api/{service}/{method}`: which calls are taken (POST always, GET for methods safe to
//! repeat, nothing else), then the call pipeline around a unary gRPC call, with JSON
//! transcoded in and out.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use http::uri::PathAndQuery;
use prost_reflect::prost_types::method_options::IdempotencyLevel;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;
use tower::retry::budget::TpsBudget;
use tracing::Instrument;

use crate::admit::admit;
use crate::auth::JwtVerifier;
use crate::codec::DynamicCodec;
use crate::failure::{Failure, REQUEST_ID, json_reply};
use crate::live_routes::LiveRoutes;
use crate::observe::{Door, Observed};
use crate::pipeline::{self, Call, Tried};
use crate::resilience::GuardsByService;
use crate::settings::{GatewaySection, Route};
use crate::transcode;
use cluster::Attempt;
use cluster::Schemas;
use cluster::{ClusterView, InFlight, Node};

/// Everything a call through the gateway needs, shared by all requests.
pub struct Api {
    pub view: ClusterView,
    pub routes: LiveRoutes,
    pub settings: GatewaySection,
    /// Where the gateway's spans go, when traces are exported.
    pub(crate) tracer: Option<telemetry::trace::SdkTracer>,
    pub(crate) meters: Arc<crate::observe::Meters>,
    schemas: Schemas,
    pub(crate) retries: TpsBudget,
    pub(crate) round_robin: AtomicUsize,
    pub(crate) guards: GuardsByService,
    pub(crate) jwt: JwtVerifier,
}

impl Api {
    pub fn new(
        view: ClusterView,
        routes: LiveRoutes,
        settings: GatewaySection,
        tracing: Option<&telemetry::Tracing>,
    ) -> Self {
        let percent = settings.retry_budget_percent.clamp(0.0, 1000.0) / 100.0;
        Self {
            view,
            routes,
            tracer: tracing.map(|t| t.tracer().clone()),
            meters: Arc::default(),
            schemas: Schemas::default(),
            retries: TpsBudget::new(Duration::from_secs(10), 10, percent),
            round_robin: AtomicUsize::new(0),
            guards: GuardsByService::default(),
            // The configuration was validated at load; a key that went bad since leaves
            // JWT routes refusing every call, which the log says.
            jwt: JwtVerifier::from_config(&settings.jwt).unwrap_or_else(|(key, reason)| {
                tracing::error!(%key, %reason, "JWT keys unusable; routes that require a JWT refuse every call");
                JwtVerifier::without_keys()
            }),
            settings,
        }
    }

    /// What `node`'s service offers at its version, by reflection, cached.
    pub async fn schema_of(
        &self,
        node: &Node,
    ) -> Result<Arc<cluster::Schema>, cluster::SchemaError> {
        self.schemas.of(node).await
    }
}

/// The request id: the caller's `x-request-id` when it gave a usable one, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        // The thread's own generator: no system call per request, unlike a v4 UUID's.
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

pub async fn handle(
    State(api): State<Arc<Api>>,
    Path((service, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let id = request_id(request.headers());
    let (parts, body) = request.into_parts();
    let mut observed = Observed::start(
        Door::Api,
        &parts,
        &id,
        api.tracer.as_ref(),
        &api.meters,
        api.settings.access_log,
    );
    let request = Request::from_parts(parts, body);
    // At debug: a span per call costs more than the call's own work on the hot path.
    let span = tracing::debug_span!("api", %service, %method, request_id = %id);
    match call(&api, &service, &method, request, &id, &mut observed)
        .instrument(span.clone())
        .await
    {
        Ok((body, node)) => {
            observed.finish(StatusCode::OK.as_u16(), Code::Ok, Some(&node));
            json_reply(StatusCode::OK, &body, &id, &node)
        }
        Err(failure) => {
            tracing::debug!(parent: &span, code = ?failure.code, message = %failure.message, "call failed");
            observed.finish(
                failure.status.as_u16(),
                failure.code,
                failure.served_by.as_deref(),
            );
            failure.into_http(&id)
        }
    }
}

/// Whether a method may be repeated and read with GET: a route's word first (its
/// per-method `idempotent`, then its `idempotent` list), else the proto's own
/// `idempotency_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MethodPolicy {
    /// Retried on another node after a failure in transit.
    pub idempotent: bool,
    /// Callable with GET and query parameters.
    pub get: bool,
    /// Where the policy comes from: `route`, `proto`, or `default` (neither says).
    pub from: &'static str,
}

impl MethodPolicy {
    pub fn of(route: &Route, method: &MethodDescriptor) -> Self {
        let level = cluster::idempotency_level(method);
        let by_route = route
            .methods
            .get(method.name())
            .and_then(|m| m.idempotent)
            .or_else(|| {
                route
                    .idempotent
                    .iter()
                    .any(|m| m == method.name())
                    .then_some(true)
            });
        match (by_route, level) {
            (Some(idempotent), _) => Self {
                idempotent,
                get: idempotent,
                from: "route",
            },
            (None, IdempotencyLevel::IdempotencyUnknown) => Self {
                idempotent: false,
                get: false,
                from: "default",
            },
            (None, level) => Self {
                idempotent: true,
                get: level == IdempotencyLevel::NoSideEffects,
                from: "proto",
            },
        }
    }

    fn allow(self) -> &'static str {
        if self.get { "GET, POST" } else { "POST" }
    }
}

async fn call(
    api: &Api,
    service: &str,
    method_name: &str,
    request: Request,
    id: &str,
    observed: &mut Observed,
) -> Result<(Value, String), Failure> {
    if service == "gateway" {
        return Err(Failure::new(
            Code::NotFound,
            "the gateway is not a service with methods: /api/{service}/{method} calls the services behind it (GET / lists them)",
        ));
    }
    let nodes = api.view.nodes_of(service);
    if nodes.is_empty() {
        // A service this gateway has seen is down, not misspelt.
        return Err(if api.view.has_seen(service) {
            Failure::new(
                Code::Unavailable,
                format!("no node of {service:?} is registered now"),
            )
        } else {
            Failure::new(
                Code::NotFound,
                format!("unknown service {service:?}: no node of it is registered"),
            )
        });
    }
    observed.service(service);
    let readable = cluster::candidates(&api.view, &nodes, &[]);
    if readable.is_empty() {
        return Err(Failure::new(
            Code::Unavailable,
            format!("no healthy node of {service:?}"),
        ));
    }
    let (method, versions) = find_method(api, service, method_name, &readable).await?;
    observed.method(method.name());
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(Failure::new(
            Code::Unimplemented,
            format!("{method_name} streams; call it over gRPC on the gateway's rpc port"),
        ));
    }
    let route = api.routes.route(service);
    let policy = MethodPolicy::of(&route, &method);
    match *request.method() {
        Method::POST => {}
        Method::GET if policy.get => {}
        Method::GET => {
            return Err(Failure::method_not_allowed(
                policy.allow(),
                format!("{method_name} may change something: call it with POST and a JSON body"),
            ));
        }
        ref other => {
            return Err(Failure::method_not_allowed(
                policy.allow(),
                format!("{other} does not call methods; use {}", policy.allow()),
            ));
        }
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let input =
        transcode::read_input(request, &method.input(), api.settings.max_body_bytes).await?;
    let path = PathAndQuery::from_str(&format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;

    let admitted = admit(
        api,
        service,
        &route,
        method.name(),
        authorization.as_deref(),
    )?;
    let ticket = admitted.pass_breaker(service)?;
    let mut metadata = admitted.claims.clone();
    metadata.push((REQUEST_ID.to_owned(), id.to_owned()));
    let deadline = Instant::now() + route.timeout_of(method.name());
    let call = Call {
        service,
        method: method.name(),
        route: &route,
        idempotent: policy.idempotent,
        deadline: Some(deadline),
    };
    // In a rolling upgrade only the versions that have the method can serve it.
    let nodes = || {
        api.view
            .nodes_of(service)
            .iter()
            .filter(|n| versions.contains(&n.instance.version))
            .cloned()
            .collect()
    };
    let output = method.output();
    let outcome = pipeline::run(api, &call, &observed.trace, nodes, |node, trace| {
        let (path, input, output, metadata) =
            (path.clone(), input.clone(), output.clone(), &metadata);
        async move {
            let _in_flight = InFlight::start(&node);
            unary(&node, path, input, output, deadline, metadata, trace)
                .await
                .map_err(|status| attempt_failed(&node, &status))
        }
    })
    .await;
    ticket.settle(&outcome);
    let (message, node) = outcome?;
    Ok((transcode::to_json(&message)?, node.instance.address.clone()))
}

/// Classify: what a failed unary attempt says, and what the caller is told.
fn attempt_failed(node: &Node, status: &tonic::Status) -> Tried {
    let attempt = Attempt::of_status(status);
    let failure = match attempt {
        Attempt::Answered => Failure::new(status.code(), status.message()),
        Attempt::Refused => Failure::new(
            Code::Internal,
            format!(
                "the reply of {} could not be read by the gateway: {}",
                node.instance.address,
                status.message()
            ),
        )
        .with_status(StatusCode::BAD_GATEWAY),
        Attempt::TimedOut => Failure::new(Code::DeadlineExceeded, status.message()),
        Attempt::NotSent | Attempt::Lost => Failure::new(
            Code::Unavailable,
            format!(
                "node {} failed: {}",
                node.instance.address,
                status.message()
            ),
        ),
    };
    Tried::new(attempt, failure)
}

/// The method as the newest running version of `service` describes it (older nodes skip
/// fields they do not know), and the versions that have it. Each version's schema is
/// read from one of its nodes (once, then cached); versions no healthy node runs any
/// more are forgotten.
async fn find_method(
    api: &Api,
    service: &str,
    name: &str,
    healthy: &[Arc<Node>],
) -> Result<(MethodDescriptor, BTreeSet<String>), Failure> {
    let live: BTreeSet<String> = healthy.iter().map(|n| n.instance.version.clone()).collect();
    api.schemas.forget_versions_except(service, &live);
    let mut found: Option<MethodDescriptor> = None;
    let mut versions = BTreeSet::new();
    let mut known_methods = BTreeSet::new();
    let mut last_error = None;
    let mut newest_first: Vec<&String> = live.iter().collect();
    newest_first.sort_by_key(|v| std::cmp::Reverse(cluster::meta::version_order(v)));
    for version in newest_first {
        let mut schema = None;
        for node in healthy.iter().filter(|n| &n.instance.version == version) {
            match api.schemas.of(node).await {
                Ok(read) => {
                    schema = Some(read);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let Some(schema) = schema else { continue };
        known_methods.extend(schema.method_names().into_iter().map(str::to_owned));
        if let Some(method) = schema.method(name) {
            versions.insert(version.clone());
            found.get_or_insert_with(|| method.clone());
        }
    }
    match (found, last_error) {
        (Some(method), _) => Ok((method, versions)),
        (None, Some(error)) if known_methods.is_empty() => Err(Failure::new(
            Code::Unavailable,
            format!("cannot learn the methods of {service:?}: {error}"),
        )),
        (None, _) => Err(Failure::new(
            Code::NotFound,
            format!(
                "unknown method {name:?} of {service:?}; it has {}",
                known_methods.into_iter().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}
async fn unary(
    node: &Node,
    path: PathAndQuery,
    input: DynamicMessage,
    output: MessageDescriptor,
    deadline: Instant,
    metadata: &[(String, String)],
    trace: http::HeaderMap,
) -> Result<DynamicMessage, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(node.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
    // A signed call binds its whole body too: a captured credential cannot carry another.
    let digest = node
        .channel
        .signs()
        .then(|| node::credentials::body_digest(&prost::Message::encode_to_vec(&input)));
    let mut request = tonic::Request::new(input);
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    if let Some(Ok(digest)) = digest.map(|d| d.parse()) {
        request
            .metadata_mut()
            .insert(node::credentials::BODY_HEADER, digest);
    }
    for (key, value) in metadata {
        if let (Ok(key), Ok(mut value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse::<tonic::metadata::MetadataValue<_>>(),
        ) {
            // The request id and claims are new on every call: sent as literals, they
            // leave HTTP/2's header table to the headers that repeat.
            value.set_sensitive(true);
            request.metadata_mut().insert(key, value);
        }
    }
    for (name, value) in &trace {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
            value
                .to_str()
                .map(str::parse::<tonic::metadata::MetadataValue<_>>),
        ) && let Ok(mut value) = value
        {
            value.set_sensitive(true);
            request.metadata_mut().insert(key, value);
        }
    }
    grpc.unary(request, path, DynamicCodec::new(output))
        .await
        .map(tonic::Response::into_inner)
}
