//! The registry conformance suite on real etcd, plus what only etcd can do to a node:
//! compaction, restarts, and a cluster member dying.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use registry::conformance::Harness;
use registry::{Change, Instance, Registration, Registry, Scope};
use registry_etcd::EtcdRegistry;
use tests::etcd::{Etcd, EtcdCluster};
use tests::require;

struct EtcdHarness {
    etcd: Etcd,
    registry: EtcdRegistry,
}

#[async_trait]
impl Harness for EtcdHarness {
    fn registry(&self) -> Arc<dyn Registry> {
        Arc::new(self.registry.clone())
    }

    async fn revoke_lease(&self, instance: &Instance) {
        let mut client = self.etcd.client().await;
        let key = self.registry.key_of(instance);
        let found = client.get(key.clone(), None).await.expect("get");
        let lease = found.kvs().first().expect("instance key present").lease();
        client.lease_revoke(lease).await.expect("revoke");
    }

    async fn delete_entry(&self, instance: &Instance) {
        let mut client = self.etcd.client().await;
        let deleted = client
            .delete(self.registry.key_of(instance), None)
            .await
            .expect("delete");
        assert_eq!(deleted.deleted(), 1);
    }
}

fn namespace() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

async fn harness() -> EtcdHarness {
    let etcd = require!(Etcd::start().await);
    let registry = etcd.registry(&namespace()).await;
    EtcdHarness { etcd, registry }
}

// The macro takes one attribute for every test; `cfg_attr(all(), ...)` (always true)
// carries two: the test itself and its ignore when the tests were built with no etcd. The
// harness never gives `None` (the suite would pass without running): it fails instead.
registry::conformance_suite!(
    #[cfg_attr(
        all(),
        tokio::test(flavor = "multi_thread", worker_threads = 2),
        cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")
    )]
    async {
        Some(harness().await)
    }
);

fn node(service: &str, n: u16) -> Instance {
    Instance::new(service, format!("127.0.0.1:{}", 20_000 + n)).with_id(format!("{service}-{n}"))
}

async fn next_change(watch: &mut registry::Watch, within: Duration) -> Option<Change> {
    tokio::time::timeout(within, watch.next())
        .await
        .ok()
        .flatten()
        .map(|e| e.change)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn watch_survives_a_compaction_with_only_the_real_difference() {
    let h = harness().await;
    let registry = &h.registry;
    let stays = registry
        .register(Registration::new(node("user", 1)).with_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let leaves = registry
        .register(Registration::new(node("user", 2)))
        .await
        .unwrap();
    let (snapshot, mut watch) = registry.discover(&Scope::service("user")).await.unwrap();
    assert_eq!(snapshot.instances.len(), 2);
    // Make the watch's revision unavailable: it must re-list instead of replaying.
    drop(watch);
    leaves.deregister().await.unwrap();
    let joins = registry
        .register(Registration::new(node("user", 3)))
        .await
        .unwrap();
    let mut client = h.etcd.client().await;
    let now = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(now, None).await.unwrap();
    watch = registry.watch(&snapshot).await.unwrap();
    let mut changes = Vec::new();
    while let Some(change) = next_change(&mut watch, Duration::from_secs(5)).await {
        changes.push(change);
    }
    assert_eq!(
        changes
            .iter()
            .map(|c| match c {
                Change::Joined(i) => format!("join {}", i.id),
                Change::Left(i) => format!("leave {}", i.id),
                Change::Updated(i) => format!("update {}", i.id),
            })
            .collect::<Vec<_>>(),
        vec!["leave user-2", "join user-3"],
        "user-1 stayed up and must not appear"
    );
    drop((stays, joins));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd_container, ignore = "needs Docker: it stops etcd")]
async fn node_is_listed_again_after_etcd_restarts_without_any_call() {
    let h = harness().await;
    let (stays, mut watch) = user_on_an_owned_etcd(&h, "stop", 0).await;
    let registry = &h.registry;
    h.etcd.stop().await;
    // Down for longer than the TTL: the node must notice and register again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.etcd.restart().await;

    wait_until_listed(registry, "user", "user-1").await;
    // A node that stayed registered never looks like it left and came back.
    let another = registry
        .register(Registration::new(node("order", 1)))
        .await
        .unwrap();
    let first = next_change(&mut watch, Duration::from_secs(30)).await;
    assert_eq!(first, Some(Change::Joined(another.instance().clone())));
    drop(stays);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd_container, ignore = "needs Docker: it replaces etcd")]
async fn node_registers_again_and_watch_carries_on_when_etcd_comes_back_empty() {
    let mut h = harness().await;
    // Revisions well past where the empty etcd starts, so that a watch that kept its old
    // revision would wait for changes that never come.
    let (stays, mut watch) = user_on_an_owned_etcd(&h, "replace", 20).await;
    let registry = h.registry.clone();

    // Every key, lease and revision is lost; the endpoint stays.
    h.etcd.replace_with_empty().await;
    wait_until_listed(&registry, "user", "user-1").await;
    assert!(
        stays.state().leases_acquired >= 2,
        "a new lease after the old one vanished: {:?}",
        stays.state()
    );

    // The watch follows the new etcd: a later join arrives.
    let _later = watch_sees_a_later_join(&registry, &mut watch).await;
    drop(stays);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd_container, ignore = "needs Docker: it pauses etcd")]
async fn node_registers_again_when_its_lease_expired_during_a_network_cut() {
    let h = harness().await;
    let (stays, mut watch) = user_on_an_owned_etcd(&h, "pause", 0).await;
    let registry = h.registry.clone();

    // No keepalive gets through for twice the TTL: the lease is gone when etcd answers.
    h.etcd.pause().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.etcd.unpause().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stays.state().leases_acquired < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new lease within 30 s of the cut healing: {:?}",
            stays.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until_listed(&registry, "user", "user-1").await;
    let _later = watch_sees_a_later_join(&registry, &mut watch).await;
    drop(stays);
}

/// `user-1` registered with a 2 s TTL and a watch of everything, on an etcd the test
/// owns so that it may `what` it (stop, pause, replace); fails when the etcd is not the
/// test's. `churn` registrations come and go first, to move the revision on.
async fn user_on_an_owned_etcd(
    h: &EtcdHarness,
    what: &str,
    churn: u16,
) -> (registry::Registered, registry::Watch) {
    h.etcd.require_container(what);
    let stays = h
        .registry
        .register(Registration::new(node("user", 1)).with_ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    for n in 0..churn {
        h.registry
            .register(Registration::new(node("churn", n)))
            .await
            .unwrap()
            .deregister()
            .await
            .unwrap();
    }
    let (_, watch) = h.registry.discover(&Scope::All).await.unwrap();
    (stays, watch)
}

/// Waits (30 s at most) until `service` lists the instance `id`.
async fn wait_until_listed(registry: &EtcdRegistry, service: &str, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(snapshot) = registry.snapshot(&Scope::service(service)).await
            && snapshot.instances.iter().any(|i| i.id == id)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} not listed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers `order-1` and waits for the watch to deliver its join; `user-1` may show a
/// leave and a join first, since it was really gone for a while. The registration is
/// returned to keep it alive as long as the caller wants.
async fn watch_sees_a_later_join(
    registry: &EtcdRegistry,
    watch: &mut registry::Watch,
) -> registry::Registered {
    let later = registry
        .register(Registration::new(node("order", 1)))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match next_change(watch, Duration::from_secs(30)).await {
            Some(Change::Joined(instance)) if instance == *later.instance() => return later,
            Some(Change::Joined(i) | Change::Left(i)) if i.id == "user-1" => {}
            other => panic!("unexpected change: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order-1 join never seen"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd_container, ignore = "needs Docker: it kills an etcd member")]
async fn cluster_keeps_registration_keepalive_and_watch_with_one_member_killed() {
    let cluster = require!(EtcdCluster::start().await);
    let ns = namespace();
    let registry = cluster.registry(&ns).await;
    let user = registry
        .register(Registration::new(node("user", 1)).with_ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    let (_, mut watch) = registry.discover(&Scope::All).await.unwrap();
    cluster.kill(0).await;

    // Keepalive: the node outlives several TTLs with a member gone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let listed = registry.snapshot(&Scope::service("user")).await.unwrap();
    assert_eq!(
        listed.instances.len(),
        1,
        "user-1 kept alive through the other members"
    );

    // Registration and watch: a new node registers and the old watch sees it.
    let order = registry
        .register(Registration::new(node("order", 1)))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(change) = next_change(&mut watch, Duration::from_secs(20)).await {
        let joined_order = matches!(&change, Change::Joined(i) if i.id == "order-1");
        seen.push(change);
        if joined_order {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|c| matches!(c, Change::Joined(i) if i.id == "order-1")),
        "the watch saw order-1 join: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|c| matches!(c, Change::Left(i) if i.id == "user-1")),
        "user-1 never left: {seen:?}"
    );
    drop((user, order));
}
