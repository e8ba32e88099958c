//! Every node follows the whole namespace and logs, in GO-MS's words, who joins and leaves.
//! What it saw is also the node's view of the cluster on the admin port, and its first
//! full listing is part of the node's readiness.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use registry::{Change, Instance, Registry, Scope};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The nodes a node knows of, by service and id.
#[derive(Clone, Default)]
pub struct Known(Arc<RwLock<BTreeMap<(String, String), Instance>>>);

impl Known {
    fn apply(&self, change: &Change) {
        let mut nodes = self.0.write().unwrap_or_else(|p| p.into_inner());
        match change {
            Change::Joined(i) | Change::Updated(i) => {
                nodes.insert((i.service.clone(), i.id.clone()), i.clone());
            }
            Change::Left(i) => {
                nodes.remove(&(i.service.clone(), i.id.clone()));
            }
        }
    }

    /// `{"services": {"user": {"nodes": [{id, address, version, metadata}]}}}`.
    pub fn to_json(&self) -> Value {
        let nodes = self.0.read().unwrap_or_else(|p| p.into_inner());
        crate::admin::cluster_json(
            nodes.values().map(|node| (node, serde_json::Map::new())),
            |_| serde_json::Map::new(),
        )
    }
}

/// What a join line waits for: people and scripts take `... join` as the signal that the
/// node can be called through this one (the gateway: once it is in its routing view).
pub type JoinGate = Arc<dyn Fn(Instance) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Logs `Server [NAME] cluster [ADDR] join` for each node already registered (except
/// `me`), then a `join` or `leave` line for every change, until `stop`; a join line once
/// `gate` lets it. Keeps `known` current and calls `listed` once the first listing has
/// been gone through.
pub async fn log_membership(
    registry: Arc<dyn Registry>,
    me: Instance,
    known: Known,
    gate: Option<JoinGate>,
    listed: impl FnOnce(),
    stop: CancellationToken,
) {
    let is_me = |i: &Instance| i.service == me.service && i.id == me.id;
    let mut cluster = registry::follow(registry, Scope::All, stop);
    let mut listed = Some(listed);
    while let Some(change) = cluster.next().await {
        known.apply(&change);
        let event = match &change {
            Change::Joined(i) if !is_me(i) => {
                if let Some(gate) = &gate {
                    gate(i.clone()).await;
                }
                log_join(i);
                "join"
            }
            Change::Left(i) if !is_me(i) => {
                log_leave(i);
                "leave"
            }
            Change::Updated(i) if !is_me(i) => {
                tracing::info!("Server [{}] cluster [{}] update", i.service, i.address);
                "update"
            }
            _ => "self",
        };
        if event != "self" {
            metrics::counter!(telemetry::prometheus::names::REGISTRY_EVENTS, "event" => event)
                .increment(1);
        }
        if cluster.caught_up()
            && let Some(listed) = listed.take()
        {
            listed();
        }
    }
}

fn log_join(instance: &Instance) {
    tracing::info!(
        "Server [{}] cluster [{}] join",
        instance.service,
        instance.address
    );
}

fn log_leave(instance: &Instance) {
    tracing::info!(
        "Server [{}] cluster [{}] leave",
        instance.service,
        instance.address
    );
}
