//! The gateway's HTTP side.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api;
use crate::failure;
use crate::resilience::BreakerState;
use crate::state::Gateway;

pub fn router(api: Arc<Gateway>) -> Router {
    let cors = cors(&api.settings.cors_allow_origins);
    let mut router = Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/{service}/{method}", any(api::handle))
        // Every other path: the REST routes services declare with google.api.http.
        .fallback(crate::rest::serve::handle);
    if api.settings.openapi {
        router = router
            .route("/openapi.json", get(crate::openapi::whole))
            .route("/openapi/{file}", get(crate::openapi::one));
    }
    // What runs where is for the operator: on the admin port, unless asked for here too.
    if api.settings.public_cluster_view {
        router = router
            .route(
                "/cluster",
                get(|State(api): State<Arc<Gateway>>| async move { Json(cluster_view(&api)) }),
            )
            .route(
                "/routes",
                get(|State(api): State<Arc<Gateway>>| async move { Json(routes_view(&api).await) }),
            );
    }
    let router = router.with_state(api);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for browsers, from `gateway.cors_allow_origins`; none when the list is empty.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            // REST routes take every verb a `google.api.http` rule can name.
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static(failure::REQUEST_ID),
                // What gRPC-Web clients send.
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
            ])
            .expose_headers([
                HeaderName::from_static(failure::REQUEST_ID),
                HeaderName::from_static(failure::SERVED_BY),
                // A gRPC-Web reply's status when it comes as headers (trailers-only).
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
            ]),
    )
}

/// The services the gateway routes to now (not the gateways themselves).
fn services_behind(api: &Gateway) -> std::collections::BTreeSet<String> {
    api.view
        .snapshot()
        .nodes()
        .iter()
        .map(|node| node.instance.service.clone())
        .filter(|service| service != "gateway")
        .collect()
}

/// `GET /`: where to go from here, with the services the gateway routes to right now.
async fn index(State(api): State<Arc<Gateway>>) -> Json<Value> {
    let services = services_behind(&api);
    let calls: Vec<String> = services
        .iter()
        .map(|service| format!("/api/{service}/{{method}}"))
        .collect();
    Json(json!({
        "gateway": "rust-ms",
        "api": "POST /api/{service}/{method} with a JSON body (GET with query parameters for simple reads); an unknown method answers 404 listing the service's methods",
        "services": calls,
        "health": "/healthz",
        "operate": "the live nodes, the route table in force, metrics and a dashboard are on the admin port (admin.listen: /admin/cluster, /admin/routes, /metrics, /)",
        "grpc": "native gRPC on the gateway's rpc port, passed through to the service's nodes",
    }))
}

/// `/admin/cluster`: every live node the gateway routes to, by service, with what the
/// gateway knows of it (health check, set aside, calls in flight, latency by method) and
/// the service's circuit breaker.
pub fn cluster_view(api: &Gateway) -> Value {
    let snapshot = api.view.snapshot();
    let nodes = snapshot.nodes();
    let in_force = api.routes.in_force();
    let canary_of = |service: &str| {
        let canary = in_force.routes.get(service)?.canary.as_ref();
        canary.map(|canary| canary_view(api, service, canary))
    };
    let canary_of = |service: &str| json!(canary_of(service));
    // One look at every limit, grouped by service: each service's entry reads its own.
    let limits = api.limits.as_ref().map(|limits| {
        let mut by_service: std::collections::HashMap<String, serde_json::Map<String, Value>> =
            std::collections::HashMap::new();
        for state in limits.snapshot() {
            by_service
                .entry(state.service.clone())
                .or_default()
                .insert(state.method.clone(), json!(state));
        }
        by_service
    });
    node::cluster_json(
        nodes.iter().map(|handle| {
            let stats = &handle.stats;
            let details = [
                ("healthy", json!(handle.is_healthy())),
                ("ejected", json!(api.view.is_ejected(handle))),
                (
                    "in_flight",
                    json!(stats.in_flight.load(std::sync::atomic::Ordering::Relaxed)),
                ),
                ("latency_ms", json!(stats.latencies_ms())),
            ];
            let details = details
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            (&handle.instance, details)
        }),
        |service| {
            let breaker = json!(api.guards.breaker_state(service).map(BreakerState::name));
            // Each method's adaptive concurrency limit, once it was called.
            let limits = limits
                .as_ref()
                .map(|by_service| by_service.get(service).cloned().unwrap_or_default());
            [
                ("breaker".to_owned(), breaker),
                ("concurrency_limits".to_owned(), json!(limits)),
                // The route's cluster-wide limit and this gateway's share of it.
                (
                    "rate_limit".to_owned(),
                    json!(api.guards.rate_limit_of(service)),
                ),
                ("canary".to_owned(), canary_of(service)),
            ]
            .into_iter()
            .collect()
        },
    )
}

/// A canary as `/admin/routes`, `/admin/cluster` and the dashboard show it.
fn canary_view(api: &Gateway, service: &str, canary: &cluster::canary::Canary) -> Value {
    let step = crate::canary::StepId::of(canary);
    let seen_here = api
        .canaries
        .report(service, &step)
        .map(|report| report.comparison());
    json!({
        "version": canary.version,
        "steps": canary.steps,
        "step": canary.step() + 1,
        "percent": canary.percent(),
        "interval_ms": canary.interval.as_millis() as u64,
        "outcome": canary.outcome().name(),
        "since_ms": canary.state.as_ref().map(|state| state.since_ms),
        "reason": canary.state.as_ref().and_then(|state| state.reason.clone()),
        "last_decision": canary.state.as_ref().and_then(|state| state.last),
        "this_gateway_in_this_step": seen_here,
    })
}

/// `/admin/routes`: the route table in force and where it came from, and for each method
/// of each service the gateway routes to, whether it is retried and taken by GET, and
/// whether the route or the proto says so.
pub async fn routes_view(api: &Gateway) -> Value {
    let in_force = api.routes.in_force();
    let mut body = serde_json::to_value(&*in_force).unwrap_or_default();
    let services = services_behind(api);
    let mut methods = serde_json::Map::new();
    for service in services {
        let route = api.routes.route(&service);
        for node in api.view.nodes_of(&service).iter() {
            let Ok(schema) = api.schema_of(node).await else {
                continue;
            };
            let policies: serde_json::Map<String, Value> = schema
                .method_names()
                .into_iter()
                .filter_map(|name| schema.method(name))
                .map(|method| {
                    let policy = api::MethodPolicy::of(&route, method);
                    (method.name().to_owned(), json!(policy))
                })
                .collect();
            methods.insert(service.clone(), Value::Object(policies));
            break;
        }
    }
    let rest = api.rest.current();
    let routes: Vec<Value> = rest
        .routes()
        .map(|(verb, template, route)| {
            json!({
                "method": verb.as_str(),
                "path": template.as_str(),
                "service": route.service,
                "rpc": route.method.full_name(),
                "body": match &route.rule.body {
                    crate::rest::rule::BodyRule::None => Value::Null,
                    crate::rest::rule::BodyRule::Whole => json!("*"),
                    crate::rest::rule::BodyRule::Field(field) => json!(field),
                },
                "response_body": route.rule.response_body,
            })
        })
        .collect();
    // Each canary: where it stands (the leader's last word, with every gateway's figures)
    // and what this gateway has seen of the step in force.
    let canaries: serde_json::Map<String, Value> = in_force
        .routes
        .iter()
        .filter_map(|(service, route)| {
            let canary = route.canary.as_ref()?;
            Some((service.clone(), canary_view(api, service, canary)))
        })
        .collect();
    if let Value::Object(fields) = &mut body {
        fields.insert("canaries".to_owned(), Value::Object(canaries));
        fields.insert("methods".to_owned(), Value::Object(methods));
        fields.insert(
            "rest".to_owned(),
            json!({ "routes": routes, "refused": rest.refused() }),
        );
    }
    body
}
