//! Following a scope in etcd: replay from a revision, and re-list plus diff whenever the
//! replay is broken (disconnect, compaction, a restarted etcd).

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use registry::backend::{Membership, WatchSender};
use registry::{Backoff, Scope, Snapshot};
use tokio_util::sync::CancellationToken;

use crate::{EtcdRegistry, within};

/// Why a watch stream ended.
enum Interrupted {
    /// The watcher went away or the watch was stopped: end the task.
    Stopped,
    /// etcd can no longer replay from our revision: re-list and diff.
    Broken(String),
}

pub(crate) async fn follow(
    registry: EtcdRegistry,
    from: Snapshot,
    tx: WatchSender,
    stop: CancellationToken,
) {
    let scope = from.scope.clone();
    let mut known = Membership::new(from.instances);
    let mut revision = from.revision;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
    loop {
        let streamed = stream_from(
            &registry,
            &scope,
            &mut known,
            &mut revision,
            &tx,
            &stop,
            &mut backoff,
        );
        match streamed.await {
            Interrupted::Stopped => return,
            Interrupted::Broken(reason) => {
                metrics::counter!("rustms_registry_relists_total").increment(1);
                tracing::warn!(%reason, revision, "watch interrupted, will re-list and diff");
            }
        }
        loop {
            if sleep_or_stop(&stop, &tx, backoff.next_delay()).await {
                return;
            }
            match registry.list(&scope).await {
                Ok((fresh, at)) => {
                    for change in known.resync(fresh) {
                        if !tx.send(at, change) {
                            return;
                        }
                    }
                    revision = at;
                    break;
                }
                // Keep the last good membership: only a successful read may change it.
                Err(error) => {
                    tracing::warn!(%error, "watch: re-list failed, keeping the last known nodes")
                }
            }
        }
    }
}

/// Sleeps; true when the watch was stopped meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, tx: &WatchSender, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tx.closed() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// Streams events after `revision` until etcd cannot go on; keeps `known` and `revision` current.
async fn stream_from(
    registry: &EtcdRegistry,
    scope: &Scope,
    known: &mut Membership,
    revision: &mut u64,
    tx: &WatchSender,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Interrupted {
    let mut client = registry.client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*revision as i64 + 1)
        .with_progress_notify();
    let opened = tokio::select! {
        _ = stop.cancelled() => return Interrupted::Stopped,
        opened = within(
            registry.options.request_timeout,
            "watch",
            client.watch(registry.layout.prefix(scope), Some(options)),
        ) => opened,
    };
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(error) => return Interrupted::Broken(error.to_string()),
    };
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Interrupted::Stopped,
            _ = tx.closed() => return Interrupted::Stopped,
            message = stream.message() => message,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return Interrupted::Broken("etcd closed the watch stream".into()),
            Err(error) => return Interrupted::Broken(crate::describe(&error)),
        };
        if response.compact_revision() > 0 {
            return Interrupted::Broken(format!(
                "revision {} was compacted (oldest kept is {})",
                *revision + 1,
                response.compact_revision()
            ));
        }
        if response.canceled() {
            return Interrupted::Broken(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason()
            ));
        }
        if response.created() {
            backoff.reset();
        }
        if !forward_events(registry, &response, known, revision, tx) {
            return Interrupted::Stopped;
        }
        // A progress notice says nothing in our prefix changed up to its revision.
        if response.events().is_empty()
            && !response.created()
            && let Some(header) = response.header()
        {
            *revision = (*revision).max(header.revision().max(0) as u64);
        }
    }
}

/// Applies a response's events to `known` and sends the changes; false when the watcher
/// went away.
fn forward_events(
    registry: &EtcdRegistry,
    response: &etcd_client::WatchResponse,
    known: &mut Membership,
    revision: &mut u64,
    tx: &WatchSender,
) -> bool {
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        let at = kv.mod_revision().max(0) as u64;
        let change = match event.event_type() {
            EventType::Put => match registry.layout.decode(kv.key(), kv.value()) {
                Ok(Some(instance)) => known.put(instance),
                Ok(None) => None,
                Err(error) => {
                    tracing::warn!(%error, "watch: skipping unreadable entry");
                    None
                }
            },
            EventType::Delete => {
                let key = String::from_utf8_lossy(kv.key());
                registry
                    .layout
                    .identity(&key)
                    .and_then(|(service, id)| known.delete(service, id))
            }
        };
        *revision = (*revision).max(at);
        if let Some(change) = change
            && !tx.send(at, change)
        {
            return false;
        }
    }
    true
}
