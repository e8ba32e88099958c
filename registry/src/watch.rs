use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Instance;

/// What happened to one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An instance that was not there is there now.
    Joined(Instance),
    /// An instance that stayed registered changed what it advertises.
    Updated(Instance),
    /// An instance is gone (deregistered, expired, or deleted).
    Left(Instance),
}

impl Change {
    pub fn instance(&self) -> &Instance {
        match self {
            Change::Joined(i) | Change::Updated(i) | Change::Left(i) => i,
        }
    }
}

/// A change and the registry revision it happened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: u64,
    pub change: Change,
}

/// The producing side of a [`Watch`], used by backends.
///
/// The channel is unbounded on purpose: a slow watcher must never lose an event, and
/// registry changes are few and small.
#[derive(Debug, Clone)]
pub struct WatchSender {
    tx: mpsc::UnboundedSender<WatchEvent>,
}

impl WatchSender {
    /// Returns false when the watcher has gone away and the producer can stop.
    pub fn send(&self, revision: u64, change: Change) -> bool {
        self.tx.send(WatchEvent { revision, change }).is_ok()
    }

    /// Resolves when the watcher has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A stream of changes after a snapshot. Dropping it stops the backend's work for it.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::UnboundedReceiver<WatchEvent>,
    _stop: Option<DropGuard>,
}

impl Watch {
    /// A connected pair; `stop` (if any) is cancelled when the watch is dropped.
    pub fn channel(stop: Option<CancellationToken>) -> (WatchSender, Watch) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            WatchSender { tx },
            Watch {
                rx,
                _stop: stop.map(CancellationToken::drop_guard),
            },
        )
    }

    /// The next change; `None` once the backend has stopped for good.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

impl Stream for Watch {
    type Item = WatchEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.rx.poll_recv(cx)
    }
}
