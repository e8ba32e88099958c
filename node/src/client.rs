//! Calling another service: a gRPC channel over all its nodes, kept current by discovery.

use std::sync::Arc;
use std::time::Duration;

use registry::{Change, Instance, Registry, RegistryError, Scope};
use tokio_util::sync::CancellationToken;

use crate::credentials::{ClusterCredentials, Signed};
use tonic::transport::channel::Change as Discovered;
use tonic::transport::{Channel, Endpoint};

/// A channel whose calls carry this node's call credential.
pub type ServiceChannel = Signed<Channel>;

/// A load-balanced channel to every node of `service`, following joins and leaves for as
/// long as the channel (or a clone of it) is alive. Calls carry `credentials`: signed
/// with the call key, over mutual TLS when it is configured.
pub async fn service_channel(
    registry: Arc<dyn Registry>,
    service: &str,
    credentials: ClusterCredentials,
) -> Result<ServiceChannel, RegistryError> {
    // Listed here, so that a registry that cannot be reached at start says so.
    let (snapshot, watch) = registry.discover(&Scope::service(service)).await?;
    let (channel, nodes) = Channel::balance_channel::<String>(64);
    for instance in &snapshot.instances {
        insert(&nodes, instance, &credentials).await;
    }
    let key = credentials.key.clone();
    let stop = CancellationToken::new();
    let mut followed = registry::Follow::after(registry, snapshot, watch, stop.clone());
    let service = service.to_owned();
    tokio::spawn(async move {
        while let Some(change) = followed.next().await {
            let sent = match change {
                Change::Joined(i) | Change::Updated(i) => insert(&nodes, &i, &credentials).await,
                Change::Left(i) => nodes.send(Discovered::Remove(i.id.clone())).await.is_ok(),
            };
            if !sent {
                // Every clone of the channel is gone: nobody needs this service any more.
                stop.cancel();
            }
        }
        tracing::debug!(%service, "discovery for the channel ended");
    });
    Ok(Signed::new(channel, key))
}

async fn insert(
    nodes: &tokio::sync::mpsc::Sender<Discovered<String, Endpoint>>,
    instance: &Instance,
    credentials: &ClusterCredentials,
) -> bool {
    let endpoint = match credentials.endpoint(&instance.address) {
        Ok(endpoint) => endpoint.connect_timeout(Duration::from_secs(2)),
        Err(error) => {
            tracing::warn!(address = %instance.address, %error, "skipping a node with an unusable address");
            return true;
        }
    };
    nodes
        .send(Discovered::Insert(instance.id.clone(), endpoint))
        .await
        .is_ok()
}
