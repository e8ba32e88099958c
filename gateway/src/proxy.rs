//! The gateway's rpc port: native gRPC calls (unary or streaming) passed, undecoded, to a
//! node of the service that exposes the called `package.Service`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use cluster::stack::{CallInfo, ReplayBody};
use telemetry::grpc::OnEnd;
use tokio::time::Instant;
use tracing::Instrument;

use crate::failure::{Failure, REQUEST_ID, SERVED_BY};
use crate::observe::{Door, Observed, request_id};
use crate::stack::GatewayCall;
use crate::state::Gateway;

pub async fn forward(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
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
    let (grpc_service, method) = cluster::stack::grpc_names(request.uri().path());
    let (parts, body) = request.into_parts();
    let mut observed = Observed::start(
        Door::Rpc,
        &parts,
        &id,
        gateway.tracer.as_ref(),
        &gateway.meters,
        gateway.settings.access_log,
    );
    // At debug: a span per call costs more than the call's own work on the hot path.
    let span = tracing::debug_span!("rpc", %grpc_service, %method, request_id = %id);
    match forward_to_a_node(&gateway, parts, body, &grpc_service, &method, &mut observed)
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
    gateway: &Gateway,
    parts: http::request::Parts,
    body: Body,
    grpc_service: &Arc<str>,
    method: &Arc<str>,
    observed: &mut Observed,
) -> Result<Response, Failure> {
    let service = gateway
        .view
        .snapshot()
        .serving(grpc_service)
        .map(|targets| targets.owner.clone())
        .ok_or_else(|| {
            Failure::new(
                tonic::Code::Unimplemented,
                format!("no node serves {grpc_service:?}"),
            )
        })?;
    observed.service(&service);
    observed.method_named_by_caller(method);
    // The route of the service guards the call here as on /api (its JWT check, rate
    // limit and breaker), and it chooses the balancer.
    let route = gateway.routes.route(&service);
    // The caller's own `grpc-timeout` is the call's deadline; the gateway sets none.
    let timeout = cluster::deadline::timeout_of(&parts.headers);
    let placement = route.place(&parts.headers, None, || {
        crate::rate_limit::peer_of(&parts.extensions)
    });
    let info = CallInfo {
        deadline: timeout.map(|timeout| Instant::now() + timeout),
        balance: route.balance,
        steer: placement.steer,
        affinity: placement.affinity,
        // Streams cannot be replayed: only a call none of whose bytes left goes elsewhere.
        idempotent: false,
        trace: Some(observed.trace.attempts()),
        ..CallInfo::new(service.clone(), grpc_service.clone(), method.clone())
    };
    let mut request = http::Request::from_parts(parts, ReplayBody::shared(body));
    let extensions = request.extensions_mut();
    extensions.insert(info);
    extensions.insert(GatewayCall {
        client: placement.client,
        ..GatewayCall::new(route)
    });
    let (mut response, node) = gateway
        .send(request, || format!("{service}/{method}"), None)
        .await?;
    if let Some(node) = node {
        if let Ok(value) = node.instance.address.parse() {
            response.headers_mut().insert(SERVED_BY, value);
        }
        observed.answered_by(&node);
    }
    Ok(response.map(Body::new))
}
