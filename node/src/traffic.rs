//! The traffic rules a node's service clients follow: on etcd, the rules of the route
//! table `gateway routes push` stored (`{namespace}/config/gateway/routes`), read again
//! whenever it changes; on the memory registry, none (there is no shared store).

use cluster::traffic::LiveTraffic;
use tokio_util::sync::CancellationToken;

use crate::Connected;

/// Keeps `live` to the stored route table's rules until `stop`.
pub(crate) fn follow(backend: &Connected, live: LiveTraffic, stop: &CancellationToken) {
    match backend {
        #[cfg(feature = "etcd")]
        Connected::Etcd(etcd) => {
            tokio::spawn(etcd_table::follow(etcd.kv(), live, stop.clone()));
        }
        _ => {
            let _ = (live, stop);
        }
    }
}

#[cfg(feature = "etcd")]
mod etcd_table {
    use cluster::traffic::{LiveTraffic, TrafficTable};
    use etcd_client::{Event, EventType, KeyValue};
    use registry::RegistryError;
    use registry_etcd::{KeyFollower, KeyWatch, Kv};
    use tokio_util::sync::CancellationToken;

    pub async fn follow(kv: Kv, live: LiveTraffic, stop: CancellationToken) {
        let key = crate::route_table_key(kv.namespace());
        KeyWatch::key(kv, key)
            .run(&mut StoredRules(live), stop)
            .await;
    }

    struct StoredRules(LiveTraffic);

    impl StoredRules {
        fn apply(&self, value: Option<&[u8]>) {
            let Some(value) = value else {
                self.0.set(TrafficTable::default());
                return;
            };
            match TrafficTable::from_route_table(&String::from_utf8_lossy(value)) {
                Ok(table) => self.0.set(table),
                Err(error) => tracing::warn!(
                    %error,
                    "the stored route table's traffic rules cannot be read; keeping the last good ones"
                ),
            }
        }
    }

    impl KeyFollower for StoredRules {
        fn listed(&mut self, kvs: &[KeyValue], _revision: u64) -> bool {
            self.apply(kvs.first().map(KeyValue::value));
            true
        }

        fn changed(&mut self, event: &Event) -> bool {
            let Some(kv) = event.kv() else { return true };
            match event.event_type() {
                EventType::Put => self.apply(Some(kv.value())),
                EventType::Delete => self.apply(None),
            }
            true
        }

        fn interrupted(&mut self, reason: &str, _revision: u64) {
            tracing::debug!(error = %reason, "traffic rules watch interrupted; reading them again");
        }

        fn read_failed(&mut self, error: &RegistryError) {
            tracing::debug!(%error, "traffic rules watch interrupted; reading them again");
        }
    }
}
