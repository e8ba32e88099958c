//! `POST /api/{service}/{method}` (and `GET` with query parameters): JSON in, the gRPC call
//! on a node of the service, JSON out.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http::uri::PathAndQuery;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::Instrument;

use crate::auth::{JwtVerifier, claim_header};
use crate::balance;
use crate::cluster::{ClusterView, InFlight, NodeHandle};
use crate::codec::DynamicCodec;
use crate::live_routes::LiveRoutes;
use crate::resilience::{Guards, GuardsByService};
use crate::schema::Schemas;
use crate::settings::{GatewaySection, Route};
use crate::status::{error_body, http_status};

pub const REQUEST_ID: &str = node::REQUEST_ID_HEADER;
pub const SERVED_BY: &str = "x-served-by";

/// Everything a call through the gateway needs, shared by all requests.
pub struct Api {
    pub view: ClusterView,
    pub routes: LiveRoutes,
    pub settings: GatewaySection,
    schemas: Schemas,
    retries: TpsBudget,
    round_robin: AtomicUsize,
    guards: GuardsByService,
    jwt: JwtVerifier,
}

impl Api {
    /// What `node`'s service offers at its version, by reflection, cached.
    pub async fn schema_of(
        &self,
        node: &crate::cluster::NodeHandle,
    ) -> Result<Arc<crate::schema::Schema>, String> {
        self.schemas.of(node).await
    }

    pub fn new(view: ClusterView, routes: LiveRoutes, settings: GatewaySection) -> Self {
        let percent = settings.retry_budget_percent.clamp(0.0, 1000.0) / 100.0;
        Self {
            view,
            routes,
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
}

/// A reply the gateway could not get from a service: status, gRPC code, message.
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
    status: StatusCode,
    served_by: Option<String>,
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: http_status(code),
            code,
            message: message.into(),
            served_by: None,
            retry_after: None,
        }
    }

    fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

fn reply(status: StatusCode, body: &Value, request_id: &str, served_by: &str) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [(REQUEST_ID, request_id), (SERVED_BY, served_by)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// The request id: the caller's `x-request-id` when it gave a usable one, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

pub async fn handle(
    State(api): State<Arc<Api>>,
    Path((service, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let id = request_id(request.headers());
    let span = tracing::info_span!("api", %service, %method, request_id = %id);
    match call(&api, &service, &method, request, &id)
        .instrument(span.clone())
        .await
    {
        Ok((body, node)) => reply(StatusCode::OK, &body, &id, &node),
        Err(failure) => {
            tracing::debug!(parent: &span, code = ?failure.code, message = %failure.message, "call failed");
            let served_by = failure.served_by.as_deref().unwrap_or("gateway");
            let body = error_body(failure.code, &failure.message);
            let mut response = reply(failure.status, &body, &id, served_by);
            if let Some(wait) = failure.retry_after {
                // Whole seconds, rounded up: never tell a client to come back too early.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            if failure.status == StatusCode::PAYLOAD_TOO_LARGE {
                // The rest of the body was never read: the connection cannot carry another request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

async fn call(
    api: &Api,
    service: &str,
    method_name: &str,
    request: Request,
    id: &str,
) -> Result<(Value, String), Failure> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let nodes = api.view.nodes_of(service);
    if nodes.is_empty() {
        return Err(Failure::new(
            Code::NotFound,
            format!("unknown service {service:?}: no node of it is registered"),
        ));
    }
    let healthy: Vec<Arc<NodeHandle>> = nodes
        .iter()
        .filter(|n| !api.view.is_set_aside(n))
        .cloned()
        .collect();
    if healthy.is_empty() {
        return Err(Failure::new(
            Code::Unavailable,
            format!("no healthy node of {service:?}"),
        ));
    }
    let (method, versions) = find_method(api, service, method_name, &healthy).await?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(Failure::new(
            Code::Unimplemented,
            format!("{method_name} streams; call it over gRPC on the gateway's rpc port"),
        ));
    }
    let input = read_input(api, request, &method.input()).await?;
    let path = PathAndQuery::from_str(&format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;

    let route = api.routes.route(service);
    let Admitted {
        claims: mut metadata,
        guards,
    } = admit(
        api,
        service,
        &route,
        method.name(),
        authorization.as_deref(),
    )?;
    metadata.push((REQUEST_ID.to_owned(), id.to_owned()));
    // The breaker, when the route has one, with how it let this call through.
    let breaker = match &guards.breaker {
        Some((_, breaker)) => {
            let admission = lock(breaker).admit().map_err(|wait| {
                Failure::new(
                    Code::Unavailable,
                    format!("circuit open for {service:?}: its calls keep failing"),
                )
                .retry_after(wait)
            })?;
            Some((breaker, admission))
        }
        None => None,
    };
    let outcome = async {
        let timeout = route.timeout_of(method.name());
        let idempotent = route.is_idempotent(method.name());
        let deadline = Instant::now() + timeout;
        api.retries.deposit();
        let mut tried: Vec<String> = Vec::new();
        loop {
            let candidates: Vec<Arc<NodeHandle>> = api
                .view
                .nodes_of(service)
                .into_iter()
                .filter(|n| !api.view.is_set_aside(n) && !tried.contains(&n.instance.id))
                // In a rolling upgrade only the versions that have the method can serve it.
                .filter(|n| versions.contains(&n.instance.version))
                .collect();
            let Some(node) =
                balance::pick(&candidates, route.balance, &api.round_robin, method.name())
            else {
                return Err(Failure::new(
                    Code::Unavailable,
                    format!("no healthy node of {service:?} left to try"),
                ));
            };
            let started = Instant::now();
            let in_flight = InFlight::start(&node);
            let outcome = tokio::time::timeout_at(
                deadline,
                unary(
                    &node,
                    path.clone(),
                    input.clone(),
                    method.output(),
                    deadline,
                    &metadata,
                ),
            )
            .await;
            drop(in_flight);
            let address = node.instance.address.clone();
            let status = match outcome {
                Err(_) => {
                    api.view
                        .record(&node, method.name(), started.elapsed(), false);
                    let mut failure = Failure::new(
                        Code::DeadlineExceeded,
                        format!("{service}/{method_name} took longer than {timeout:?}"),
                    );
                    failure.served_by = Some(address);
                    return Err(failure);
                }
                Ok(Ok(message)) => {
                    api.view
                        .record(&node, method.name(), started.elapsed(), false);
                    let options = SerializeOptions::new().skip_default_fields(false);
                    let body = message
                        .serialize_with_options(serde_json::value::Serializer, &options)
                        .map_err(|e| {
                            Failure::new(Code::Internal, format!("encoding the reply as JSON: {e}"))
                        })?;
                    return Ok((body, address));
                }
                Ok(Err(status)) if Instant::now() >= deadline => {
                    // The client-side deadline fired inside tonic ("Timeout expired").
                    let mut failure = Failure::new(
                        Code::DeadlineExceeded,
                        format!(
                            "{service}/{method_name} took longer than {timeout:?}: {}",
                            status.message()
                        ),
                    );
                    failure.served_by = Some(address);
                    return Err(failure);
                }
                Ok(Err(status)) => status,
            };
            let connect_failure = is_connect_failure(&status);
            let transport_failure = connect_failure || is_transport_failure(&status);
            api.view
                .record(&node, method.name(), started.elapsed(), transport_failure);
            // Never sent: always safe to try elsewhere. Lost on the way: only if idempotent.
            let retry = Instant::now() < deadline
                && (connect_failure || (transport_failure && idempotent && api.retries.withdraw()));
            if retry {
                tracing::debug!(%address, message = status.message(), "retrying on another node");
                tried.push(node.instance.id.clone());
                continue;
            }
            let mut failure = Failure::new(status.code(), status.message());
            failure.served_by = Some(address);
            return Err(failure);
        }
    }
    .await;
    if let Some((breaker, admission)) = breaker {
        let failed = outcome
            .as_ref()
            .err()
            .is_some_and(|f| is_server_failure(f.code));
        lock(breaker).record(admission, failed);
    }
    outcome
}

/// A call let through: the claims to forward as metadata, and the service's guards.
pub(crate) struct Admitted {
    pub(crate) claims: Vec<(String, String)>,
    pub(crate) guards: Arc<Guards>,
}

/// What every call to `service` passes first, on `/api` and on the rpc port alike: the
/// route's JWT check (its forwarded claims returned as metadata) and its rate limit.
pub(crate) fn admit(
    api: &Api,
    service: &str,
    route: &Route,
    method: &str,
    authorization: Option<&str>,
) -> Result<Admitted, Failure> {
    let mut claims_metadata = Vec::new();
    if route.requires_jwt(method) {
        let claims = api
            .jwt
            .verify(authorization)
            .map_err(|reason| Failure::new(Code::Unauthenticated, reason))?;
        for claim in &route.forward_claims {
            let value = match claims.get(claim) {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => continue,
            };
            claims_metadata.push((claim_header(claim), value));
        }
    }
    let guards = api
        .guards
        .of(service, route.rate_limit, route.circuit_breaker);
    if let Some((_, bucket)) = &guards.limit
        && let Err(wait) = lock(bucket).take()
    {
        return Err(Failure::new(
            Code::ResourceExhausted,
            format!("rate limit of {service:?} exceeded"),
        )
        .retry_after(wait));
    }
    Ok(Admitted {
        claims: claims_metadata,
        guards,
    })
}

/// The method as the newest running version of `service` describes it (older nodes skip
/// fields they do not know), and the versions that have it. Each version's schema is
/// read from one of its nodes (once, then cached); versions no healthy node runs any
/// more are forgotten.
async fn find_method(
    api: &Api,
    service: &str,
    name: &str,
    healthy: &[Arc<NodeHandle>],
) -> Result<(MethodDescriptor, BTreeSet<String>), Failure> {
    let live: BTreeSet<String> = healthy.iter().map(|n| n.instance.version.clone()).collect();
    api.schemas.forget_versions_except(service, &live);
    let mut found: Option<MethodDescriptor> = None;
    let mut versions = BTreeSet::new();
    let mut known_methods = BTreeSet::new();
    let mut last_error = None;
    let mut newest_first: Vec<&String> = live.iter().collect();
    newest_first.sort_by_key(|v| std::cmp::Reverse(version_order(v)));
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

async fn read_input(
    api: &Api,
    request: Request,
    input: &MessageDescriptor,
) -> Result<DynamicMessage, Failure> {
    let json = if request.method() == Method::GET {
        query_to_json(request.uri().query().unwrap_or(""), input)?
    } else {
        let too_large = || {
            Failure::new(
                Code::ResourceExhausted,
                format!("body larger than {} bytes", api.settings.max_body_bytes),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > api.settings.max_body_bytes) {
            return Err(too_large());
        }
        let body: Bytes = axum::body::to_bytes(request.into_body(), api.settings.max_body_bytes)
            .await
            .map_err(|_| too_large())?;
        if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                Failure::new(Code::InvalidArgument, format!("malformed JSON body: {e}"))
            })?
        }
    };
    to_message(json, input)
}

/// Decodes JSON into the request message; on failure names the field at fault.
fn to_message(json: Value, input: &MessageDescriptor) -> Result<DynamicMessage, Failure> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    match DynamicMessage::deserialize_with_options(input.clone(), &json, &options) {
        Ok(message) => Ok(message),
        Err(error) => {
            let Value::Object(fields) = &json else {
                return Err(Failure::new(
                    Code::InvalidArgument,
                    format!("the body must be a JSON object: {error}"),
                ));
            };
            // Try the fields one by one to find the one that does not fit.
            let culprit = fields.iter().find(|(name, value)| {
                let single =
                    Value::Object([((*name).clone(), (*value).clone())].into_iter().collect());
                DynamicMessage::deserialize_with_options(input.clone(), &single, &options).is_err()
            });
            let message = match culprit {
                Some((name, _)) => format!("field {name:?}: {error}"),
                None => error.to_string(),
            };
            Err(Failure::new(Code::InvalidArgument, message))
        }
    }
}

/// Query parameters as JSON for a message of scalar fields, typed by the descriptor.
fn query_to_json(query: &str, input: &MessageDescriptor) -> Result<Value, Failure> {
    let mut object = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key);
        let value = percent_decode(raw_value);
        let field = input
            .get_field_by_json_name(&key)
            .or_else(|| input.get_field_by_name(&key))
            .ok_or_else(|| {
                Failure::new(
                    Code::InvalidArgument,
                    format!("field {key:?}: no such field in {}", input.full_name()),
                )
            })?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(Failure::new(
                Code::InvalidArgument,
                format!("field {key:?}: GET takes scalar fields only; use POST with a JSON body"),
            ));
        }
        let typed = match field.kind() {
            Kind::Bool => match value.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => {
                    return Err(Failure::new(
                        Code::InvalidArgument,
                        format!("field {key:?}: {value:?} is not true or false"),
                    ));
                }
            },
            Kind::String | Kind::Bytes | Kind::Enum(_) => Value::String(value),
            // Numbers travel as strings, which protobuf's JSON mapping accepts for every numeric type.
            _ => Value::String(value),
        };
        object.insert(key, typed);
    }
    Ok(Value::Object(object))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, other) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn unary(
    node: &NodeHandle,
    path: PathAndQuery,
    input: DynamicMessage,
    output: MessageDescriptor,
    deadline: Instant,
    metadata: &[(String, String)],
) -> Result<DynamicMessage, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(node.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
    let mut request = tonic::Request::new(input);
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    for (key, value) in metadata {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            request.metadata_mut().insert(key, value);
        }
    }
    grpc.unary(request, path, DynamicCodec::new(output))
        .await
        .map(tonic::Response::into_inner)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Failures that say the service is in trouble (what a circuit breaker counts), as opposed
/// to a caller's mistake.
fn is_server_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}

/// `0.10.2` after `0.9.7`: numeric parts compare as numbers, the rest as text.
fn version_order(version: &str) -> Vec<(u64, &str)> {
    version
        .split(['.', '-', '+'])
        .map(|part| (part.parse().unwrap_or(0), part))
        .collect()
}

/// The call never reached the node: nothing ran there, so another node may take it.
fn is_connect_failure(status: &tonic::Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    std::error::Error::source(status).is_some_and(is_connect_error)
        || status.message().contains("connect error")
}

/// Whether an error, or one of its causes, is a failure to open the connection: the
/// request never left, so any node may take it.
pub fn is_connect_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        let text = error.to_string();
        if text.contains("connect") && !text.contains("connection reset") {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// The call failed in transport (connection reset, closed, refused) rather than with a
/// status the service chose: statuses a server sends carry no underlying error.
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
    ) && std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_order_after_older_ones_numerically() {
        let mut versions = vec!["0.10.0", "0.9.1", "1.0.0", "0.9.0"];
        versions.sort_by_key(|v| version_order(v));
        assert_eq!(versions, ["0.9.0", "0.9.1", "0.10.0", "1.0.0"]);
    }

    #[test]
    fn percent_decoding_handles_escapes_plus_and_stray_percent() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
