//! One registration's lease in etcd: grant, put under it, keep it alive, revoke.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use registry::backend::{Lease, Leaser, Liveness};
use registry::{Registration, RegistryError};

use crate::layout::Layout;
use crate::{request, within};

pub(crate) struct EtcdLeaser {
    client: Client,
    layout: Layout,
    request_timeout: Duration,
}

impl EtcdLeaser {
    pub fn new(client: Client, layout: Layout, request_timeout: Duration) -> Self {
        Self {
            client,
            layout,
            request_timeout,
        }
    }
}

#[async_trait]
impl Leaser for EtcdLeaser {
    async fn acquire(&self, registration: &Registration) -> Result<Box<dyn Lease>, RegistryError> {
        let client = &self.client;
        let instance = &registration.instance;
        let key = self.layout.key(&instance.service, &instance.id);
        let value = Layout::encode(instance)?;
        // etcd counts TTLs in whole seconds; round up so a node never lives shorter than asked.
        let ttl_secs = registration.ttl.as_secs() + u64::from(registration.ttl.subsec_nanos() > 0);
        // A lease granted twice by a retry is harmless: the spare one expires unused.
        let grant = request(
            client,
            self.request_timeout,
            "lease grant",
            |mut client| async move { client.lease_grant(ttl_secs as i64, None).await },
        )
        .await?;
        let lease_id = grant.id();
        let put = request(client, self.request_timeout, "put", |mut client| {
            let (key, value) = (key.clone(), value.clone());
            let options = PutOptions::new().with_lease(lease_id);
            async move { client.put(key, value, Some(options)).await }
        })
        .await;
        if let Err(error) = put {
            // Leave no empty lease behind; if etcd is gone it will expire anyway.
            let _ = request(
                client,
                self.request_timeout,
                "lease revoke",
                |mut client| async move { client.lease_revoke(lease_id).await },
            )
            .await;
            return Err(error);
        }
        Ok(Box::new(EtcdLease {
            client: client.clone(),
            key,
            lease_id,
            request_timeout: self.request_timeout,
            keepalive: None,
        }))
    }
}

struct EtcdLease {
    client: Client,
    key: String,
    lease_id: i64,
    request_timeout: Duration,
    keepalive: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl EtcdLease {
    /// One keepalive round trip on the lease's stream, opening it when needed.
    async fn keep_alive(&mut self) -> Result<Liveness, RegistryError> {
        let (keeper, stream) = match &mut self.keepalive {
            Some(open) => open,
            None => {
                let opened = within(
                    self.request_timeout,
                    "lease keepalive",
                    self.client.lease_keep_alive(self.lease_id),
                )
                .await?;
                self.keepalive.insert(opened)
            }
        };
        let answer = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        let reply = within(self.request_timeout, "lease keepalive", answer).await;
        match reply {
            Ok(Some(reply)) if reply.ttl() > 0 => Ok(Liveness::Alive),
            Ok(Some(_)) => Ok(Liveness::Lost(
                "etcd answered the keepalive with TTL 0: lease expired or revoked".into(),
            )),
            // A closed or broken stream leaves the lease's fate unknown: treat it as lost
            // and take a fresh one rather than keep an id etcd may have forgotten.
            Ok(None) => {
                self.keepalive = None;
                Ok(Liveness::Lost("keepalive stream closed".into()))
            }
            Err(error) => {
                self.keepalive = None;
                Ok(Liveness::Lost(format!("keepalive stream broke: {error}")))
            }
        }
    }
}

#[async_trait]
impl Lease for EtcdLease {
    async fn refresh(&mut self) -> Result<Liveness, RegistryError> {
        if let Liveness::Lost(reason) = self.keep_alive().await? {
            return Ok(Liveness::Lost(reason));
        }
        // An operator may delete the key and leave the lease: notice it and put it back.
        let found = request(&self.client, self.request_timeout, "get", |mut client| {
            let key = self.key.clone();
            async move {
                client
                    .get(key, Some(GetOptions::new().with_keys_only()))
                    .await
            }
        })
        .await?;
        match found.kvs().first() {
            Some(kv) if kv.lease() == self.lease_id => Ok(Liveness::Alive),
            Some(_) => Ok(Liveness::Lost("entry now bound to another lease".into())),
            None => Ok(Liveness::Lost("entry deleted".into())),
        }
    }

    async fn release(mut self: Box<Self>) -> Result<(), RegistryError> {
        self.keepalive = None;
        let lease_id = self.lease_id;
        request(
            &self.client,
            self.request_timeout,
            "lease revoke",
            |mut client| async move { client.lease_revoke(lease_id).await },
        )
        .await
        .map(drop)
    }
}
