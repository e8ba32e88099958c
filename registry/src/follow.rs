//! Following a scope of the registry for as long as a node lives: what services and the
//! gateway use to keep a view of the cluster. One place lists, watches, re-lists after a
//! watch ends, and hides the seams: a follower sees each node join once, change, and
//! leave once, whatever the backend went through.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::membership::Membership;
use crate::{Change, Registry, Scope, Watch, discover_until_stopped};

/// The changes of one scope, from an empty view on: every node already registered first
/// comes as [`Change::Joined`], then every change as it happens.
pub struct Follow {
    registry: Arc<dyn Registry>,
    scope: Scope,
    stop: CancellationToken,
    known: Membership,
    watch: Option<Watch>,
    pending: VecDeque<Change>,
}

/// Follows `scope` until `stop` is cancelled. While the registry cannot be reached the
/// follower waits (with backoff) and then catches up with exactly what changed.
pub fn follow(registry: Arc<dyn Registry>, scope: Scope, stop: CancellationToken) -> Follow {
    Follow {
        registry,
        scope,
        stop,
        known: Membership::default(),
        watch: None,
        pending: VecDeque::new(),
    }
}

impl Follow {
    /// Follows on from a discovery the caller already made (and acted on): only changes
    /// after `snapshot` come.
    pub fn after(
        registry: Arc<dyn Registry>,
        snapshot: crate::Snapshot,
        watch: Watch,
        stop: CancellationToken,
    ) -> Follow {
        Follow {
            registry,
            scope: snapshot.scope.clone(),
            stop,
            known: Membership::new(snapshot.instances),
            watch: Some(watch),
            pending: VecDeque::new(),
        }
    }

    /// Whether every node of the last listing has been announced and the follower now
    /// waits on the watch: what a node's readiness waits for after it starts.
    pub fn caught_up(&self) -> bool {
        self.watch.is_some() && self.pending.is_empty()
    }

    /// The next change; `None` once `stop` is cancelled.
    pub async fn next(&mut self) -> Option<Change> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some(change);
            }
            if self.stop.is_cancelled() {
                return None;
            }
            let Some(watch) = self.watch.as_mut() else {
                // (Re)list, and announce only what differs from what was announced.
                let (snapshot, watch) =
                    discover_until_stopped(&*self.registry, &self.scope, &self.stop).await?;
                self.pending.extend(self.known.resync(snapshot.instances));
                self.watch = Some(watch);
                continue;
            };
            let event = tokio::select! {
                _ = self.stop.cancelled() => return None,
                event = watch.next() => event,
            };
            match event {
                Some(event) => {
                    let change = match event.change {
                        Change::Joined(i) | Change::Updated(i) => self.known.put(i),
                        Change::Left(i) => self.known.delete(&i.service, &i.id),
                    };
                    self.pending.extend(change);
                }
                // The backend gave this watch up: list again.
                None => {
                    metrics::counter!("rustms_registry_relists_total").increment(1);
                    self.watch = None
                }
            }
        }
    }
}
