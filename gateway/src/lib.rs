//! The rust-ms API gateway.
//!
//! A node like any other (registered as `gateway` with its rpc address) that also serves
//! HTTP: `/api/{service}/{method}` turns JSON into a gRPC call found by reflection, and the
//! rpc port passes native gRPC through to the service's nodes. [`cluster::ClusterView`]
//! keeps the live nodes from the registry, one HTTP/2 channel each.

pub mod api;
pub mod auth;
pub mod balance;
pub mod cluster;
pub mod codec;
pub mod http;
pub mod live_routes;
pub mod proxy;
pub mod resilience;
pub mod schema;
pub mod settings;
pub mod status;

use std::sync::Arc;

use registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::live_routes::LiveRoutes;
use crate::settings::GatewaySettings;

/// The gateway node: HTTP API and gRPC pass-through over a live view of the cluster.
/// The returned [`LiveRoutes`] can be fed from etcd.
pub fn node_spec(
    registry: Arc<dyn Registry>,
    settings: &GatewaySettings,
    credentials: node::credentials::ClusterCredentials,
    http_listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> (node::NodeSpec, LiveRoutes) {
    let options = cluster::ViewOptions {
        ejection: cluster::Ejection {
            after_failures: settings.gateway.eject_after_failures,
            for_how_long: settings.gateway.eject_for,
        },
        health_interval: settings.gateway.health_interval,
        credentials,
    };
    let view = cluster::ClusterView::follow(registry, options, stop);
    let routes = LiveRoutes::new(settings.routes.clone());
    let api = Arc::new(Api::new(view, routes.clone(), settings.gateway.clone()));
    let passthrough = axum::Router::new()
        .fallback(proxy::forward)
        .with_state(api.clone());
    let mut spec = node::NodeSpec::new(
        "gateway",
        env!("CARGO_PKG_VERSION"),
        tonic::service::Routes::from(passthrough),
    );
    // Callers of the gateway come from outside; the gateway signs what it sends on.
    spec.require_call_credential = false;
    spec.http = Some(node::HttpServer {
        listener: http_listener,
        router: http::router(api),
    });
    (spec, routes)
}
