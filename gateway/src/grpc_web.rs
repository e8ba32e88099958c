//! gRPC-Web on the public HTTP port, for browsers: `application/grpc-web(+proto)` and
//! `application/grpc-web-text` calls (unary and server streams) are translated to gRPC
//! by tonic-web and passed on as the rpc port passes a native call, through the same
//! call stack; the reply's status travels in a trailer frame of the body, as the protocol
//! says.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, ServiceExt};

use crate::state::Gateway;

/// Whether the request speaks gRPC-Web.
pub fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc-web"))
}

/// The call, translated to gRPC, through the rpc port's pass-through.
pub async fn forward(gateway: Arc<Gateway>, request: Request) -> Response {
    let passthrough = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let gateway = gateway.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            // The node is called over HTTP/2, whatever the browser spoke.
            parts.version = http::Version::HTTP_2;
            let request = Request::from_parts(parts, axum::body::Body::new(body));
            let reply = crate::proxy::forward(State(gateway), request).await;
            Ok::<_, Infallible>(reply.map(tonic::body::Body::new))
        }
    });
    match tonic_web::GrpcWebLayer::new()
        .layer(passthrough)
        .oneshot(request)
        .await
    {
        Ok(reply) => reply.map(axum::body::Body::new),
        Err(never) => match never {},
    }
    .into_response()
}
