//! `follow`: what is registered first, then each change once, until stopped.

use std::sync::Arc;
use std::time::Duration;

use registry::{Change, Instance, Registration, Registry, Scope, follow};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_follower_sees_the_registered_nodes_then_each_change_once_until_stopped() {
    let registry: Arc<dyn Registry> = Arc::new(registry_memory::MemoryRegistry::new());
    let first = registry
        .register(Registration::new(Instance::new("user", "127.0.0.1:9001")))
        .await
        .unwrap();
    let _other_service = registry
        .register(Registration::new(Instance::new("order", "127.0.0.1:9101")))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let mut users = follow(registry.clone(), Scope::service("user"), stop.clone());
    let within = Duration::from_secs(5);

    let joined = tokio::time::timeout(within, users.next()).await.unwrap();
    assert!(matches!(&joined, Some(Change::Joined(i)) if i.address == "127.0.0.1:9001"));

    let second = registry
        .register(Registration::new(Instance::new("user", "127.0.0.1:9002")))
        .await
        .unwrap();
    let joined = tokio::time::timeout(within, users.next()).await.unwrap();
    assert!(matches!(&joined, Some(Change::Joined(i)) if i.address == "127.0.0.1:9002"));

    first.deregister().await.unwrap();
    let left = tokio::time::timeout(within, users.next()).await.unwrap();
    assert!(matches!(&left, Some(Change::Left(i)) if i.address == "127.0.0.1:9001"));

    stop.cancel();
    assert_eq!(
        tokio::time::timeout(within, users.next()).await.unwrap(),
        None
    );
    drop(second);
}
