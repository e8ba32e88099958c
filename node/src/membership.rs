//! Every node follows the whole namespace and logs, in GO-MS's words, who joins and leaves.

use std::sync::Arc;

use registry::{Change, Instance, Registry, Scope};
use tokio_util::sync::CancellationToken;

/// Logs `Server [NAME] cluster [ADDR] join` for each node already registered (except
/// `me`), then a `join` or `leave` line for every change, until `stop`.
pub async fn log_membership(registry: Arc<dyn Registry>, me: Instance, stop: CancellationToken) {
    let is_me = |i: &Instance| i.service == me.service && i.id == me.id;
    let mut cluster = registry::follow(registry, Scope::All, stop);
    while let Some(change) = cluster.next().await {
        match &change {
            Change::Joined(i) if !is_me(i) => log_join(i),
            Change::Left(i) if !is_me(i) => log_leave(i),
            Change::Updated(i) if !is_me(i) => {
                tracing::info!("Server [{}] cluster [{}] update", i.service, i.address)
            }
            _ => {}
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
