//! The gateway's HTTP side.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::{self, Api};
use crate::failure;

pub fn router(api: Arc<Api>) -> Router {
    let cors = cors(&api.settings.cors_allow_origins);
    let router = Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/cluster", get(cluster))
        .route("/routes", get(routes))
        .route("/api/{service}/{method}", any(api::handle))
        .with_state(api);
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
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(failure::REQUEST_ID),
            ])
            .expose_headers([
                HeaderName::from_static(failure::REQUEST_ID),
                HeaderName::from_static(failure::SERVED_BY),
            ]),
    )
}

/// The services the gateway routes to now (not the gateways themselves).
fn services_behind(api: &Api) -> std::collections::BTreeSet<String> {
    api.view
        .nodes()
        .iter()
        .map(|node| node.instance.service.clone())
        .filter(|service| service != "gateway")
        .collect()
}

/// `GET /`: where to go from here, with the services the gateway routes to right now.
async fn index(State(api): State<Arc<Api>>) -> Json<Value> {
    let services = services_behind(&api);
    let calls: Vec<String> = services
        .iter()
        .map(|service| format!("/api/{service}/{{method}}"))
        .collect();
    Json(json!({
        "gateway": "rust-ms",
        "api": "POST /api/{service}/{method} with a JSON body (GET with query parameters for simple reads); an unknown method answers 404 listing the service's methods",
        "services": calls,
        "cluster": "/cluster: the live nodes, by service",
        "routes": "/routes: the route table in force",
        "health": "/healthz",
        "grpc": "native gRPC on the gateway's rpc port, passed through to the service's nodes",
    }))
}

/// `GET /cluster`: the live nodes the gateway routes to, by service.
async fn cluster(State(api): State<Arc<Api>>) -> Json<Value> {
    let mut services = serde_json::Map::new();
    for node in api.view.nodes() {
        let node = &node.instance;
        let entry = services
            .entry(node.service.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({
                "id": node.id,
                "address": node.address,
                "version": node.version,
                "metadata": node.metadata,
            }));
        }
    }
    Json(Value::Object(services))
}

/// `GET /routes`: the route table in force and where it came from, and for each method of
/// each service the gateway routes to, whether it is retried and taken by GET, and
/// whether the route or the proto says so.
async fn routes(State(api): State<Arc<Api>>) -> Json<Value> {
    let in_force = api.routes.in_force();
    let mut body = serde_json::to_value(&*in_force).unwrap_or_default();
    let services = services_behind(&api);
    let mut methods = serde_json::Map::new();
    for service in services {
        let route = api.routes.route(&service);
        for node in api.view.nodes_of(&service) {
            let Ok(schema) = api.schema_of(&node).await else {
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
    if let Value::Object(fields) = &mut body {
        fields.insert("methods".to_owned(), Value::Object(methods));
    }
    Json(body)
}
