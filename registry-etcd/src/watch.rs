//! Following a scope in etcd: the registry's side of a [`KeyWatch`], which turns what it
//! reads into joins, updates and leaves, and a re-read into the difference.

use etcd_client::{Event, EventType, KeyValue};
use registry::backend::{Membership, WatchSender};
use registry::{RegistryError, Snapshot};
use tokio_util::sync::CancellationToken;

use crate::EtcdRegistry;
use crate::key_watch::{KeyFollower, KeyWatch};
use crate::layout::Layout;

pub(crate) async fn follow(
    registry: EtcdRegistry,
    from: Snapshot,
    tx: WatchSender,
    stop: CancellationToken,
) {
    let watch =
        KeyWatch::prefix(registry.kv(), registry.layout.prefix(&from.scope)).after(from.revision);
    let mut members = Members {
        layout: &registry.layout,
        known: Membership::new(from.instances),
        tx: &tx,
    };
    tokio::select! {
        _ = tx.closed() => {}
        _ = watch.run(&mut members, stop) => {}
    }
}

/// The instances of one scope as the watcher was last told, and the channel to tell it.
struct Members<'a> {
    layout: &'a Layout,
    known: Membership,
    tx: &'a WatchSender,
}

impl KeyFollower for Members<'_> {
    fn listed(&mut self, kvs: &[KeyValue], revision: u64) -> bool {
        let fresh = kvs
            .iter()
            .filter_map(|kv| match self.layout.decode(kv.key(), kv.value()) {
                Ok(instance) => instance,
                // One unreadable entry must not hide every other node.
                Err(error) => {
                    tracing::warn!(%error, "skipping registry entry");
                    None
                }
            })
            .collect();
        self.known
            .resync(fresh)
            .into_iter()
            .all(|change| self.tx.send(revision, change))
    }

    fn changed(&mut self, event: &Event) -> bool {
        let Some(kv) = event.kv() else { return true };
        let change = match event.event_type() {
            EventType::Put => match self.layout.decode(kv.key(), kv.value()) {
                Ok(Some(instance)) => self.known.put(instance),
                Ok(None) => None,
                Err(error) => {
                    tracing::warn!(%error, "watch: skipping unreadable entry");
                    None
                }
            },
            EventType::Delete => {
                let key = String::from_utf8_lossy(kv.key());
                self.layout
                    .identity(&key)
                    .and_then(|(service, id)| self.known.delete(service, id))
            }
        };
        let at = kv.mod_revision().max(0) as u64;
        change.is_none_or(|change| self.tx.send(at, change))
    }

    fn interrupted(&mut self, reason: &str, revision: u64) {
        metrics::counter!("rustms_registry_relists_total").increment(1);
        tracing::warn!(%reason, revision, "watch interrupted, will re-list and diff");
    }

    fn read_failed(&mut self, error: &RegistryError) {
        tracing::warn!(%error, "watch: re-list failed, keeping the last known nodes");
    }
}
