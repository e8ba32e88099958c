//! `/api/{service}/{method}`: which calls are taken (POST always, GET for methods safe to
//! repeat, nothing else), then a unary gRPC call through the gateway's call stack, with
//! JSON transcoded in and out.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use cluster::Node;
use cluster::stack::{CallInfo, ReplayBody};
use prost_reflect::prost_types::method_options::IdempotencyLevel;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;
use tracing::Instrument;

use crate::codec;
use crate::failure::{Failure, REQUEST_ID, json_reply};
use crate::observe::{Door, Observed, request_id};
use crate::settings::Route;
use crate::stack::GatewayCall;
use crate::state::Gateway;
use crate::transcode;

pub async fn handle(
    State(gateway): State<Arc<Gateway>>,
    Path((service, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    if crate::websocket::is_upgrade(request.headers()) {
        return crate::websocket::handle(gateway, service, method, request).await;
    }
    // At debug: a span per call costs more than the call's own work on the hot path.
    let span = |id: &str| tracing::debug_span!("api", %service, %method, request_id = %id);
    answer(
        &gateway,
        Door::Api,
        request,
        span,
        async |gateway, request, id, observed| {
            call(gateway, &service, &method, request, id, observed).await
        },
    )
    .await
}

/// What a call on an HTTP door answers with.
pub(crate) enum Reply {
    /// A unary reply as JSON.
    Json(Value),
    /// A server stream's messages, as they come (boxed: a stream's decoder state is
    /// large beside a JSON value).
    Stream(
        Box<tonic::codec::Streaming<DynamicMessage>>,
        crate::stream_http::Format,
    ),
}

/// One call on an HTTP door, observed from its start to its reply (metrics, access log,
/// trace): `call` makes the reply's JSON and names the node that gave it, or fails with
/// what the caller is told.
pub(crate) async fn answer<F>(
    gateway: &Gateway,
    door: Door,
    request: Request,
    span: impl FnOnce(&str) -> tracing::Span,
    call: F,
) -> Response
where
    F: AsyncFnOnce(&Gateway, Request, &str, &mut Observed) -> Result<(Reply, String), Failure>,
{
    let id = request_id(request.headers());
    let (parts, body) = request.into_parts();
    let mut observed = Observed::start(
        door,
        &parts,
        &id,
        gateway.tracer.as_ref(),
        &gateway.meters,
        gateway.settings.access_log,
    );
    let request = Request::from_parts(parts, body);
    let span = span(&id);
    let outcome = call(gateway, request, &id, &mut observed)
        .instrument(span.clone())
        .await;
    // Answered or refused, the caller is told where its rate limit stands.
    let allowance = observed.allowance;
    let mut response = match outcome {
        Ok((reply, node)) => {
            // A stream is recorded when its reply starts: its end is the caller's to see.
            observed.finish(StatusCode::OK.as_u16(), Code::Ok, Some(&node));
            match reply {
                Reply::Json(body) => json_reply(StatusCode::OK, &body, &id, &node),
                Reply::Stream(messages, format) => {
                    crate::stream_http::reply(*messages, format, &id, &node)
                }
            }
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
    };
    if let Some(allowance) = allowance {
        allowance.write(response.headers_mut());
    }
    response
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
    /// Where the policy comes from.
    pub from: PolicyOrigin,
}

/// Who said whether a method is safe to repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyOrigin {
    /// The route's `idempotent` list or its per-method `idempotent`.
    Route,
    /// The method's `idempotency_level` in its proto.
    Proto,
    /// Neither: not repeated, not read with GET.
    Default,
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
                from: PolicyOrigin::Route,
            },
            (None, IdempotencyLevel::IdempotencyUnknown) => Self {
                idempotent: false,
                get: false,
                from: PolicyOrigin::Default,
            },
            (None, level) => Self {
                idempotent: true,
                get: level == IdempotencyLevel::NoSideEffects,
                from: PolicyOrigin::Proto,
            },
        }
    }

    fn allow(self) -> &'static str {
        if self.get { "GET, POST" } else { "POST" }
    }
}

async fn call(
    gateway: &Gateway,
    service: &str,
    method_name: &str,
    request: Request,
    id: &str,
    observed: &mut Observed,
) -> Result<(Reply, String), Failure> {
    let resolved = resolve(gateway, service, method_name, observed).await?;
    let policy = accepted(&resolved.route, &resolved.method, request.method())?;
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let placement = gateway.place(
        &resolved.route,
        request.headers(),
        request.uri().query(),
        request.extensions(),
    );
    let format = crate::stream_http::Format::asked_by(request.headers());
    let input = transcode::read_input(
        request,
        &resolved.method.input(),
        gateway.settings.max_body_bytes,
    )
    .await?;
    let call = Outgoing {
        policy,
        input: &input,
        authorization,
        placement,
        id,
        stream: resolved.method.is_server_streaming(),
    };
    invoke_reply(
        gateway,
        &resolved,
        call,
        format,
        observed,
        transcode::to_json,
    )
    .await
}

/// The call of `resolved`: a unary one's reply rendered by `render`, or a server stream's
/// messages as they come (in `format`); and the node that answered.
pub(crate) async fn invoke_reply(
    gateway: &Gateway,
    resolved: &Resolved,
    call: Outgoing<'_>,
    format: crate::stream_http::Format,
    observed: &mut Observed,
    render: impl FnOnce(&DynamicMessage) -> Result<Value, Failure>,
) -> Result<(Reply, String), Failure> {
    if call.stream {
        let (messages, node) = invoke_stream(gateway, resolved, call, observed).await?;
        return Ok((Reply::Stream(Box::new(messages), format), node));
    }
    let (reply, node) = invoke(gateway, resolved, call, observed).await?;
    Ok((Reply::Json(render(&reply)?), node))
}

/// A method of a service as the call will reach it: its nodes, the newest running
/// description of it, the versions that have it, and the service's route.
pub(crate) struct Resolved {
    pub service: String,
    pub healthy: Vec<Arc<Node>>,
    pub method: MethodDescriptor,
    pub versions: BTreeSet<String>,
    pub route: Arc<Route>,
}

/// Finds `method_name` of `service` among its healthy nodes' schemas, or why the call
/// cannot be made; the call is observed under the names found.
pub(crate) async fn resolve(
    gateway: &Gateway,
    service: &str,
    method_name: &str,
    observed: &mut Observed,
) -> Result<Resolved, Failure> {
    let healthy = nodes_to_ask(gateway, service)?;
    observed.service(service);
    let (method, versions) = find_method(gateway, service, method_name, &healthy).await?;
    observed.method(method.name());
    Ok(Resolved {
        service: service.to_owned(),
        route: gateway.routes.route(service),
        healthy,
        method,
        versions,
    })
}

/// The unary call of `resolved` through the call stack, under the route's deadline and
/// the method's retry policy: the reply and the node that gave it.
async fn invoke(
    gateway: &Gateway,
    resolved: &Resolved,
    call: Outgoing<'_>,
    observed: &mut Observed,
) -> Result<(DynamicMessage, String), Failure> {
    let (response, node) = send(gateway, resolved, call, observed).await?;
    let message = codec::read_reply(response, resolved.method.output())
        .await
        .map_err(|status| Failure::of_status(&status).served_by(node.clone()))?;
    Ok((message, node))
}

/// A server-streaming call of `resolved`: its messages as they come, and the node
/// sending them. A stream has no deadline of the route's and is never repeated once
/// sent: it lasts until the service ends it or the caller goes away (dropping the stream
/// cancels the call).
async fn invoke_stream(
    gateway: &Gateway,
    resolved: &Resolved,
    call: Outgoing<'_>,
    observed: &mut Observed,
) -> Result<(tonic::codec::Streaming<DynamicMessage>, String), Failure> {
    let call = Outgoing {
        policy: MethodPolicy {
            idempotent: false,
            ..call.policy
        },
        stream: true,
        ..call
    };
    let (response, node) = send(gateway, resolved, call, observed).await?;
    let messages = codec::read_stream(response, resolved.method.output())
        .map_err(|status| Failure::of_status(&status).served_by(node.clone()))?;
    Ok((messages, node))
}

/// What one call sends.
pub(crate) struct Outgoing<'a> {
    pub policy: MethodPolicy,
    pub input: &'a DynamicMessage,
    pub authorization: Option<HeaderValue>,
    /// Where the route's traffic rules and sticky key send the call.
    pub placement: crate::settings::Placement,
    pub id: &'a str,
    /// A server stream: handed on as it comes, with no deadline of the route's.
    pub stream: bool,
}

async fn send(
    gateway: &Gateway,
    resolved: &Resolved,
    call: Outgoing<'_>,
    observed: &mut Observed,
) -> Result<(cluster::stack::CallResponse, String), Failure> {
    let signs = resolved.healthy.iter().any(|node| node.channel.signs());
    let body = codec::framed(call.input)
        .map_err(|status| Failure::new(status.code(), status.message()))?;
    let mut request = grpc_request(&resolved.method, body, call.id)?;
    if signs {
        // Binds a signed call to its body.
        let digest = node::credentials::body_digest(&request.body()[5..]);
        if let Ok(mut value) = HeaderValue::from_str(&digest) {
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(node::credentials::BODY_HEADER, value);
        }
    }
    let sending = Sending {
        policy: call.policy,
        authorization: call.authorization,
        placement: call.placement,
        stream: call.stream,
    };
    dispatch(
        gateway,
        resolved,
        request.map(ReplayBody::whole),
        sending,
        observed,
    )
    .await
}

/// How a prepared gRPC request goes out.
pub(crate) struct Sending {
    pub policy: MethodPolicy,
    pub authorization: Option<HeaderValue>,
    pub placement: crate::settings::Placement,
    /// A stream: no deadline of the route's, its reply read as it comes.
    pub stream: bool,
}

/// `request` (a gRPC request of `resolved`'s method) through the call stack: the route's
/// deadline unless it streams, retries as the policy allows, the route's admission
/// checks; the reply and the node that gave it.
pub(crate) async fn dispatch(
    gateway: &Gateway,
    resolved: &Resolved,
    mut request: http::Request<ReplayBody>,
    sending: Sending,
    observed: &mut Observed,
) -> Result<(cluster::stack::CallResponse, String), Failure> {
    let Resolved {
        service,
        method,
        versions,
        route,
        ..
    } = resolved;
    let Sending {
        policy,
        authorization,
        placement,
        stream,
    } = sending;
    if let Some(carried) = placement.carried {
        request.headers_mut().extend(carried);
    }
    let timeout = (!stream).then(|| route.timeout_of(method.name()));
    let info = CallInfo {
        idempotent: policy.idempotent,
        deadline: timeout.map(|timeout| Instant::now() + timeout),
        // An idempotent call's attempt on a node that hangs leaves time to try two others.
        attempt_timeout: timeout.filter(|_| policy.idempotent).map(|t| t / 3),
        balance: route.balance,
        // In a rolling upgrade only the versions that have the method can serve it.
        versions: Some(Arc::new(versions.clone())),
        steer: placement.steer,
        affinity: placement.affinity,
        whole_reply: !stream,
        trace: Some(observed.trace.attempts()),
        ..CallInfo::new(
            service.as_str(),
            method.parent_service().full_name(),
            method.name(),
        )
    };
    // Filled by the admit layer when the route has a rate limit: the caller is told of it.
    let allowance = route.rate_limit.is_some().then(Arc::default);
    let extensions = request.extensions_mut();
    extensions.insert(info);
    extensions.insert(GatewayCall {
        // Checked by the admit layer; the node sees only the claims a route forwards.
        authorization,
        client: placement.client,
        allowance: allowance.clone(),
        ..GatewayCall::new(route.clone())
    });
    let sent = gateway
        .send(request, || format!("{service}/{}", method.name()), timeout)
        .await;
    if let Some(allowance) = allowance.as_deref().and_then(std::sync::OnceLock::get) {
        observed.allowance = Some(*allowance);
    }
    let (response, node) = sent?;
    let node = node
        .map(|node| node.instance.address.clone())
        .unwrap_or_default();
    Ok((response, node))
}

/// The healthy nodes of `service` to learn its methods from; why there are none.
fn nodes_to_ask(gateway: &Gateway, service: &str) -> Result<Vec<Arc<Node>>, Failure> {
    if service == "gateway" {
        return Err(Failure::new(
            Code::NotFound,
            "the gateway is not a service with methods: /api/{service}/{method} calls the services behind it (GET / lists them)",
        ));
    }
    let nodes = gateway.view.nodes_of(service);
    if nodes.is_empty() {
        // A service this gateway has seen is down, not misspelt.
        return Err(if gateway.view.has_seen(service) {
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
    let healthy = cluster::candidates(&gateway.view, &nodes, &[]);
    if healthy.is_empty() {
        return Err(Failure::new(
            Code::Unavailable,
            format!("no healthy node of {service:?}"),
        ));
    }
    Ok(healthy)
}

/// Whether `/api` takes the method with this HTTP method: streams never (they go to the
/// rpc port), POST always, GET when the method is safe to repeat.
fn accepted(
    route: &Route,
    method: &MethodDescriptor,
    http_method: &Method,
) -> Result<MethodPolicy, Failure> {
    // A server stream is answered as events or JSON lines; a stream of requests needs
    // a WebSocket (see `websocket`) or gRPC.
    if method.is_client_streaming() {
        return Err(Failure::new(
            Code::Unimplemented,
            format!(
                "{} takes a stream of requests: open a WebSocket on this path (JSON text frames), or call it over gRPC on the gateway's rpc port",
                method.name()
            ),
        ));
    }
    let policy = MethodPolicy::of(route, method);
    match *http_method {
        Method::POST => Ok(policy),
        Method::GET if policy.get => Ok(policy),
        Method::GET => Err(Failure::method_not_allowed(
            policy.allow(),
            format!(
                "{} may change something: call it with POST and a JSON body",
                method.name()
            ),
        )),
        ref other => Err(Failure::method_not_allowed(
            policy.allow(),
            format!("{other} does not call methods; use {}", policy.allow()),
        )),
    }
}

/// The gRPC request of `method` carrying `body` (its framed messages), with the request
/// id.
pub(crate) fn grpc_request<B>(
    method: &MethodDescriptor,
    body: B,
    id: &str,
) -> Result<http::Request<B>, Failure> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let mut request = http::Request::new(body);
    *request.method_mut() = Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    *request.uri_mut() =
        http::Uri::try_from(path).map_err(|e| Failure::new(Code::Internal, e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    // New on every call: sent as literals, they leave HTTP/2's header table to the
    // headers that repeat.
    if let Ok(mut value) = HeaderValue::from_str(id) {
        value.set_sensitive(true);
        headers.insert(REQUEST_ID, value);
    }
    Ok(request)
}

/// The method as the newest running version of `service` describes it (older nodes skip
/// fields they do not know), and the versions that have it. Each version's schema is
/// read from one of its nodes (once, then cached); versions no healthy node runs any
/// more are forgotten.
async fn find_method(
    gateway: &Gateway,
    service: &str,
    name: &str,
    healthy: &[Arc<Node>],
) -> Result<(MethodDescriptor, BTreeSet<String>), Failure> {
    let live: BTreeSet<String> = healthy.iter().map(|n| n.instance.version.clone()).collect();
    gateway.forget_versions_except(service, &live);
    let mut found: Option<MethodDescriptor> = None;
    let mut versions = BTreeSet::new();
    let mut known_methods = BTreeSet::new();
    let mut last_error = None;
    let mut newest_first: Vec<&String> = live.iter().collect();
    newest_first.sort_by_key(|v| std::cmp::Reverse(cluster::meta::version_order(v)));
    for version in newest_first {
        let mut schema = None;
        for node in healthy.iter().filter(|n| &n.instance.version == version) {
            match gateway.schema_of(node).await {
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
