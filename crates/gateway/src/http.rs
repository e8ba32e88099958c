//! The gateway's HTTP side.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::cluster::ClusterView;

pub fn router(view: ClusterView) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/cluster", get(cluster))
        .with_state(view)
}

/// `GET /cluster`: the live nodes the gateway routes to, by service.
async fn cluster(State(view): State<ClusterView>) -> Json<Value> {
    let mut services = serde_json::Map::new();
    for node in view.nodes() {
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
