//! The public port's REST routes: a request that matches a service's `google.api.http`
//! rule becomes a unary call of its method through the same call stack as `/api`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use tonic::Code;

use super::binding::{request_message, response_json};
use super::rule::BodyRule;
use crate::api::{MethodPolicy, Outgoing, Reply, answer, invoke_reply, resolve};
use crate::failure::Failure;
use crate::observe::{Door, Observed};
use crate::state::Gateway;
use crate::transcode::read_json_body;

/// Any request no other route of the public port took: gRPC-Web, or a REST route.
pub async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    if crate::grpc_web::is_grpc_web(request.headers()) {
        return crate::grpc_web::forward(gateway, request).await;
    }
    let path = request.uri().path().to_owned();
    let span = |id: &str| tracing::debug_span!("rest", %path, request_id = %id);
    answer(&gateway, Door::Rest, request, span, call).await
}

async fn call(
    gateway: &Gateway,
    request: Request,
    id: &str,
    observed: &mut Observed,
) -> Result<(Reply, String), Failure> {
    let table = gateway.rest.current();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some((route, bindings)) = table.find(request.method(), &path) else {
        return Err(no_route(&table, request.method(), &path));
    };
    let resolved = resolve(gateway, &route.service, route.method.name(), observed).await?;
    let policy = MethodPolicy::of(&resolved.route, &resolved.method);
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let placement = gateway.place(
        &resolved.route,
        request.headers(),
        request.uri().query(),
        request.extensions(),
    );
    let format = crate::stream_http::Format::asked_by(request.headers());
    let body = match route.rule.body {
        BodyRule::None => None,
        BodyRule::Whole | BodyRule::Field(_) => {
            read_json_body(request, gateway.settings.max_body_bytes).await?
        }
    };
    let input = request_message(
        &resolved.method.input(),
        &route.rule,
        bindings,
        &query,
        body,
    )?;
    let call = Outgoing {
        policy,
        input: &input,
        authorization,
        placement,
        id,
        stream: resolved.method.is_server_streaming(),
    };
    let render = |reply: &prost_reflect::DynamicMessage| response_json(reply, &route.rule);
    invoke_reply(gateway, &resolved, call, format, observed, render).await
}

/// 405 when some route takes the path with another method, else 404.
fn no_route(table: &super::table::RestTable, method: &http::Method, path: &str) -> Failure {
    let methods = table.methods_at(path);
    if methods.is_empty() {
        return Failure::new(
            Code::NotFound,
            format!(
                "no route for {method} {path}: GET / lists the services, /api/{{service}}/{{method}} calls any method"
            ),
        );
    }
    let allow: Vec<&str> = methods.iter().map(http::Method::as_str).collect();
    let allow = allow.join(", ");
    let message = format!("{path} takes {allow}, not {method}");
    Failure::method_not_allowed(allow, message)
}
