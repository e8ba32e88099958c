//! The rust-ms API gateway.
//!
//! A node like any other (registered as `gateway` with its rpc address) that also serves
//! HTTP: `/api/{service}/{method}` turns JSON into a gRPC call found by reflection, and the
//! rpc port passes native gRPC through to the service's nodes. [`cluster::ClusterView`]
//! keeps the live nodes from the registry, one HTTP/2 channel each.

mod api;
mod api_docs;
mod auth;
mod canary;
mod codec;
#[cfg(test)]
mod door_tests;
mod failure;
mod grpc_web;
mod history;
mod http;
pub mod listing;
mod live_routes;
mod observe;
mod openapi;
mod proxy;
pub mod rate_limit;
mod reflection;
mod resilience;
mod rest;
pub mod settings;
mod stack;
mod state;
mod status;
mod stream_http;
mod transcode;
#[cfg(test)]
mod transcode_props;
mod websocket;

#[cfg(feature = "etcd")]
pub use live_routes::etcd::key as route_table_key;
pub use settings::GatewaySettings;

use std::sync::Arc;

use node::Connected;
use node::{Context, Serve, Service};

use crate::live_routes::LiveRoutes;
use crate::state::Gateway;

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
    let gateway = Arc::new(Gateway::new(
        follow_the_cluster(&context),
        follow_the_routes(&context),
        settings.gateway.clone(),
        context.tracing(),
    ));
    tokio::spawn(keep_rest_routes_fresh(gateway.clone(), context.shutdown()));
    drive_the_canaries(&context, &gateway);
    tokio::spawn(keep_history(gateway.clone(), context.shutdown()));
    let passthrough = axum::Router::new()
        .route(reflection::V1_PATH, axum::routing::any(reflection::v1))
        .route(
            reflection::V1ALPHA_PATH,
            axum::routing::any(reflection::v1alpha),
        )
        .fallback(proxy::forward)
        .with_state(gateway.clone());
    let (cluster, routes) = (gateway.clone(), gateway.clone());
    Ok(Serve::new()
        // Every call on the rpc port is the cluster's: the gateway records it itself, and
        // reflection there describes the whole cluster, not the gateway alone.
        .fallback(passthrough)
        // Ready once the view holds the registry's first listing.
        .readiness(gateway.view.listed())
        .admin_view("cluster", move || {
            let view = http::cluster_view(&cluster);
            async move { view }
        })
        .admin_view("history", {
            let gateway = gateway.clone();
            move || {
                let body = serde_json::json!({
                    "every_seconds": history::SAMPLE_EVERY.as_secs(),
                    "samples": gateway.meters.history.samples(),
                });
                async move { body }
            }
        })
        .admin_view("routes", move || {
            let gateway = routes.clone();
            async move { http::routes_view(&gateway).await }
        })
        // A join line is the signal that the node can be called through this gateway.
        .announce_joins_when({
            let view = gateway.view.clone();
            move |instance| {
                let view = view.clone();
                async move {
                    if !view.wait_for(&instance, JOIN_PATIENCE).await {
                        tracing::debug!(address = %instance.address, "joined node not in the routing view in time");
                    }
                }
            }
        })
        .admin_page(
            api_docs::NAME,
            api_docs::PAGE,
            api_docs::routes(gateway.clone(), http::router(gateway.clone())),
        )
        .http(http, http::router(gateway))
        // Callers of the gateway come from outside; the gateway signs what it sends on.
        .open_to_callers_outside_the_cluster()
        // The route table the gateway follows holds the rules its own node steers by.
        .feeds_traffic_rules())
}

/// The live view of every service's nodes, health-checked as the settings say.
/// How often the REST table is held against the services' newest running versions: a
/// service that joins or upgrades has its routes within about this long.
const REST_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

async fn keep_rest_routes_fresh(
    gateway: Arc<Gateway>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(REST_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => gateway.refresh_rest().await,
        }
    }
}

/// Closes a sample of the dashboard's charts every [`history::SAMPLE_EVERY`].
async fn keep_history(gateway: Arc<Gateway>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(history::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut shed: std::collections::BTreeMap<String, u64> = Default::default();
        for state in gateway
            .limits
            .as_ref()
            .map(|l| l.snapshot())
            .unwrap_or_default()
        {
            *shed.entry(state.service).or_default() += state.shed;
        }
        let shed: Vec<(String, u64)> = shed.into_iter().collect();
        let now = tokio::time::Instant::now();
        gateway.meters.history.close(
            registry::unix_millis_now(),
            now.duration_since(last).as_secs_f64(),
            &shed,
            &gateway.guards.rate_limited(),
        );
        last = now;
    }
}

fn follow_the_cluster(context: &Context<GatewaySettings>) -> cluster::ClusterView {
    let settings = &context.settings().gateway;
    let ejection = cluster::Ejection {
        after_failures: settings.eject_after_failures,
        for_how_long: settings.eject_for,
        max_ejected_percent: cluster::MAX_EJECTED_PERCENT,
    };
    let options = cluster::ViewOptions::new(
        ejection,
        settings.health_interval,
        context.credentials().clone(),
        cluster::ViewMetrics::GATEWAY,
    );
    cluster::ClusterView::follow(
        context.registry(),
        registry::Scope::All,
        options,
        context.shutdown(),
    )
}

/// On etcd, each gateway publishes what it sees of running canaries, and the one elected
/// judges them and writes its decisions into the stored route table. On the memory
/// registry a canary stays at its first step: there is no stored table to move it in.
#[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
fn drive_the_canaries(context: &Context<GatewaySettings>, gateway: &Arc<Gateway>) {
    match context.backend() {
        #[cfg(feature = "etcd")]
        Connected::Etcd(etcd) => {
            tokio::spawn(canary::lead::run(
                etcd.client(),
                etcd.namespace().to_owned(),
                gateway.clone(),
                context.config().registry.ttl,
                context.shutdown(),
            ));
        }
        Connected::Memory(_) => {}
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// The route table: the configured one, and on etcd the one stored there
/// (`gateway routes push`) as it changes.
fn follow_the_routes(context: &Context<GatewaySettings>) -> LiveRoutes {
    let routes = LiveRoutes::new(
        context.settings().routes.clone(),
        context.traffic_rules().clone(),
    );
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
    routes
}
