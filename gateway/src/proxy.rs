//! The gateway's rpc port: native gRPC calls (unary or streaming) passed, undecoded, to a
//! node of the service that exposes the called `package.Service`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tracing::Instrument;

use crate::api::{Api, Failure, REQUEST_ID, SERVED_BY, admit, is_connect_error, request_id};
use crate::balance;
use crate::cluster::InFlight;

pub async fn forward(State(api): State<Arc<Api>>, mut request: Request) -> Response {
    let id = request_id(request.headers());
    if let Ok(value) = id.parse() {
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
    let span = tracing::info_span!("rpc", %grpc_service, %method, request_id = %id);
    forward_to_a_node(&api, request, &grpc_service, &method)
        .instrument(span)
        .await
}

async fn forward_to_a_node(
    api: &Api,
    request: Request,
    grpc_service: &str,
    method: &str,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let serving = api.view.nodes_serving(grpc_service);
    // The route of the registry service whose nodes serve this gRPC service guards the
    // call here as on /api: its JWT check and its rate limit.
    if let Some(service) = serving.first().map(|node| node.instance.service.as_str()) {
        let route = api.routes.route(service);
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match admit(api, service, &route, method, authorization) {
            Ok(admitted) => {
                for (name, value) in admitted.claims {
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(name.as_bytes()),
                        http::HeaderValue::from_str(&value),
                    ) {
                        parts.headers.insert(name, value);
                    }
                }
            }
            Err(failure) => return refused(failure),
        }
    }
    let body = Reclaimable::new(body);
    let round_robin = std::sync::atomic::AtomicUsize::new(0);
    let mut tried = Vec::new();
    loop {
        let candidates: Vec<_> = serving
            .iter()
            .filter(|n| !api.view.is_set_aside(n) && !tried.contains(&n.instance.id))
            .cloned()
            .collect();
        let Some(node) = balance::pick(&candidates, Default::default(), &round_robin, method)
        else {
            let status = if tried.is_empty() {
                tonic::Status::unimplemented(format!("no node serves {grpc_service:?}"))
            } else {
                tonic::Status::unavailable(format!(
                    "no node of {grpc_service:?} could be reached ({} tried)",
                    tried.len()
                ))
            };
            return status.into_http::<Body>().into_response();
        };
        let mut outgoing = http::Request::new(tonic::body::Body::new(body.clone()));
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = parts.uri.clone();
        *outgoing.version_mut() = parts.version;
        *outgoing.headers_mut() = parts.headers.clone();
        let in_flight = InFlight::start(&node);
        let started = Instant::now();
        let answered = node.channel.clone().oneshot(outgoing).await;
        api.view
            .record(&node, method, started.elapsed(), answered.is_err());
        let mut response = match answered {
            // A stream is in flight until its last message: the body keeps the count.
            Ok(response) => response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _counted = &in_flight;
                    frame
                }))
            }),
            // Nothing of the call left the gateway: another node can take it whole.
            Err(error) if is_connect_error(&error) && !body.was_read() => {
                tracing::debug!(address = %node.instance.address, %error, "retrying on another node");
                tried.push(node.instance.id.clone());
                continue;
            }
            Err(error) => {
                tonic::Status::unavailable(format!("node {}: {error}", node.instance.address))
                    .into_http::<Body>()
            }
        };
        if let Ok(value) = node.instance.address.parse() {
            response.headers_mut().insert(SERVED_BY, value);
        }
        return response;
    }
}

fn refused(failure: Failure) -> Response {
    let message = match failure.retry_after {
        Some(wait) => format!(
            "{}; retry in {} ms",
            failure.message,
            wait.as_millis().max(1)
        ),
        None => failure.message,
    };
    tonic::Status::new(failure.code, message)
        .into_http::<Body>()
        .into_response()
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
