//! The gateway's rpc port: native gRPC calls (unary or streaming) passed, undecoded, to a
//! node of the service that exposes the called `package.Service`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tracing::Instrument;

use crate::admit::admit;
use crate::api::{Api, request_id};
use crate::failure::{Failure, REQUEST_ID, SERVED_BY};
use crate::observe::{Door, Observed};
use crate::pipeline::{self, Call, Tried};
use cluster::Attempt;
use cluster::InFlight;
use telemetry::grpc::OnEnd;

pub async fn forward(State(api): State<Arc<Api>>, mut request: Request) -> Response {
    let id = request_id(request.headers());
    if let Ok(mut value) = http::HeaderValue::from_str(&id) {
        // New on every call: not worth a place in HTTP/2's header table (see
        // telemetry::trace::inject).
        value.set_sensitive(true);
        request.headers_mut().insert(REQUEST_ID, value);
    }
    // Claims are the gateway's word after it verified a token; a caller cannot assert them.
    let asserted: Vec<_> = request
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with(node::CLAIM_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in asserted {
        request.headers_mut().remove(name);
    }
    // `/user.v1.UserService/Exists` → (`user.v1.UserService`, `Exists`)
    let path = request.uri().path().trim_start_matches('/').to_owned();
    let (grpc_service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let (grpc_service, method) = (grpc_service.to_owned(), method.to_owned());
    let (parts, body) = request.into_parts();
    let mut observed = Observed::start(
        Door::Rpc,
        &parts,
        &id,
        api.tracer.as_ref(),
        &api.meters,
        api.settings.access_log,
    );
    // At debug: a span per call costs more than the call's own work on the hot path.
    let span = tracing::debug_span!("rpc", %grpc_service, %method, request_id = %id);
    match forward_to_a_node(&api, parts, body, &grpc_service, &method, &mut observed)
        .instrument(span)
        .await
    {
        // The call ends with the reply's last frame: a stream is recorded then.
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = Body::new(OnEnd::new(body, &parts.headers, observed));
            Response::from_parts(parts, body)
        }
        Err(failure) => {
            let served_by = failure.served_by.clone();
            observed.finish(200, failure.code, served_by.as_deref());
            failure.into_grpc()
        }
    }
}

async fn forward_to_a_node(
    api: &Api,
    mut parts: http::request::Parts,
    body: Body,
    grpc_service: &str,
    method: &str,
    observed: &mut Observed,
) -> Result<Response, Failure> {
    let targets = api
        .view
        .snapshot()
        .serving(grpc_service)
        .cloned()
        .ok_or_else(|| {
            Failure::new(
                tonic::Code::Unimplemented,
                format!("no node serves {grpc_service:?}"),
            )
        })?;
    let service = targets.owner.as_str();
    observed.service(service);
    observed.method_named_by_caller(method);
    // The route of the service guards the call here as on /api: its JWT check and its
    // rate limit, and it chooses the balancer.
    let route = api.routes.route(service);
    let authorization = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let admitted = admit(api, service, &route, method, authorization)?;
    for (name, value) in admitted.claims {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            parts.headers.insert(name, value);
        }
    }
    let body = Reclaimable::new(body);
    // Streams cannot be replayed: only a call none of whose bytes left goes elsewhere.
    // Deadlines are the caller's own `grpc-timeout`.
    let call = Call {
        service,
        method,
        route: &route,
        idempotent: false,
        deadline: None,
    };
    let nodes = || targets.nodes.to_vec();
    let (mut response, node) = pipeline::run(api, &call, &observed.trace, nodes, |node, trace| {
        let mut outgoing = http::Request::new(tonic::body::Body::new(body.clone()));
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = parts.uri.clone();
        *outgoing.version_mut() = parts.version;
        *outgoing.headers_mut() = parts.headers.clone();
        outgoing.headers_mut().extend(trace);
        let body = body.clone();
        async move {
            let in_flight = InFlight::start(&node);
            match node.channel.clone().oneshot(outgoing).await {
                // A stream is in flight until its last message: the body keeps the count.
                Ok(response) => Ok(response.map(|reply| {
                    Body::new(reply.map_frame(move |frame| {
                        let _counted = &in_flight;
                        frame
                    }))
                })),
                Err(error) => {
                    let mut attempt = Attempt::of_error(&error);
                    if attempt == Attempt::NotSent && body.was_read() {
                        attempt = Attempt::Lost;
                    }
                    let failure = Failure::new(
                        tonic::Code::Unavailable,
                        format!("node {}: {error}", node.instance.address),
                    );
                    Err(Tried::new(attempt, failure))
                }
            }
        }
    })
    .await?;
    if let Ok(value) = node.instance.address.parse() {
        response.headers_mut().insert(SERVED_BY, value);
    }
    observed.answered_by(&node);
    Ok(response)
}

/// A request body that the proxy can send again when a call failed before any of it
/// was read: a failed connect leaves it untouched, so the whole call can go elsewhere.
/// Clones are handles to the same body, one per attempt.
#[derive(Clone)]
struct Reclaimable {
    body: Arc<Mutex<Body>>,
    read: Arc<AtomicBool>,
}

impl Reclaimable {
    fn new(body: Body) -> Self {
        Self {
            body: Arc::new(Mutex::new(body)),
            read: Arc::new(AtomicBool::new(false)),
        }
    }

    fn was_read(&self) -> bool {
        self.read.load(Ordering::Acquire)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Body> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl http_body::Body for Reclaimable {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.read.store(true, Ordering::Release);
        Pin::new(&mut *self.inner()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner().is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner().size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unread_body_is_whole_for_the_next_attempt_and_a_read_one_is_marked() {
        let body = Reclaimable::new(Body::from("payload"));
        // The first attempt fails before reading: nothing is consumed.
        drop(body.clone());
        assert!(!body.was_read());
        let second = body.clone().collect().await.unwrap().to_bytes();
        assert_eq!(second, Bytes::from("payload"));
        assert!(body.was_read(), "a read attempt must not be retried");
    }
}
