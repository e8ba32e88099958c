//! Whether this node can do its work: a user node without its store can only fail every
//! call, so it reports NOT_SERVING (and the gateway sends it nothing) until the store
//! answers again.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::store::UserStore;

/// How often the node probes its store.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe slower than this counts as a failure: a hung store is as bad as a down one.
pub(crate) const PROBE_BOUND: Duration = Duration::from_secs(2);

/// The node's readiness as the store allows it, shared by the probe and the handlers (a
/// handler that meets an unreachable store need not wait for the next probe).
#[derive(Clone)]
pub(crate) struct StoreReadiness {
    ready: watch::Sender<bool>,
}

impl StoreReadiness {
    /// Ready at first: the node has just reached its backend to start.
    pub(crate) fn new() -> (Self, watch::Receiver<bool>) {
        let (ready, receiver) = watch::channel(true);
        (Self { ready }, receiver)
    }

    /// Logs only the transition, not every failed probe.
    pub(crate) fn unreachable(&self, cause: &dyn Display) {
        // `send_if_modified` also works with no receiver left, unlike `send`.
        if self
            .ready
            .send_if_modified(|ready| std::mem::replace(ready, false))
        {
            tracing::warn!(
                %cause,
                "the user store cannot be reached: this node reports NOT_SERVING until it can"
            );
        }
    }

    pub(crate) fn reachable(&self) {
        if self
            .ready
            .send_if_modified(|ready| !std::mem::replace(ready, true))
        {
            tracing::info!("the user store can be reached again: this node reports SERVING");
        }
    }

    /// Whether nobody reads the readiness any more (the node has stopped serving).
    async fn closed(&self) {
        self.ready.closed().await;
    }
}

/// Probes `store` every `every` into `readiness`, until `stop` is cancelled or nobody reads
/// the readiness any more.
pub(crate) async fn probe_store(
    store: Arc<dyn UserStore>,
    readiness: StoreReadiness,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            _ = readiness.closed() => return,
            outcome = tokio::time::timeout(PROBE_BOUND, store.check()) => outcome,
        };
        match outcome {
            Ok(Ok(())) => readiness.reachable(),
            Ok(Err(error)) => readiness.unreachable(&error),
            Err(_) => readiness.unreachable(&format_args!(
                "the store did not answer a probe within {PROBE_BOUND:?}"
            )),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = readiness.closed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::store::fake::FlakyStore;

    fn start(
        store: Arc<FlakyStore>,
    ) -> (
        watch::Receiver<bool>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (readiness, receiver) = StoreReadiness::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(probe_store(store, readiness, PROBE_EVERY, stop.clone()));
        (receiver, stop, task)
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_goes_false_while_the_store_fails_and_true_once_it_recovers() {
        let store = Arc::new(FlakyStore::default());
        let (mut ready, stop, task) = start(store.clone());
        assert!(*ready.borrow_and_update());

        store.set_down(true);
        ready.changed().await.unwrap();
        assert!(!*ready.borrow_and_update());

        store.set_down(false);
        ready.changed().await.unwrap();
        assert!(*ready.borrow_and_update());

        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_hangs_counts_as_unreachable() {
        let store = Arc::new(FlakyStore::default());
        let (mut ready, stop, task) = start(store.clone());
        store.set_hanging(true);
        let started = tokio::time::Instant::now();
        ready.changed().await.unwrap();
        assert!(!*ready.borrow_and_update());
        // Noticed within a probe interval and the probe's bound, not never.
        assert!(started.elapsed() <= PROBE_EVERY + PROBE_BOUND);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_stops_when_the_node_shuts_down_or_nobody_reads_it() {
        let (_ready, stop, task) = start(Arc::new(FlakyStore::default()));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();

        let (ready, _stop, task) = start(Arc::new(FlakyStore::default()));
        drop(ready);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }
}
