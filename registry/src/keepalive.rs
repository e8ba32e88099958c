//! Keeping one registration alive, shared by every backend.
//!
//! A backend says how to acquire, refresh and release a lease ([`Leaser`], [`Lease`]); the
//! loop here decides when: refresh every third of the TTL, and when the lease is lost
//! acquire a new one, retrying forever with a capped, jittered backoff until shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Backoff, Instance, Registration, RegistryError};

/// What a refresh learned about a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// The registration is gone from the backend (expired, revoked, key deleted).
    Lost(String),
}

/// One granted lease with the instance's entry bound to it.
#[async_trait]
pub trait Lease: Send {
    /// Extends the lease and checks that the entry is still there.
    async fn refresh(&mut self) -> Result<Liveness, RegistryError>;

    /// Revokes the lease, which removes the entry bound to it (and only that entry).
    async fn release(self: Box<Self>) -> Result<(), RegistryError>;
}

/// Grants leases and puts entries under them: the backend half of a registration.
#[async_trait]
pub trait Leaser: Send + Sync + 'static {
    /// Grants a new lease of `registration.ttl` and stores the instance under it.
    async fn acquire(&self, registration: &Registration) -> Result<Box<dyn Lease>, RegistryError>;
}

/// Where a registration stands, for callers that want to follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationState {
    /// False between losing a lease and acquiring the next one.
    pub registered: bool,
    /// How many leases this registration has acquired so far (1 after registering).
    pub leases_acquired: u64,
}

/// A live registration. Its background task keeps it alive and puts it back when lost.
///
/// [`Registered::deregister`] removes it and reports how that went; dropping the handle
/// removes it too, on a best-effort basis.
#[derive(Debug)]
pub struct Registered {
    instance: Instance,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), RegistryError>>>,
    state: watch::Receiver<RegistrationState>,
}

impl Registered {
    /// Validates, acquires the first lease (errors are returned, not retried), and starts
    /// the background task that keeps it.
    pub async fn start(
        leaser: Arc<dyn Leaser>,
        registration: Registration,
    ) -> Result<Registered, RegistryError> {
        registration.validate()?;
        let lease = leaser.acquire(&registration).await?;
        let (state_tx, state) = watch::channel(RegistrationState {
            registered: true,
            leases_acquired: 1,
        });
        let stop = CancellationToken::new();
        let instance = registration.instance.clone();
        let task = tokio::spawn(keep_alive(
            leaser,
            registration,
            lease,
            stop.clone(),
            state_tx,
        ));
        Ok(Registered {
            instance,
            stop,
            task: Some(task),
            state,
        })
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    pub fn state(&self) -> RegistrationState {
        *self.state.borrow()
    }

    /// Follows the registration's state as it changes.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Removes the registration now and waits until the backend has confirmed it.
    pub async fn deregister(mut self) -> Result<(), RegistryError> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| RegistryError::backend("deregister", e))?,
            None => Ok(()),
        }
    }

    /// Stops keeping the registration alive without removing it, as a crashed process
    /// would: the entry disappears when its TTL runs out.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // The task sees the cancellation and releases the lease on its own.
        self.stop.cancel();
    }
}

async fn keep_alive(
    leaser: Arc<dyn Leaser>,
    registration: Registration,
    mut lease: Box<dyn Lease>,
    stop: CancellationToken,
    state: watch::Sender<RegistrationState>,
) -> Result<(), RegistryError> {
    let instance = &registration.instance;
    let interval = (registration.ttl / 3).max(Duration::from_millis(100));
    let mut last_refreshed = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return lease.release().await,
            _ = tokio::time::sleep(interval) => {}
        }
        let lost = match lease.refresh().await {
            Ok(Liveness::Alive) => {
                last_refreshed = Instant::now();
                None
            }
            Ok(Liveness::Lost(reason)) => {
                metrics::counter!("rustms_registry_keepalive_failures_total").increment(1);
                Some(reason)
            }
            // Unreachable backend: the lease may still be alive; only after a whole TTL
            // without a good refresh is it surely gone.
            Err(error) if last_refreshed.elapsed() >= registration.ttl => {
                metrics::counter!("rustms_registry_keepalive_failures_total").increment(1);
                Some(format!("no refresh for a whole TTL ({error})"))
            }
            Err(error) => {
                metrics::counter!("rustms_registry_keepalive_failures_total").increment(1);
                tracing::warn!(service = %instance.service, id = %instance.id, %error, "lease refresh failed, will retry");
                None
            }
        };
        let Some(reason) = lost else { continue };
        tracing::warn!(service = %instance.service, id = %instance.id, %reason, "registration lost, registering again");
        state.send_modify(|s| s.registered = false);
        let Some(fresh) = acquire_until_stopped(&*leaser, &registration, &stop).await else {
            // Stopped while unregistered: release what may be left of the old lease.
            let _ = lease.release().await;
            return Ok(());
        };
        let old = std::mem::replace(&mut lease, fresh);
        // The old lease no longer holds the entry; revoking it only tidies up.
        let _ = tokio::time::timeout(interval, old.release()).await;
        last_refreshed = Instant::now();
        state.send_modify(|s| {
            s.registered = true;
            s.leases_acquired += 1;
        });
        metrics::counter!("rustms_registry_lease_reacquisitions_total").increment(1);
        tracing::info!(service = %instance.service, id = %instance.id, "registered again");
    }
}

async fn acquire_until_stopped(
    leaser: &dyn Leaser,
    registration: &Registration,
    stop: &CancellationToken,
) -> Option<Box<dyn Lease>> {
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        registration.ttl.min(Duration::from_secs(5)),
    );
    loop {
        match leaser.acquire(registration).await {
            Ok(lease) => return Some(lease),
            Err(error) => tracing::warn!(
                service = %registration.instance.service,
                id = %registration.instance.id,
                %error,
                "registering again failed, retrying"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
