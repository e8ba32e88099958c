//! Following keys in etcd: read them with the revision they were read at, watch from the
//! next revision, and whenever etcd cannot replay what happened since (a broken stream, a
//! compaction, a restarted etcd) pause, read them again and go on. The registry's watches
//! and the gateway's stored route table both follow keys this way.

use std::time::Duration;

use etcd_client::{Event, GetOptions, KeyValue, WatchOptions, WatchResponse};
use registry::{Backoff, RegistryError};
use tokio_util::sync::CancellationToken;

use crate::Kv;

/// What a [`KeyWatch`] reports to. `listed` and `changed` return whether to go on.
pub trait KeyFollower {
    /// Every watched key as of `revision`: after the first read and after each re-read,
    /// so that the follower can replace what it knew.
    fn listed(&mut self, kvs: &[KeyValue], revision: u64) -> bool;

    /// One change after the last read, in revision order.
    fn changed(&mut self, event: &Event) -> bool;

    /// The watch broke at `revision`; the keys are read again after a pause.
    fn interrupted(&mut self, reason: &str, revision: u64) {
        tracing::warn!(%reason, revision, "etcd watch interrupted; reading the keys again");
    }

    /// Reading the keys failed; it is tried again after a pause. What the follower knew
    /// stays: only a successful read may replace it.
    fn read_failed(&mut self, error: &RegistryError) {
        tracing::warn!(%error, "reading the watched keys failed; trying again");
    }
}

/// One key, or every key under a prefix, followed until stopped.
pub struct KeyWatch {
    kv: Kv,
    key: String,
    prefix: bool,
    /// The caller read the keys at this revision: the first round only watches.
    read_at: Option<u64>,
    backoff: Backoff,
}

/// Why a watch stream ended.
enum Ended {
    /// The follower wants no more.
    Stopped,
    /// etcd cannot go on from our revision: read again.
    Broken(String),
}

impl KeyWatch {
    /// Follows the single key `key`.
    pub fn key(kv: Kv, key: impl Into<String>) -> Self {
        Self::new(kv, key.into(), false)
    }

    /// Follows every key that starts with `prefix`.
    pub fn prefix(kv: Kv, prefix: impl Into<String>) -> Self {
        Self::new(kv, prefix.into(), true)
    }

    fn new(kv: Kv, key: String, prefix: bool) -> Self {
        Self {
            kv,
            key,
            prefix,
            read_at: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(3)),
        }
    }

    /// The caller has read the keys at `revision` (a snapshot): start by watching after it.
    pub fn after(mut self, revision: u64) -> Self {
        self.read_at = Some(revision);
        self
    }

    /// Tells `follower` what the keys hold and every change to them, until `stop` is
    /// cancelled or the follower wants no more.
    pub async fn run(mut self, follower: &mut impl KeyFollower, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.follow(follower) => {}
        }
    }

    async fn follow(&mut self, follower: &mut impl KeyFollower) {
        let mut read_at = self.read_at.take();
        loop {
            let mut revision = match read_at.take() {
                Some(revision) => revision,
                None => match self.read(follower).await {
                    Ok(Some(revision)) => revision,
                    Ok(None) => return,
                    Err(error) => {
                        follower.read_failed(&error);
                        self.pause().await;
                        continue;
                    }
                },
            };
            match self.stream_after(&mut revision, follower).await {
                Ended::Stopped => return,
                Ended::Broken(reason) => follower.interrupted(&reason, revision),
            }
            self.pause().await;
        }
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }

    /// Reads the keys and hands them to the follower: the revision read at, or `None`
    /// when the follower wants no more.
    async fn read(&self, follower: &mut impl KeyFollower) -> Result<Option<u64>, RegistryError> {
        let options = self.prefix.then(|| GetOptions::new().with_prefix());
        let response = self.kv.get(self.key.as_str(), options).await?;
        let revision = response
            .header()
            .map(|h| h.revision().max(0) as u64)
            .ok_or_else(|| RegistryError::backend("get", "etcd sent no revision"))?;
        Ok(follower
            .listed(response.kvs(), revision)
            .then_some(revision))
    }

    /// Streams the changes after `revision` until etcd cannot go on; keeps `revision`
    /// at the last one seen.
    async fn stream_after(&mut self, revision: &mut u64, follower: &mut impl KeyFollower) -> Ended {
        let mut options = WatchOptions::new()
            .with_start_revision(*revision as i64 + 1)
            .with_progress_notify();
        if self.prefix {
            options = options.with_prefix();
        }
        let mut stream = match self.kv.watch(self.key.as_str(), Some(options)).await {
            Ok(stream) => stream,
            Err(error) => return Ended::Broken(error.to_string()),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Ended::Broken("etcd closed the watch stream".into()),
                Err(error) => return Ended::Broken(crate::describe(&error)),
            };
            if let Some(reason) = unusable(&response, *revision) {
                return Ended::Broken(reason);
            }
            if response.created() {
                self.backoff.reset();
            }
            for event in response.events() {
                if let Some(kv) = event.kv() {
                    *revision = (*revision).max(kv.mod_revision().max(0) as u64);
                }
                if !follower.changed(event) {
                    return Ended::Stopped;
                }
            }
            // A progress notice says nothing watched changed up to its revision.
            if response.events().is_empty()
                && !response.created()
                && let Some(header) = response.header()
            {
                *revision = (*revision).max(header.revision().max(0) as u64);
            }
        }
    }
}

/// Why a watch response ends the stream, if it does: etcd compacted the revisions we
/// needed, or canceled the watch.
fn unusable(response: &WatchResponse, revision: u64) -> Option<String> {
    if response.compact_revision() > 0 {
        return Some(format!(
            "revision {} was compacted (oldest kept is {})",
            revision + 1,
            response.compact_revision()
        ));
    }
    response
        .canceled()
        .then(|| format!("etcd canceled the watch: {}", response.cancel_reason()))
}
