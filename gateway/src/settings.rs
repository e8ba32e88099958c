//! The gateway's own configuration: `[gateway]` and the route table `[routes.<service>]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Sections the gateway adds beside the keys every node shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewaySettings {
    pub gateway: GatewaySection,
    /// Per-service behaviour; a service without an entry gets [`Route::default`].
    pub routes: RouteTable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySection {
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Retries may add at most this percentage of extra calls (plus a few per second).
    pub retry_budget_percent: f32,
    /// Consecutive transport failures after which a node is set aside.
    pub eject_after_failures: u32,
    /// How long a set-aside node gets no traffic before it is tried again.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
    /// How often each node's grpc.health.v1 is asked; "0s" turns active checks off.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Keys for routes that require a JWT.
    pub jwt: crate::auth::JwtConfig,
    /// Browser origins allowed to call the API (`["*"]` for any); empty: no CORS headers.
    pub cors_allow_origins: Vec<String>,
    /// One line at info per call (method, path, status, gRPC code, duration, node,
    /// request id, trace id); JSON with `log.format = "json"`.
    pub access_log: bool,
    /// Also serve `/cluster` and `/routes` on the public HTTP port. Off: they are on the
    /// admin port only (`/admin/cluster`, `/admin/routes`), out of callers' sight.
    pub public_cluster_view: bool,
    /// Serve the OpenAPI document of the cluster's REST routes and `/api` methods at
    /// `/openapi.json` (and `/openapi/{service}.json`) on the public port.
    pub openapi: bool,
    /// Each method behind the gateway has an adaptive concurrency limit: past it a call
    /// is answered 503 with `Retry-After` at once instead of queueing (see the guide's
    /// "Load shedding").
    pub load_shedding: bool,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            retry_budget_percent: 20.0,
            eject_after_failures: 3,
            eject_for: Duration::from_secs(10),
            health_interval: Duration::from_secs(5),
            jwt: crate::auth::JwtConfig::default(),
            cors_allow_origins: Vec::new(),
            access_log: true,
            public_cluster_view: false,
            openapi: true,
            load_shedding: true,
        }
    }
}

/// Services by name. Also what `gateway routes push` stores in etcd, as TOML.
pub type RouteTable = BTreeMap<String, Route>;

pub use cluster::Balance;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Methods safe to call twice: failures other than "could not connect" are retried
    /// on another node only for these.
    pub idempotent: Vec<String>,
    pub balance: Balance,
    /// The gateway cluster's limit (each gateway enforces its share), per client when it
    /// names a key; calls over it get 429 with `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::rate_limit::RateLimit>,
    /// Stops calling a service whose calls keep failing, for a while.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<crate::resilience::BreakerConfig>,
    /// Calls need a valid JWT (see `[gateway.jwt]`), unless a method says otherwise.
    pub jwt: bool,
    /// Claims of the verified token passed to the service as `x-jwt-<claim>` metadata.
    pub forward_claims: Vec<String>,
    /// Per-method overrides.
    pub methods: BTreeMap<String, MethodRoute>,
    /// Which of the service's nodes take which calls (by version or labels, matched on
    /// a header, cookie or query value, or split by weight), first rule first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<cluster::traffic::Rule>,
    /// Calls with the same key (a header, a cookie, a verified claim) reach the same node
    /// while it lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<cluster::affinity::Sticky>,
    /// A share of the calls also sent, as copies, to other nodes or another service; the
    /// copies' answers are dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// A new version that takes a growing share of the calls no traffic rule took, step
    /// by step, while its errors and p99 hold up beside the other versions'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<cluster::canary::Canary>,
}

/// `mirror = { to = { version = "1.3.0" }, percent = 10 }`, or `service = "user-next"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The nodes the copies go to: a version or labels (of the route's service, or of
    /// `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<std::sync::Arc<cluster::traffic::Subset>>,
    /// Another service the copies go to, serving the same gRPC service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The share of calls copied, in percent (above 0, at most 100).
    pub percent: f64,
}

impl Mirror {
    fn check(&self) -> Result<(), String> {
        if !(self.percent > 0.0 && self.percent <= 100.0) {
            return Err(format!(
                "percent must be above 0 and at most 100, not {}",
                self.percent
            ));
        }
        match (&self.to, &self.service) {
            (None, None) => Err("name the nodes (to) or another service (service)".into()),
            (Some(to), _) if to.is_empty() => Err("to: name a version or labels".into()),
            (_, Some(service)) if service.is_empty() => Err("service: name one".into()),
            _ => Ok(()),
        }
    }
}

/// Where a call may go, as a route's traffic rules and sticky key say.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub steer: Option<cluster::traffic::Steer>,
    pub affinity: Option<u64>,
    /// The headers any route's traffic rules read, sent on to the node: its own calls
    /// are steered by them too.
    pub carried: Option<http::HeaderMap>,
    /// The caller's key for the route's rate limit, from a header or its address.
    pub client: Option<u64>,
}

impl Default for Route {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            idempotent: Vec::new(),
            balance: Balance::P2c,
            rate_limit: None,
            circuit_breaker: None,
            jwt: false,
            forward_claims: Vec::new(),
            methods: BTreeMap::new(),
            traffic: Vec::new(),
            sticky: None,
            mirror: None,
            canary: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodRoute {
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// Overrides the route's `jwt` (`false` makes Login public on a protected route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<bool>,
}

impl Route {
    /// The route as calls meet it: its canary's split after its own traffic rules.
    pub fn in_force(&self) -> Route {
        match &self.canary {
            None => self.clone(),
            Some(canary) => Route {
                traffic: cluster::canary::rules_of(&self.traffic, Some(canary)),
                ..self.clone()
            },
        }
    }

    pub fn timeout_of(&self, method: &str) -> Duration {
        self.methods
            .get(method)
            .and_then(|m| m.timeout)
            .unwrap_or(self.timeout)
    }

    /// Where a call carrying `headers` (and `query`, on HTTP) may go: the subset the
    /// traffic rules choose, and its sticky key from a header or cookie (a claim's is set
    /// once the token is verified).
    pub fn place(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
        peer: impl FnOnce() -> Option<std::net::IpAddr>,
    ) -> Placement {
        let client = self.client_key(headers, peer);
        if self.traffic.is_empty() && self.sticky.is_none() {
            return Placement {
                client,
                ..Placement::default()
            };
        }
        let facts = cluster::traffic::Facts { headers, query };
        Placement {
            steer: cluster::traffic::steer(&self.traffic, &facts),
            affinity: self.sticky.as_ref().and_then(|sticky| sticky.key(&facts)),
            carried: None,
            client,
        }
    }

    /// The caller's key for the rate limit, when it keys by a header (calls without it
    /// share a bucket) or the address the call came from.
    fn client_key(
        &self,
        headers: &http::HeaderMap,
        // Read only for a limit keyed by it: most routes have none.
        peer: impl FnOnce() -> Option<std::net::IpAddr>,
    ) -> Option<u64> {
        use crate::rate_limit::{ClientKey, key_of, key_of_address};
        match self.rate_limit.as_ref()?.per.as_ref()? {
            ClientKey::Header(name) => headers
                .get(name.as_str())
                .map(|value| key_of(value.as_bytes())),
            ClientKey::ClientIp => peer().map(key_of_address),
            ClientKey::Claim(_) => None,
        }
    }

    pub fn requires_jwt(&self, method: &str) -> bool {
        self.methods
            .get(method)
            .and_then(|m| m.jwt)
            .unwrap_or(self.jwt)
    }

    pub fn is_idempotent(&self, method: &str) -> bool {
        self.methods
            .get(method)
            .and_then(|m| m.idempotent)
            .unwrap_or_else(|| self.idempotent.iter().any(|m| m == method))
    }
}

/// Checks a route table; `Err((key, reason))` for the first entry that cannot work.
pub fn validate_routes(routes: &RouteTable) -> Result<(), (String, String)> {
    for (service, route) in routes {
        if let Err(e) = registry::validate_name("service", service) {
            return Err((format!("routes.{service}"), e.to_string()));
        }
        if route.timeout.is_zero() {
            return Err((
                format!("routes.{service}.timeout"),
                "must be more than 0s".into(),
            ));
        }
        if let Some(limit) = &route.rate_limit {
            limit.check(route.jwt).map_err(|(field, reason)| {
                (format!("routes.{service}.rate_limit.{field}"), reason)
            })?;
        }
        if let Some(breaker) = route.circuit_breaker
            && !(breaker.error_rate > 0.0
                && breaker.error_rate <= 1.0
                && breaker.min_calls > 0
                && !breaker.window.is_zero()
                && !breaker.open_for.is_zero())
        {
            return Err((
                format!("routes.{service}.circuit_breaker"),
                "error_rate must be in (0, 1], min_calls, window and open_for more than 0".into(),
            ));
        }
        cluster::traffic::validate(&route.traffic)
            .map_err(|(at, reason)| (format!("routes.{service}.traffic{at}"), reason))?;
        if let Some(canary) = &route.canary {
            canary
                .validate(&route.traffic)
                .map_err(|(field, reason)| (format!("routes.{service}.canary.{field}"), reason))?;
        }
        if let Some(mirror) = &route.mirror {
            mirror
                .check()
                .map_err(|reason| (format!("routes.{service}.mirror"), reason))?;
        }
        if let Some(sticky) = &route.sticky {
            let key = format!("routes.{service}.sticky");
            sticky.validate().map_err(|reason| (key.clone(), reason))?;
            if sticky.claim.is_some() && !route.jwt {
                return Err((
                    key,
                    "a claim can key sticky calls only on a route that verifies tokens (jwt = true)"
                        .into(),
                ));
            }
        }
        for (method, overrides) in &route.methods {
            if overrides.timeout.is_some_and(|t| t.is_zero()) {
                return Err((
                    format!("routes.{service}.methods.{method}.timeout"),
                    "must be more than 0s".into(),
                ));
            }
        }
    }
    Ok(())
}

impl config::Validate for GatewaySettings {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.gateway.max_body_bytes == 0 {
            return Err((
                "gateway.max_body_bytes".into(),
                "must be more than 0".into(),
            ));
        }
        if !(0.0..=1000.0).contains(&self.gateway.retry_budget_percent) {
            return Err((
                "gateway.retry_budget_percent".into(),
                "must be between 0 and 1000".into(),
            ));
        }
        crate::auth::JwtVerifier::from_config(&self.gateway.jwt)?;
        for origin in &self.gateway.cors_allow_origins {
            if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
                return Err((
                    "gateway.cors_allow_origins".into(),
                    format!("{origin:?} is not a valid origin"),
                ));
            }
        }
        validate_routes(&self.routes)
    }
}

/// Why a route table was refused.
#[derive(Debug, thiserror::Error)]
pub enum RouteTableError {
    /// Not TOML, or not the shape of a route table.
    #[error("{0}")]
    Unreadable(#[from] toml::de::Error),
    /// A setting out of its range (`routes.user.timeout: must be more than 0`).
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("cannot write the route table as TOML: {0}")]
    Unwritable(#[from] toml::ser::Error),
    #[error("the route table does not read back as written")]
    Unfaithful,
    #[error("the route table would be refused: {0}")]
    WouldBeRefused(Box<RouteTableError>),
}

fn validated(routes: RouteTable) -> Result<RouteTable, RouteTableError> {
    validate_routes(&routes).map_err(|(key, reason)| RouteTableError::Invalid { key, reason })?;
    Ok(routes)
}

/// Parses a route table from TOML (the file `gateway routes push` takes, which may be a
/// whole gateway config: only its `[routes]` are read) and validates it.
pub fn parse_route_table(text: &str) -> Result<RouteTable, RouteTableError> {
    #[derive(Deserialize)]
    struct OnlyRoutes {
        #[serde(default)]
        routes: RouteTable,
    }
    validated(toml::from_str::<OnlyRoutes>(text)?.routes)
}

/// The TOML `gateway routes push` stores, checked to read back as the same table: what
/// every gateway will apply. Refused rather than stored when it does not (an empty or partial
/// text would be applied by every gateway as a smaller table).
pub fn render_route_table(routes: &RouteTable) -> Result<String, RouteTableError> {
    #[derive(Serialize)]
    struct OnlyRoutes<'a> {
        routes: &'a RouteTable,
    }
    let text = toml::to_string(&OnlyRoutes { routes })?;
    match parse_stored_route_table(&text) {
        Ok(read) if read == *routes => Ok(text),
        Ok(_) => Err(RouteTableError::Unfaithful),
        Err(reason) => Err(RouteTableError::WouldBeRefused(Box::new(reason))),
    }
}

/// Parses a table as `gateway routes push` stored it. Unlike a file given to push, it must
/// have `[routes]`: an empty or truncated value is refused, not read as "no routes".
pub fn parse_stored_route_table(text: &str) -> Result<RouteTable, RouteTableError> {
    #[derive(Deserialize)]
    struct StoredRoutes {
        routes: RouteTable,
    }
    validated(toml::from_str::<StoredRoutes>(text)?.routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_overrides_win_over_the_service_route() {
        let table = parse_route_table(
            "[routes.user]\ntimeout = \"2s\"\nidempotent = [\"Exists\"]\n[routes.user.methods.Login]\ntimeout = \"300ms\"\nidempotent = true\n",
        )
        .unwrap();
        let user = &table["user"];
        assert_eq!(user.timeout_of("Exists"), Duration::from_secs(2));
        assert_eq!(user.timeout_of("Login"), Duration::from_millis(300));
        assert!(user.is_idempotent("Exists") && user.is_idempotent("Login"));
        assert!(!user.is_idempotent("Register"));
        assert_eq!(
            parse_route_table(&render_route_table(&table).unwrap()).unwrap(),
            table
        );
    }

    #[test]
    fn rate_limits_too_slow_or_not_finite_are_refused_naming_the_key() {
        for (limit, key) in [
            (
                "per_second = 1e-30, burst = 1",
                "routes.user.rate_limit.per_second",
            ),
            (
                "per_second = 0.0009, burst = 1",
                "routes.user.rate_limit.per_second",
            ),
            (
                "per_second = 0, burst = 1",
                "routes.user.rate_limit.per_second",
            ),
            (
                "per_second = -1, burst = 1",
                "routes.user.rate_limit.per_second",
            ),
            (
                "per_second = nan, burst = 1",
                "routes.user.rate_limit.per_second",
            ),
            (
                "per_second = inf, burst = 1",
                "routes.user.rate_limit.per_second",
            ),
            (
                "per_second = 1, burst = 0.5",
                "routes.user.rate_limit.burst",
            ),
            (
                "per_second = 1, burst = inf",
                "routes.user.rate_limit.burst",
            ),
            (
                "per_second = 1, burst = nan",
                "routes.user.rate_limit.burst",
            ),
        ] {
            let text = format!("[routes.user]\nrate_limit = {{ {limit} }}\n");
            let message = parse_route_table(&text).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("{key}: ")),
                "{limit}: {message}"
            );
        }
        let slowest = "[routes.user]\nrate_limit = { per_second = 0.001, burst = 1 }\n";
        assert!(parse_route_table(slowest).is_ok());
    }

    #[test]
    fn a_canary_with_the_leaders_state_reads_renders_and_reads_back_the_same() {
        let pushed = "[routes.user.canary]\nversion = \"1.3.0\"\nsteps = [1, 5, 25, 50, 100]\n\
                      interval = \"1m\"\nmax_error_ratio = 0.01\nmax_p99_ratio = 1.5\n";
        let mut table = parse_route_table(pushed).expect("the README's canary");
        let canary = table
            .get_mut("user")
            .and_then(|r| r.canary.as_mut())
            .unwrap();
        assert_eq!((canary.percent(), canary.min_calls), (1, 20));
        canary.state = Some(cluster::canary::State {
            step: 2,
            since_ms: 1_765_000_000_000,
            outcome: cluster::canary::Outcome::Running,
            reason: Some("step 2 passed: 0 of 57 calls failed".into()),
            last: Some(cluster::canary::Comparison {
                canary: cluster::canary::Figures {
                    calls: 57,
                    errors: 0,
                    p99_ms: Some(12.1),
                },
                baseline: cluster::canary::Figures {
                    calls: 1100,
                    errors: 3,
                    p99_ms: Some(10.9),
                },
            }),
        });
        let text = render_route_table(&table).expect("a table the gateways read back");
        assert_eq!(parse_stored_route_table(&text).unwrap(), table);
        // Its split is a rule after the route's own, for the doors and the services alike.
        let in_force = table["user"].in_force();
        assert_eq!(in_force.traffic.len(), 1);
        assert_eq!(in_force.traffic[0].split[0].weight, 25);
        let for_services = cluster::traffic::TrafficTable::from_route_table(&text).unwrap();
        assert_eq!(for_services.rules_of("user").map(|r| r.len()), Some(1));
    }

    #[test]
    fn a_canary_that_cannot_work_is_refused_naming_the_key() {
        let text = "[[routes.user.traffic]]\nto = { version = \"1.2.0\" }\n\
                    [routes.user.canary]\nversion = \"1.3.0\"\nsteps = [5, 1]\n\
                    interval = \"1m\"\nmax_error_ratio = 0.01\nmax_p99_ratio = 1.5\n";
        let message = parse_route_table(text).unwrap_err().to_string();
        assert!(
            message.starts_with("routes.user.canary.steps: "),
            "{message}"
        );
        let fixed = text.replace("[5, 1]", "[1, 5]");
        let message = parse_route_table(&fixed).unwrap_err().to_string();
        assert!(
            message.starts_with("routes.user.canary.version: ")
                && message.contains("without `when`"),
            "{message}"
        );
    }

    #[test]
    fn a_table_that_would_not_read_back_is_not_rendered_for_storing() {
        let mut table = RouteTable::new();
        table.insert(
            "user".into(),
            Route {
                timeout: Duration::ZERO,
                ..Route::default()
            },
        );
        let message = render_route_table(&table).unwrap_err().to_string();
        assert!(message.contains("routes.user.timeout"), "{message}");
    }

    #[test]
    fn an_empty_table_renders_to_a_stored_value_that_reads_back_empty() {
        let text = render_route_table(&RouteTable::new()).unwrap();
        assert_eq!(parse_stored_route_table(&text).unwrap(), RouteTable::new());
    }

    #[test]
    fn a_stored_value_without_routes_is_refused() {
        for text in ["", "  \n", "[gateway]\nmax_body_bytes = 1\n"] {
            let message = parse_stored_route_table(text).unwrap_err().to_string();
            assert!(message.contains("routes"), "{text:?}: {message}");
        }
    }

    #[test]
    fn invalid_tables_are_refused_whole_with_the_key() {
        for (text, key) in [
            ("[routes.user]\ntimeout = \"0s\"\n", "routes.user.timeout"),
            ("[routes.user]\ntimeoutt = \"1s\"\n", "timeoutt"),
            ("[routes.\"a/b\"]\n", "routes.a/b"),
            ("[routes.user]\nbalance = \"random\"\n", "random"),
            (
                "[routes.user]\nsticky = { claim = \"sub\" }\n",
                "routes.user.sticky: a claim can key sticky calls only on a route that verifies tokens",
            ),
            (
                "[routes.user]\nsticky = { header = \"x-a\", cookie = \"b\" }\n",
                "routes.user.sticky: name exactly one",
            ),
            (
                "[routes.user.mirror]\npercent = 10\n",
                "routes.user.mirror: name the nodes (to) or another service",
            ),
            (
                "[routes.user.mirror]\nto = { version = \"2\" }\npercent = 0\n",
                "routes.user.mirror: percent must be above 0",
            ),
            (
                "[routes.user.mirror]\nto = {}\npercent = 5\n",
                "routes.user.mirror: to: name a version or labels",
            ),
            (
                "[[routes.user.traffic]]\nsplit = [{ version = \"2\", weight = 0 }]\n",
                "routes.user.traffic[0].split",
            ),
        ] {
            let message = parse_route_table(text).unwrap_err().to_string();
            assert!(message.contains(key), "{text:?}: {message}");
        }
    }
}
