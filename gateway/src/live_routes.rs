//! The route table in force: from the configuration at start, replaced whole by the table
//! kept in etcd at `{namespace}/config/gateway/routes` whenever that changes. An invalid
//! table is refused and the last good one stays.

use std::sync::Arc;

use arc_swap::ArcSwap;
use cluster::traffic::{LiveTraffic, TrafficTable};
use serde::Serialize;

use crate::settings::{Route, RouteTable};

/// Where a route table came from (`/admin/routes` names it).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RouteSource {
    /// The gateway's own configuration, as it started.
    Configuration,
    /// The table `gateway routes push` stored in etcd, at `revision`.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Etcd,
}

/// Where the routes in force came from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoutesInForce {
    pub source: RouteSource,
    /// The etcd revision the table was read at (0 for the configuration's).
    pub revision: i64,
    pub routes: RouteTable,
    /// Each route shared, so a call takes one without copying it.
    #[serde(skip)]
    shared: std::collections::HashMap<String, Arc<Route>>,
}

impl RoutesInForce {
    fn new(source: RouteSource, revision: i64, routes: RouteTable) -> Self {
        // A canary's split is a rule like any other for the calls: it is applied here.
        let shared = routes
            .iter()
            .map(|(service, route)| (service.clone(), Arc::new(route.in_force())))
            .collect();
        Self {
            source,
            revision,
            routes,
            shared,
        }
    }

    /// Every route's traffic rules, for the calls the gateway's own node makes and for
    /// the headers the doors send on.
    fn traffic(&self) -> TrafficTable {
        TrafficTable::new(
            self.shared
                .iter()
                .map(|(service, route)| (service.clone(), route.traffic.clone())),
        )
    }
}

/// Each canary's share and whether it was rolled back, as metrics.
fn report_canaries(routes: &RouteTable) {
    use telemetry::prometheus::names;
    for (service, route) in routes {
        let Some(canary) = &route.canary else {
            continue;
        };
        let labels = [
            ("service", service.clone()),
            ("version", canary.version.clone()),
        ];
        metrics::gauge!(names::GATEWAY_CANARY_PERCENT, &labels).set(f64::from(canary.percent()));
        let rolled_back = canary.outcome() == cluster::canary::Outcome::RolledBack;
        metrics::gauge!(names::GATEWAY_CANARY_ROLLED_BACK, &labels).set(if rolled_back {
            1.0
        } else {
            0.0
        });
    }
}

/// The route of a service without one of its own.
static DEFAULT_ROUTE: std::sync::LazyLock<Arc<Route>> =
    std::sync::LazyLock::new(|| Arc::new(Route::default()));

/// The route table in force, and its traffic rules kept beside it in `traffic`: the
/// gateway's node steers its own service clients by them, and the doors send on the
/// headers they read, so one watch of the stored table serves both.
#[derive(Clone)]
pub struct LiveRoutes {
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    configured: Arc<RouteTable>,
    current: Arc<ArcSwap<RoutesInForce>>,
    traffic: LiveTraffic,
}

impl LiveRoutes {
    pub fn new(configured: RouteTable, traffic: LiveTraffic) -> Self {
        let current = RoutesInForce::new(RouteSource::Configuration, 0, configured.clone());
        traffic.set(current.traffic());
        report_canaries(&configured);
        Self {
            configured: Arc::new(configured),
            current: Arc::new(ArcSwap::from_pointee(current)),
            traffic,
        }
    }

    pub fn in_force(&self) -> Arc<RoutesInForce> {
        self.current.load_full()
    }

    /// The headers of a call the traffic rules read, to be sent on with it (a door that
    /// makes a new request for the node, such as `/api`, would drop them otherwise).
    pub fn carried_from(&self, headers: &http::HeaderMap) -> Option<http::HeaderMap> {
        self.traffic.carried_from(headers)
    }

    /// The route of `service`, or the defaults.
    pub fn route(&self, service: &str) -> Arc<Route> {
        self.current
            .load()
            .shared
            .get(service)
            .cloned()
            .unwrap_or_else(|| DEFAULT_ROUTE.clone())
    }

    // Stored tables come only through etcd: without the etcd backend nothing applies one.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn set(&self, routes: RoutesInForce) {
        metrics::gauge!(telemetry::prometheus::names::GATEWAY_ROUTE_REVISION)
            .set(routes.revision as f64);
        report_canaries(&routes.routes);
        self.traffic.set(routes.traffic());
        self.current.store(Arc::new(routes));
    }

    /// Applies the table stored in etcd (`None`: the key was deleted, back to configuration).
    // Stored tables come only through etcd: without the etcd backend nothing applies one.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn apply_stored(&self, text: Option<&str>, revision: i64) {
        let Some(text) = text else {
            tracing::info!(
                revision,
                "route table removed from etcd; using the configured routes"
            );
            self.set(RoutesInForce::new(
                RouteSource::Configuration,
                revision,
                (*self.configured).clone(),
            ));
            return;
        };
        // Not parse_route_table: that reads an empty text as no routes, and an empty value
        // (a bad write, a hand-made key) must not remove every gateway's routes.
        match crate::settings::parse_stored_route_table(text) {
            Ok(routes) => {
                tracing::info!(
                    revision,
                    services = routes.len(),
                    "route table updated from etcd"
                );
                self.set(RoutesInForce::new(RouteSource::Etcd, revision, routes));
            }
            Err(error) => {
                tracing::warn!(revision, %error, "refusing the route table in etcd; keeping the last good one")
            }
        }
    }
}

#[cfg(feature = "etcd")]
pub mod etcd {
    //! Following the stored route table, and the `gateway routes push|show` commands.

    use etcd_client::{Event, EventType, KeyValue};
    use registry::RegistryError;
    use registry_etcd::{KeyFollower, KeyWatch, Kv};
    use tokio_util::sync::CancellationToken;

    use super::LiveRoutes;

    pub fn key(namespace: &str) -> String {
        node::route_table_key(namespace)
    }

    /// Reads the stored table, then applies every change to it, until `stop`.
    pub async fn follow(kv: Kv, live: LiveRoutes, stop: CancellationToken) {
        let key = key(kv.namespace());
        KeyWatch::key(kv, key)
            .run(&mut StoredTable(live), stop)
            .await;
    }

    /// The routes in force, told what the stored table holds.
    struct StoredTable(LiveRoutes);

    impl KeyFollower for StoredTable {
        fn listed(&mut self, kvs: &[KeyValue], revision: u64) -> bool {
            if let Some(kv) = kvs.first() {
                self.0.apply_stored(
                    Some(&String::from_utf8_lossy(kv.value())),
                    kv.mod_revision(),
                );
            } else if self.0.in_force().source == super::RouteSource::Etcd {
                // Deleted while we were not watching.
                self.0.apply_stored(None, revision as i64);
            }
            true
        }

        fn changed(&mut self, event: &Event) -> bool {
            let Some(kv) = event.kv() else { return true };
            match event.event_type() {
                EventType::Put => self.0.apply_stored(
                    Some(&String::from_utf8_lossy(kv.value())),
                    kv.mod_revision(),
                ),
                EventType::Delete => self.0.apply_stored(None, kv.mod_revision()),
            }
            true
        }

        fn interrupted(&mut self, reason: &str, _revision: u64) {
            tracing::warn!(error = %reason, "route table watch interrupted; reading it again");
        }

        fn read_failed(&mut self, error: &RegistryError) {
            tracing::warn!(%error, "route table watch interrupted; reading it again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_invalid_stored_table_leaves_the_last_good_one() {
        let live = LiveRoutes::new(RouteTable::new(), LiveTraffic::default());
        live.apply_stored(Some("[routes.user]\ntimeout = \"2s\"\n"), 7);
        assert_eq!(live.route("user").timeout, Duration::from_secs(2));
        live.apply_stored(Some("[routes.user]\ntimeout = \"never\"\n"), 8);
        assert_eq!(live.in_force().revision, 7);
        assert_eq!(live.route("user").timeout, Duration::from_secs(2));
        live.apply_stored(None, 9);
        assert_eq!(live.in_force().source, RouteSource::Configuration);
        assert_eq!(*live.route("user"), Route::default());
    }

    #[test]
    fn an_empty_or_unparsable_stored_value_keeps_the_table_in_force() {
        let live = LiveRoutes::new(RouteTable::new(), LiveTraffic::default());
        live.apply_stored(Some("[routes.user]\ntimeout = \"2s\"\n"), 7);
        for (text, revision) in [
            ("", 8),
            ("\n", 9),
            ("[routes.user", 10),
            ("timeout = 1", 11),
        ] {
            live.apply_stored(Some(text), revision);
            let in_force = live.in_force();
            assert_eq!(
                (in_force.source, in_force.revision),
                (RouteSource::Etcd, 7),
                "{text:?}"
            );
            assert_eq!(
                live.route("user").timeout,
                Duration::from_secs(2),
                "{text:?}"
            );
        }
    }
}
