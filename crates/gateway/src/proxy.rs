//! The gateway's rpc port: native gRPC calls (unary or streaming) passed, undecoded, to a
//! node of the service that exposes the called `package.Service`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::api::{Api, REQUEST_ID, SERVED_BY, request_id};
use crate::balance;
use crate::cluster::InFlight;

pub async fn forward(State(api): State<Arc<Api>>, mut request: Request) -> Response {
    let id = request_id(request.headers());
    // `/user.v1.UserService/Exists` → `user.v1.UserService`
    let grpc_service = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let candidates: Vec<_> = api
        .view
        .nodes_serving(&grpc_service)
        .into_iter()
        .filter(|n| !api.view.is_set_aside(n))
        .collect();
    let round_robin = std::sync::atomic::AtomicUsize::new(0);
    let method = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let Some(node) = balance::pick(&candidates, Default::default(), &round_robin, &method) else {
        return tonic::Status::unimplemented(format!("no node serves {grpc_service:?}"))
            .into_http::<axum::body::Body>()
            .into_response();
    };
    if let Ok(value) = id.parse() {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    let (parts, body) = request.into_parts();
    let outgoing = http::Request::from_parts(parts, tonic::body::Body::new(body));
    let in_flight = InFlight::start(&node);
    let answered = node.channel.clone().oneshot(outgoing).await;
    let mut response = match answered {
        // A stream is in flight until its last message: the body keeps the count.
        Ok(response) => response.map(|body| {
            axum::body::Body::new(body.map_frame(move |frame| {
                let _counted = &in_flight;
                frame
            }))
        }),
        Err(error) => {
            tonic::Status::unavailable(format!("node {}: {error}", node.instance.address))
                .into_http::<axum::body::Body>()
        }
    };
    if let Ok(value) = node.instance.address.parse() {
        response.headers_mut().insert(SERVED_BY, value);
    }
    response
}
