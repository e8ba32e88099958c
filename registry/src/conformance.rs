//! The behaviour every [`Registry`] backend must show, written once.
//!
//! A backend's tests implement [`Harness`] and call [`conformance_suite!`](crate::conformance_suite),
//! which expands into one named test per behaviour. The suite waits with tokio's clock, so a
//! backend that runs in process can be tested on a paused clock, and etcd on the real one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;

use crate::{Change, Instance, Registration, Registry, RegistryError, Scope, Snapshot, Watch};

/// A fresh, empty registry and the means to break it from outside.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The registry under test. Two calls share one store and one namespace.
    fn registry(&self) -> Arc<dyn Registry>;

    /// Revokes the lease that holds `instance`, as an operator would.
    async fn revoke_lease(&self, instance: &Instance);

    /// Deletes `instance`'s entry, leaving its lease alive, as an operator would.
    async fn delete_entry(&self, instance: &Instance);
}

/// Long enough for any backend on a loaded machine; the paused clock makes it free.
const PATIENCE: Duration = Duration::from_secs(30);
/// TTLs used in the suite: short, but at least etcd's minimum lease TTL.
const SHORT_TTL: Duration = Duration::from_secs(2);

/// The same arguments give an equal instance, so tests can compare what comes back.
fn instance(service: &str, n: usize) -> Instance {
    Instance {
        started_at_ms: 1_700_000_000_000,
        ..Instance::new(service, format!("127.0.0.1:{}", 10_000 + n))
            .with_id(format!("{service}-{n}"))
            .with_version("1.0.0")
            .with_metadata("zone", "test")
    }
}

async fn register(registry: &dyn Registry, instance: Instance) -> crate::Registered {
    match registry
        .register(Registration::new(instance.clone()).with_ttl(SHORT_TTL))
        .await
    {
        Ok(handle) => handle,
        Err(error) => panic!("registering {instance:?} failed: {error}"),
    }
}

async fn snapshot(registry: &dyn Registry, scope: &Scope) -> Snapshot {
    match registry.snapshot(scope).await {
        Ok(snapshot) => snapshot,
        Err(error) => panic!("snapshot of {scope:?} failed: {error}"),
    }
}

async fn next_change(watch: &mut Watch) -> Change {
    match tokio::time::timeout(PATIENCE, watch.next()).await {
        Ok(Some(event)) => event.change,
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no change within {PATIENCE:?}"),
    }
}

/// Waits until the snapshot of `scope` satisfies `done`, or fails after [`PATIENCE`].
async fn eventually(
    registry: &dyn Registry,
    scope: &Scope,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = snapshot(registry, scope).await;
        if done(&now) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: not true within {PATIENCE:?}; last snapshot {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.instances.iter().map(|i| i.id.as_str()).collect()
}

pub async fn register_list_deregister(h: &dyn Harness) {
    let registry = h.registry();
    let user = instance("user", 1);
    let handle = register(&*registry, user.clone()).await;
    let listed = snapshot(&*registry, &Scope::service("user")).await;
    assert_eq!(
        listed.instances,
        vec![user.clone()],
        "the instance comes back as registered"
    );
    assert!(listed.revision > 0);
    handle.deregister().await.expect("deregister");
    let after = snapshot(&*registry, &Scope::service("user")).await;
    assert!(
        after.instances.is_empty(),
        "deregistered instance still listed: {after:?}"
    );
    assert!(after.revision > listed.revision);
}

pub async fn several_instances_of_one_service_are_listed_apart_from_others(h: &dyn Harness) {
    let registry = h.registry();
    let mut handles = Vec::new();
    for n in 0..3 {
        handles.push(register(&*registry, instance("user", n)).await);
    }
    handles.push(register(&*registry, instance("gateway", 9)).await);
    let users = snapshot(&*registry, &Scope::service("user")).await;
    assert_eq!(ids(&users), vec!["user-0", "user-1", "user-2"]);
    let all = snapshot(&*registry, &Scope::All).await;
    assert_eq!(all.services(), vec!["gateway", "user"]);
    assert_eq!(all.instances.len(), 4);
    // A service whose name starts like another's is a different service.
    let prefix_only = snapshot(&*registry, &Scope::service("use")).await;
    assert!(prefix_only.instances.is_empty());
}

pub async fn instance_whose_keepalive_stops_expires_with_a_leave_event(h: &dyn Harness) {
    let registry = h.registry();
    let kept = register(&*registry, instance("user", 1)).await;
    let crashed = register(&*registry, instance("user", 2)).await;
    let (_, mut watch) = registry
        .discover(&Scope::service("user"))
        .await
        .expect("discover");
    crashed.abandon();
    assert_eq!(
        next_change(&mut watch).await,
        Change::Left(instance("user", 2))
    );
    let listed = snapshot(&*registry, &Scope::service("user")).await;
    assert_eq!(
        ids(&listed),
        vec!["user-1"],
        "the kept instance outlives several TTLs"
    );
    drop(kept);
}

pub async fn watch_after_a_snapshot_sees_exactly_the_later_changes_in_order(h: &dyn Harness) {
    let registry = h.registry();
    let mut early = Vec::new();
    for n in 0..5 {
        early.push(register(&*registry, instance("user", n)).await);
    }
    let (snap, mut watch) = registry
        .discover(&Scope::service("user"))
        .await
        .expect("discover");
    assert_eq!(snap.instances.len(), 5);

    let late = register(&*registry, instance("user", 5)).await;
    let other = register(&*registry, instance("order", 1)).await;
    let leaving = early.remove(0);
    leaving.deregister().await.expect("deregister");
    let also_late = register(&*registry, instance("user", 6)).await;
    late.deregister().await.expect("deregister");

    let mut seen = Vec::new();
    let mut last_revision = snap.revision;
    for _ in 0..4 {
        let event = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("a change in time")
            .expect("watch open");
        assert!(
            event.revision > last_revision,
            "revisions increase: {event:?} after {last_revision}"
        );
        last_revision = event.revision;
        seen.push(event.change);
    }
    assert_eq!(
        seen,
        vec![
            Change::Joined(instance("user", 5)),
            Change::Left(instance("user", 0)),
            Change::Joined(instance("user", 6)),
            Change::Left(instance("user", 5)),
        ]
    );
    // Nothing else is pending: the order instance is out of scope and nothing was doubled.
    let marker = register(&*registry, instance("user", 7)).await;
    assert_eq!(
        next_change(&mut watch).await,
        Change::Joined(instance("user", 7))
    );
    drop((other, also_late, marker, early));
}

pub async fn lease_revoked_from_outside_is_registered_again(h: &dyn Harness) {
    let registry = h.registry();
    let user = instance("user", 1);
    let handle = register(&*registry, user.clone()).await;
    let mut state = handle.subscribe();
    h.revoke_lease(&user).await;
    tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| s.registered && s.leases_acquired >= 2),
    )
    .await
    .expect("registered again in time")
    .expect("registration task alive");
    eventually(&*registry, &Scope::service("user"), "listed again", |s| {
        s.instances == vec![user.clone()]
    })
    .await;
    handle.deregister().await.expect("deregister");
}

pub async fn entry_deleted_from_outside_is_put_back(h: &dyn Harness) {
    let registry = h.registry();
    let user = instance("user", 1);
    let handle = register(&*registry, user.clone()).await;
    let (_, mut watch) = registry
        .discover(&Scope::service("user"))
        .await
        .expect("discover");
    h.delete_entry(&user).await;
    assert_eq!(next_change(&mut watch).await, Change::Left(user.clone()));
    assert_eq!(next_change(&mut watch).await, Change::Joined(user.clone()));
    handle.deregister().await.expect("deregister");
}

pub async fn hundred_concurrent_registrations_are_all_visible(h: &dyn Harness) {
    let registry = h.registry();
    let handles = join_all((0..100).map(|n| {
        let registry = registry.clone();
        async move { register(&*registry, instance("user", n)).await }
    }))
    .await;
    let listed = snapshot(&*registry, &Scope::service("user")).await;
    assert_eq!(listed.instances.len(), 100);
    join_all(handles.into_iter().map(|h| h.deregister())).await;
    let after = snapshot(&*registry, &Scope::service("user")).await;
    assert!(
        after.instances.is_empty(),
        "{} left after deregistering all",
        after.instances.len()
    );
}

pub async fn dropping_the_handle_deregisters(h: &dyn Harness) {
    let registry = h.registry();
    let handle = register(&*registry, instance("user", 1)).await;
    let (_, mut watch) = registry
        .discover(&Scope::service("user"))
        .await
        .expect("discover");
    drop(handle);
    assert_eq!(
        next_change(&mut watch).await,
        Change::Left(instance("user", 1))
    );
}

pub async fn every_bad_input_is_refused_naming_the_field(h: &dyn Harness) {
    let registry = h.registry();
    let cases: Vec<(Registration, &str)> = vec![
        (
            Registration::new(Instance::new("", "127.0.0.1:1")),
            "service",
        ),
        (
            Registration::new(Instance::new("a/b", "127.0.0.1:1")),
            "service",
        ),
        (
            Registration::new(Instance::new("user", "127.0.0.1:1").with_id("x/y")),
            "id",
        ),
        (
            Registration::new(Instance::new("user", "127.0.0.1")),
            "address",
        ),
        (
            Registration::new(Instance::new("user", "localhost:http")),
            "address",
        ),
        (
            Registration::new(Instance::new("user", "127.0.0.1:1"))
                .with_ttl(Duration::from_millis(500)),
            "ttl",
        ),
    ];
    for (registration, field) in cases {
        match registry.register(registration.clone()).await {
            Err(RegistryError::InvalidInput { field: got, reason }) => {
                assert_eq!(got, field, "wrong field for {registration:?} ({reason})");
                assert!(!reason.is_empty());
            }
            other => panic!("{registration:?} was not refused: {other:?}"),
        }
    }
    match registry.snapshot(&Scope::service("a/b")).await {
        Err(RegistryError::InvalidInput {
            field: "service", ..
        }) => {}
        other => panic!("snapshot of a bad name was not refused: {other:?}"),
    }
    let all = snapshot(&*registry, &Scope::All).await;
    assert!(
        all.instances.is_empty(),
        "refused registrations left entries: {all:?}"
    );
}

/// Expands into one test per behaviour of the suite.
///
/// `$attr` is the test attribute (for example `tokio::test(start_paused = true)`) and
/// `$harness` an async expression that yields `Option<impl Harness>`: `None` skips the
/// test, for backends that cannot run here (the fixture says why).
#[macro_export]
macro_rules! conformance_suite {
    (#[$attr:meta] $harness:expr) => {
        $crate::conformance_suite!(@tests #[$attr] $harness;
            register_list_deregister,
            several_instances_of_one_service_are_listed_apart_from_others,
            instance_whose_keepalive_stops_expires_with_a_leave_event,
            watch_after_a_snapshot_sees_exactly_the_later_changes_in_order,
            lease_revoked_from_outside_is_registered_again,
            entry_deleted_from_outside_is_put_back,
            hundred_concurrent_registrations_are_all_visible,
            dropping_the_handle_deregisters,
            every_bad_input_is_refused_naming_the_field,
        );
    };
    (@tests #[$attr:meta] $harness:expr; $($name:ident),+ $(,)?) => {
        $(
            #[$attr]
            async fn $name() {
                if let Some(harness) = $harness.await {
                    $crate::conformance::$name(&harness).await;
                }
            }
        )+
    };
}
