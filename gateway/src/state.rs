//! What the gateway's two doors and its admin views share: the cluster view, the route
//! table, the one call stack, the schemas learnt by reflection, and how calls are
//! observed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cluster::stack::{CallRequest, CallResponse, Picked};
use cluster::{ClusterView, Node, Schemas};
use futures::StreamExt;
use tower::ServiceExt;

use crate::auth::JwtVerifier;
use crate::failure::Failure;
use crate::live_routes::LiveRoutes;
use crate::observe::Meters;
use crate::resilience::GuardsByService;
use crate::rest::table::RestTable;
use crate::settings::GatewaySection;
use crate::stack::{self, CallStack};

pub struct Gateway {
    pub view: ClusterView,
    pub routes: LiveRoutes,
    pub settings: GatewaySection,
    /// Every call, from either door, goes through it.
    pub stack: CallStack,
    /// Each service's rate limit and breaker, for the stack and `/admin/cluster`.
    pub guards: Arc<GuardsByService>,
    /// Each method's adaptive concurrency limit, when load shedding is on.
    pub limits: Option<Arc<cluster::shed::Limits>>,
    /// What this gateway saw of each running canary's step.
    pub canaries: Arc<crate::canary::CanaryMeter>,
    /// Where the gateway's spans go, when traces are exported.
    pub tracer: Option<telemetry::trace::SdkTracer>,
    pub meters: Arc<Meters>,
    /// The REST routes services declare, rebuilt as services come, go and change.
    pub rest: RestRoutes,
    schemas: Schemas,
}

/// How long a service version whose schema could not be read waits before the REST
/// table tries it again.
const REST_RETRY: Duration = Duration::from_secs(10);

/// How many services' schemas one refresh reads at once.
const REST_READS_AT_ONCE: usize = 8;

/// The cluster's REST table and the service versions it was built from.
#[derive(Default)]
pub struct RestRoutes {
    table: RwLock<Arc<RestTable>>,
    built_from: Mutex<BTreeMap<String, String>>,
    /// Service versions whose schema could not be read, and when to try again.
    failed: Mutex<std::collections::HashMap<(String, String), tokio::time::Instant>>,
}

impl RestRoutes {
    /// The table in force.
    pub fn current(&self) -> Arc<RestTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Gateway {
    pub fn new(
        view: ClusterView,
        routes: LiveRoutes,
        settings: GatewaySection,
        tracing: Option<&telemetry::Tracing>,
    ) -> Self {
        // The configuration was validated at load; a key that went bad since leaves JWT
        // routes refusing every call, which the log says.
        let jwt = JwtVerifier::from_config(&settings.jwt).unwrap_or_else(|(key, reason)| {
            tracing::error!(%key, %reason, "JWT keys unusable; routes that require a JWT refuse every call");
            JwtVerifier::without_keys()
        });
        let guards = Arc::new(GuardsByService::splitting_over(view.clone()));
        let limits = settings.load_shedding.then(|| {
            Arc::new(cluster::shed::Limits::new(
                cluster::shed::ShedMetrics::GATEWAY,
            ))
        });
        let canaries = Arc::new(crate::canary::CanaryMeter::default());
        let meters = Arc::new(crate::observe::Meters::default());
        let stack = stack::build(
            &view,
            Arc::new(jwt),
            guards.clone(),
            limits.clone(),
            canaries.clone(),
            meters.history.clone(),
            settings.retry_budget_percent,
        );
        Self {
            canaries,
            view,
            routes,
            stack,
            guards,
            limits,
            tracer: tracing.map(|t| t.tracer().clone()),
            meters,
            rest: RestRoutes::default(),
            schemas: Schemas::default(),
            settings,
        }
    }

    /// Sends `request` (its `CallInfo` and `GatewayCall` in its extensions) through the
    /// call stack: the reply and the node that gave it, or what the caller is told. `call`
    /// names the call in a timeout's message; `timeout` is the route's, when the gateway
    /// set the deadline.
    pub async fn send(
        &self,
        request: CallRequest,
        call: impl FnOnce() -> String,
        timeout: Option<Duration>,
    ) -> Result<(CallResponse, Option<Arc<Node>>), Failure> {
        let response = self
            .stack
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| Failure::of_call(error, &call(), timeout))?;
        let node = response
            .extensions()
            .get::<Picked>()
            .map(|picked| picked.0.clone());
        Ok((response, node))
    }

    /// Where a call on `route` goes (its traffic rule and sticky key), with the headers
    /// the rules read, to be sent on to the node.
    pub fn place(
        &self,
        route: &crate::settings::Route,
        headers: &http::HeaderMap,
        query: Option<&str>,
        extensions: &http::Extensions,
    ) -> crate::settings::Placement {
        crate::settings::Placement {
            carried: self.routes.carried_from(headers),
            ..route.place(headers, query, || crate::rate_limit::peer_of(extensions))
        }
    }

    /// What `node`'s service offers at its version, by reflection, cached.
    pub async fn schema_of(
        &self,
        node: &Node,
    ) -> Result<Arc<cluster::Schema>, cluster::SchemaError> {
        self.schemas.of(node).await
    }

    /// Forgets the schemas of `service`'s versions that no node in `live` runs.
    pub fn forget_versions_except(&self, service: &str, live: &std::collections::BTreeSet<String>) {
        self.schemas.forget_versions_except(service, live);
    }

    /// For each service behind the gateway, one node of its newest running version (only
    /// among the nodes passing their health checks, when `healthy_only`): where the
    /// service's current schema is read from.
    pub fn newest_nodes(&self, healthy_only: bool) -> BTreeMap<String, Arc<Node>> {
        let mut newest: BTreeMap<String, Arc<Node>> = BTreeMap::new();
        for node in self.view.snapshot().nodes() {
            if node.instance.service == "gateway" || (healthy_only && !node.is_healthy()) {
                continue;
            }
            let newer = newest.get(&node.instance.service).is_none_or(|kept| {
                cluster::meta::version_order(&node.instance.version)
                    > cluster::meta::version_order(&kept.instance.version)
            });
            if newer {
                newest.insert(node.instance.service.clone(), node.clone());
            }
        }
        newest
    }

    /// Rebuilds the REST table when a service's newest running version changed since the
    /// last build: its schema is read (or found cached) from a healthy node of that
    /// version, a few services at a time. A service whose schema cannot be read now
    /// keeps out of the table and is tried again after [`REST_RETRY`], so that a cluster
    /// of unreachable nodes costs no stream of reflection calls.
    pub async fn refresh_rest(&self) {
        let newest = self.newest_nodes(true);
        let wanted: BTreeMap<String, String> = newest
            .iter()
            .map(|(service, node)| (service.clone(), node.instance.version.clone()))
            .collect();
        if *self
            .rest
            .built_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            == wanted
        {
            return;
        }
        let now = tokio::time::Instant::now();
        let due: Vec<(String, Arc<Node>)> = {
            let mut failed = self.rest.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.retain(|_, retry_at| *retry_at > now);
            newest
                .into_iter()
                .filter(|(service, node)| {
                    !failed.contains_key(&(service.clone(), node.instance.version.clone()))
                })
                .collect()
        };
        let reads: Vec<_> = futures::stream::iter(due)
            .map(|(service, node)| async move {
                let schema = self.schema_of(&node).await;
                (service, node, schema)
            })
            .buffer_unordered(REST_READS_AT_ONCE)
            .collect()
            .await;
        let mut methods = BTreeMap::new();
        let mut read = BTreeMap::new();
        for (service, node, schema) in reads {
            let version = node.instance.version.clone();
            match schema {
                Ok(schema) => {
                    let all = schema
                        .method_names()
                        .into_iter()
                        .filter_map(|name| schema.method(name).cloned())
                        .collect::<Vec<_>>();
                    methods.insert(service.clone(), all);
                    read.insert(service, version);
                }
                Err(error) => {
                    tracing::debug!(%service, %error, "REST routes not read; tried again later");
                    let mut failed = self.rest.failed.lock().unwrap_or_else(|p| p.into_inner());
                    failed.insert((service, version), now + REST_RETRY);
                }
            }
        }
        // The table is keyed by what was read: a service that failed keeps it apart from
        // `wanted`, so later refreshes look again, and read it once its retry time is up.

        if *self
            .rest
            .built_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            == read
        {
            return;
        }
        let table = RestTable::build(&methods);
        let before = self.rest.current();
        for refused in table.refused() {
            if !before.refused().contains(refused) {
                tracing::warn!(
                    service = %refused.service,
                    method = %refused.method,
                    route = %refused.route,
                    reason = %refused.reason,
                    "REST route left out"
                );
            }
        }
        *self.rest.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        *self
            .rest
            .built_from
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = read;
    }
}
