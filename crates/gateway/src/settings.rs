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
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            retry_budget_percent: 20.0,
            eject_after_failures: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// Services by name. Also what `gateway routes push` stores in etcd, as TOML.
pub type RouteTable = BTreeMap<String, Route>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Power of two choices on in-flight requests, latency breaking ties.
    #[default]
    P2c,
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Methods safe to call twice: failures other than "could not connect" are retried
    /// on another node only for these.
    pub idempotent: Vec<String>,
    pub balance: Balance,
    /// Per-method overrides.
    pub methods: BTreeMap<String, MethodRoute>,
}

impl Default for Route {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            idempotent: Vec::new(),
            balance: Balance::P2c,
            methods: BTreeMap::new(),
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
}

impl Route {
    pub fn timeout_of(&self, method: &str) -> Duration {
        self.methods
            .get(method)
            .and_then(|m| m.timeout)
            .unwrap_or(self.timeout)
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
        validate_routes(&self.routes)
    }
}

/// Parses a route table from TOML (the file `gateway routes push` takes, which may be a
/// whole gateway config: only its `[routes]` are read) and validates it.
pub fn parse_route_table(text: &str) -> Result<RouteTable, String> {
    #[derive(Deserialize)]
    struct OnlyRoutes {
        #[serde(default)]
        routes: RouteTable,
    }
    let parsed: OnlyRoutes = toml::from_str(text).map_err(|e| e.to_string())?;
    validate_routes(&parsed.routes).map_err(|(key, reason)| format!("{key}: {reason}"))?;
    Ok(parsed.routes)
}

pub fn render_route_table(routes: &RouteTable) -> String {
    #[derive(Serialize)]
    struct OnlyRoutes<'a> {
        routes: &'a RouteTable,
    }
    toml::to_string(&OnlyRoutes { routes }).unwrap_or_default()
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
            parse_route_table(&render_route_table(&table)).unwrap(),
            table
        );
    }

    #[test]
    fn invalid_tables_are_refused_whole_with_the_key() {
        for (text, key) in [
            ("[routes.user]\ntimeout = \"0s\"\n", "routes.user.timeout"),
            ("[routes.user]\ntimeoutt = \"1s\"\n", "timeoutt"),
            ("[routes.\"a/b\"]\n", "routes.a/b"),
            ("[routes.user]\nbalance = \"random\"\n", "random"),
        ] {
            let message = parse_route_table(text).unwrap_err();
            assert!(message.contains(key), "{text:?}: {message}");
        }
    }
}
