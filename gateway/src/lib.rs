//! The rust-ms API gateway.
//!
//! A node like any other (registered as `gateway` with its rpc address) that also serves
//! HTTP: `/api/{service}/{method}` turns JSON into a gRPC call found by reflection, and the
//! rpc port passes native gRPC through to the service's nodes. [`cluster::ClusterView`]
//! keeps the live nodes from the registry, one HTTP/2 channel each.

pub mod admit;
pub mod api;
pub mod auth;
pub mod codec;
pub mod failure;
pub mod http;
pub mod listing;
pub mod live_routes;
pub mod observe;
pub mod pipeline;
pub mod proxy;
pub mod reflection;
pub mod resilience;
pub mod settings;
pub mod status;
pub mod transcode;

use std::sync::Arc;

use node::backend::Connected;
use node::{Context, Serve, Service};

use crate::api::Api;
use crate::live_routes::LiveRoutes;
use crate::settings::GatewaySettings;

/// How long a join line waits for the node to be in the routing view; the view follows
/// the same registry, so it is there within moments unless the node left again.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway node: registered as `gateway`, HTTP on `http_port` (`/api`), native gRPC
/// passed through on `rpc_port`, over a live view of the cluster; its view of every node
/// and its route table on the admin port (`/admin/cluster`, `/admin/routes`).
/// On etcd it follows the route table stored there (`gateway routes push`).
pub fn service() -> Service<GatewaySettings> {
    Service::new("gateway", env!("CARGO_PKG_VERSION"))
        .about("The rust-ms API gateway")
        .settings::<GatewaySettings>()
        .setup(|context| async move { Ok(serve(context).await?) })
}

async fn serve(context: Context<GatewaySettings>) -> Result<Serve, node::NodeError> {
    let http = context.listen(context.config().http_port).await?;
    let settings = context.settings();
    let ejection = cluster::Ejection {
        after_failures: settings.gateway.eject_after_failures,
        for_how_long: settings.gateway.eject_for,
        max_ejected_percent: cluster::MAX_EJECTED_PERCENT,
    };
    let options = cluster::ViewOptions::new(
        ejection,
        settings.gateway.health_interval,
        context.credentials().clone(),
        cluster::ViewMetrics::GATEWAY,
    );
    let view = cluster::ClusterView::follow(
        context.registry(),
        registry::Scope::All,
        options,
        context.shutdown(),
    );
    let routes = LiveRoutes::new(settings.routes.clone());
    match context.backend() {
        #[cfg(feature = "etcd")]
        Connected::Etcd(etcd) => {
            tokio::spawn(live_routes::etcd::follow(
                etcd.kv(),
                routes.clone(),
                context.shutdown(),
            ));
        }
        // The memory registry has no shared store: the configured routes are the table.
        Connected::Memory(_) => {}
        // etcd, in a build where only another crate turned the runtime's etcd on.
        #[allow(unreachable_patterns)]
        _ => tracing::warn!(
            "this gateway was built without its etcd feature: it follows no route table kept in etcd"
        ),
    }
    let api = Arc::new(Api::new(
        view,
        routes,
        settings.gateway.clone(),
        context.tracing(),
    ));
    let passthrough = axum::Router::new()
        .route(reflection::V1_PATH, axum::routing::any(reflection::v1))
        .route(
            reflection::V1ALPHA_PATH,
            axum::routing::any(reflection::v1alpha),
        )
        .fallback(proxy::forward)
        .with_state(api.clone());
    let (cluster, routes) = (api.clone(), api.clone());
    Ok(Serve::new()
        .fallback(passthrough)
        // Ready once the view holds the registry's first listing.
        .readiness(api.view.listed())
        .admin_view("cluster", move || {
            let view = http::cluster_view(&cluster);
            async move { view }
        })
        .admin_view("routes", move || {
            let api = routes.clone();
            async move { http::routes_view(&api).await }
        })
        // Reflection on the rpc port describes the whole cluster, not the gateway alone.
        // A join line is the signal that the node can be called through this gateway.
        .announce_joins_when({
            let view = api.view.clone();
            move |instance| {
                let view = view.clone();
                async move {
                    if !view.wait_for(&instance, JOIN_PATIENCE).await {
                        tracing::debug!(address = %instance.address, "joined node not in the routing view in time");
                    }
                }
            }
        })
        .own_reflection()
        .own_call_spans()
        .http(http, http::router(api))
        // Callers of the gateway come from outside; the gateway signs what it sends on.
        .open_to_callers_outside_the_cluster())
}
