//! A [`Registry`] that lives in one process.
//!
//! It behaves like the etcd backend: entries are bound to leases that expire when nobody
//! refreshes them, every change has a revision, and a watch started after a snapshot sees
//! every later change once. Use it in unit tests and in the single-process dev stack.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use registry::backend::{Lease, Leaser, Liveness, Membership, WatchSender};
use registry::{
    Change, Instance, Registered, Registration, Registry, RegistryError, Scope, Snapshot, Watch,
};
use tokio::time::Instant;

/// How many past changes a watch can be started behind; older snapshots are caught up by
/// a diff, as etcd does after a compaction.
const HISTORY: usize = 4096;

type Key = (String, String);

#[derive(Clone, Default)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    revision: u64,
    next_lease: u64,
    entries: BTreeMap<Key, Entry>,
    leases: HashMap<u64, LeaseRecord>,
    history: VecDeque<(u64, Change)>,
    watchers: Vec<(Scope, WatchSender)>,
}

struct Entry {
    instance: Instance,
    lease: u64,
}

struct LeaseRecord {
    ttl: Duration,
    deadline: Instant,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes the lease holding `service/id`, as an operator would. False if not found.
    pub fn revoke_lease_of(&self, service: &str, id: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(lease) = state.entries.get(&key(service, id)).map(|e| e.lease) else {
            return false;
        };
        state.revoke(lease);
        true
    }

    /// Deletes the entry `service/id` and leaves its lease alone. False if not found.
    pub fn delete_entry(&self, service: &str, id: &str) -> bool {
        self.shared.lock().delete(&key(service, id))
    }
}

fn key(service: &str, id: &str) -> Key {
    (service.to_owned(), id.to_owned())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole registry would, so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn emit(&mut self, change: Change) {
        let revision = self.revision;
        let service = change.instance().service.clone();
        self.watchers
            .retain(|(scope, tx)| !scope.covers(&service) || tx.send(revision, change.clone()));
        self.history.push_back((revision, change));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    fn put(&mut self, instance: Instance, lease: u64) {
        self.bump();
        let key = key(&instance.service, &instance.id);
        let change = match self.entries.get(&key) {
            None => Some(Change::Joined(instance.clone())),
            Some(old) if old.instance == instance => None,
            Some(_) => Some(Change::Updated(instance.clone())),
        };
        self.entries.insert(key, Entry { instance, lease });
        if let Some(change) = change {
            self.emit(change);
        }
    }

    fn delete(&mut self, key: &Key) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.bump();
        self.emit(Change::Left(entry.instance));
        true
    }

    fn revoke(&mut self, lease: u64) {
        if self.leases.remove(&lease).is_none() {
            return;
        }
        let bound: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| e.lease == lease)
            .map(|(k, _)| k.clone())
            .collect();
        for key in bound {
            self.delete(&key);
        }
    }

    fn in_scope(&self, scope: &Scope) -> Vec<Instance> {
        self.entries
            .values()
            .filter(|e| scope.covers(&e.instance.service))
            .map(|e| e.instance.clone())
            .collect()
    }
}

/// Revokes `lease` once its deadline passes without a refresh.
async fn expire_when_due(shared: Weak<Shared>, lease: u64, mut deadline: Instant) {
    loop {
        tokio::time::sleep_until(deadline).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        match state.leases.get(&lease) {
            None => return,
            Some(record) if record.deadline <= Instant::now() => {
                state.revoke(lease);
                return;
            }
            Some(record) => deadline = record.deadline,
        }
    }
}

struct MemoryLeaser {
    shared: Weak<Shared>,
}

struct MemoryLease {
    shared: Weak<Shared>,
    lease: u64,
    key: Key,
}

fn closed() -> RegistryError {
    RegistryError::backend("lease", "the memory registry was dropped")
}

#[async_trait]
impl Leaser for MemoryLeaser {
    async fn acquire(&self, registration: &Registration) -> Result<Box<dyn Lease>, RegistryError> {
        let shared = self.shared.upgrade().ok_or_else(closed)?;
        let deadline = Instant::now() + registration.ttl;
        let lease = {
            let mut state = shared.lock();
            state.next_lease += 1;
            let lease = state.next_lease;
            state.leases.insert(
                lease,
                LeaseRecord {
                    ttl: registration.ttl,
                    deadline,
                },
            );
            state.put(registration.instance.clone(), lease);
            lease
        };
        tokio::spawn(expire_when_due(self.shared.clone(), lease, deadline));
        let instance = &registration.instance;
        Ok(Box::new(MemoryLease {
            shared: self.shared.clone(),
            lease,
            key: key(&instance.service, &instance.id),
        }))
    }
}

#[async_trait]
impl Lease for MemoryLease {
    async fn refresh(&mut self) -> Result<Liveness, RegistryError> {
        let shared = self.shared.upgrade().ok_or_else(closed)?;
        let mut state = shared.lock();
        let Some(record) = state.leases.get_mut(&self.lease) else {
            return Ok(Liveness::Lost("lease expired or revoked".into()));
        };
        record.deadline = Instant::now() + record.ttl;
        match state.entries.get(&self.key) {
            Some(entry) if entry.lease == self.lease => Ok(Liveness::Alive),
            _ => Ok(Liveness::Lost("entry deleted".into())),
        }
    }

    async fn release(self: Box<Self>) -> Result<(), RegistryError> {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().revoke(self.lease);
        }
        Ok(())
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, registration: Registration) -> Result<Registered, RegistryError> {
        let leaser = Arc::new(MemoryLeaser {
            shared: Arc::downgrade(&self.shared),
        });
        Registered::start(leaser, registration).await
    }

    async fn snapshot(&self, scope: &Scope) -> Result<Snapshot, RegistryError> {
        scope.validate()?;
        let state = self.shared.lock();
        Ok(Snapshot::new(
            scope.clone(),
            state.revision,
            state.in_scope(scope),
        ))
    }

    async fn watch(&self, from: &Snapshot) -> Result<Watch, RegistryError> {
        from.scope.validate()?;
        let mut state = self.shared.lock();
        if from.revision > state.revision {
            return Err(RegistryError::invalid(
                "revision",
                format!(
                    "{} is ahead of this registry ({})",
                    from.revision, state.revision
                ),
            ));
        }
        let (tx, watch) = Watch::channel(None);
        let oldest_kept = state
            .history
            .front()
            .map_or(state.revision + 1, |(r, _)| *r);
        if from.revision + 1 >= oldest_kept {
            // Replay what happened since the snapshot; the lock keeps new changes out.
            for (revision, change) in state.history.iter() {
                if *revision > from.revision && from.scope.covers(&change.instance().service) {
                    tx.send(*revision, change.clone());
                }
            }
        } else {
            // Too far behind: catch up with the difference, as etcd does after compaction.
            let mut known = Membership::new(from.instances.clone());
            for change in known.resync(state.in_scope(&from.scope)) {
                tx.send(state.revision, change);
            }
        }
        state.watchers.push((from.scope.clone(), tx));
        Ok(watch)
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::conformance::Harness;

    struct MemoryHarness {
        registry: MemoryRegistry,
    }

    #[async_trait]
    impl Harness for MemoryHarness {
        fn registry(&self) -> Arc<dyn Registry> {
            Arc::new(self.registry.clone())
        }

        async fn revoke_lease(&self, instance: &Instance) {
            assert!(
                self.registry
                    .revoke_lease_of(&instance.service, &instance.id)
            );
        }

        async fn delete_entry(&self, instance: &Instance) {
            assert!(self.registry.delete_entry(&instance.service, &instance.id));
        }
    }

    async fn harness() -> Option<MemoryHarness> {
        Some(MemoryHarness {
            registry: MemoryRegistry::new(),
        })
    }

    registry::conformance_suite!(
        #[tokio::test(start_paused = true)]
        harness()
    );

    #[tokio::test(start_paused = true)]
    async fn a_watch_started_behind_the_history_catches_up_by_difference() {
        let registry = MemoryRegistry::new();
        let first = registry.snapshot(&Scope::All).await.unwrap();
        let mut handles = Vec::new();
        for n in 0..(HISTORY + 10) {
            let instance = Instance::new("user", "127.0.0.1:1").with_id(format!("n{n}"));
            handles.push(
                registry
                    .register(Registration::new(instance))
                    .await
                    .unwrap(),
            );
        }
        let mut watch = registry.watch(&first).await.unwrap();
        let mut joined = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), watch.next()).await
        {
            joined += 1;
        }
        assert_eq!(joined, HISTORY + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_from_the_future_is_refused() {
        let registry = MemoryRegistry::new();
        let mut snapshot = registry.snapshot(&Scope::All).await.unwrap();
        snapshot.revision += 5;
        assert!(matches!(
            registry.watch(&snapshot).await,
            Err(RegistryError::InvalidInput {
                field: "revision",
                ..
            })
        ));
    }
}
