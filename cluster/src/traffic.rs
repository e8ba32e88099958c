//! Traffic rules: which of a service's nodes a call may go to, chosen by what the call
//! carries (`x-canary: 1` → the nodes of version 1.3.0) or by weight (95/5 between two
//! versions). A route lists its rules in order; the first that applies picks a subset of
//! the service's nodes, and the balancer picks among the subset as it would among all.
//! A subset with no node that can take the call gives way to the rest of the service,
//! unless its rule says `fallback = false`.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use rand::Rng;
use registry::Instance;
use serde::{Deserialize, Serialize};

/// Some of a service's nodes: those of a version, or those whose registry metadata holds
/// every label, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Subset {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Metadata entries the node registered (`color = "blue"`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Every version but this one (the stable side of a canary: whatever else runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_version: Option<String>,
}

impl Subset {
    /// The nodes of `version`.
    pub fn of_version(version: &str) -> Self {
        Self {
            version: Some(version.to_owned()),
            ..Self::default()
        }
    }

    /// The nodes of every version but `version`.
    pub fn but_version(version: &str) -> Self {
        Self {
            not_version: Some(version.to_owned()),
            ..Self::default()
        }
    }

    /// Whether `instance` is one of the subset's nodes.
    pub fn holds(&self, instance: &Instance) -> bool {
        self.version
            .as_ref()
            .is_none_or(|version| *version == instance.version)
            && self
                .not_version
                .as_ref()
                .is_none_or(|version| *version != instance.version)
            && self
                .labels
                .iter()
                .all(|(key, value)| instance.metadata.get(key) == Some(value))
    }

    /// Whether it names nothing (every node would hold it).
    pub fn is_empty(&self) -> bool {
        self.version.is_none() && self.labels.is_empty() && self.not_version.is_none()
    }
}

impl std::fmt::Display for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(version) = &self.version {
            parts.push(format!("version {version}"));
        }
        if let Some(version) = &self.not_version {
            parts.push(format!("any version but {version}"));
        }
        for (key, value) in &self.labels {
            parts.push(format!("{key}={value}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// What a rule looks for in a call: a header, a cookie or a query parameter, with a
/// value (`equals`), or present at all when `equals` is not given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Match {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
}

/// What of a call the rules read.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub headers: &'a HeaderMap,
    /// The query string of an HTTP call (without `?`); gRPC calls have none.
    pub query: Option<&'a str>,
}

impl Match {
    /// The header a rule reads, if it reads one: the service client carries it on to
    /// the calls a node makes while it serves the call that brought it.
    pub fn header_name(&self) -> Option<&str> {
        self.header.as_deref()
    }

    fn matches(&self, facts: &Facts<'_>) -> bool {
        let found = if let Some(name) = &self.header {
            let mut values = facts
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|value| value.to_str().ok());
            return match &self.equals {
                Some(wanted) => values.any(|value| value.trim() == wanted),
                None => values.next().is_some(),
            };
        } else if let Some(name) = &self.cookie {
            cookie(facts.headers, name)
        } else if let Some(name) = &self.query {
            facts.query.and_then(|query| query_value(query, name))
        } else {
            None
        };
        match (&self.equals, found) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(wanted), Some(value)) => *wanted == value,
        }
    }

    fn check(&self) -> Result<(), String> {
        check_source(
            [&self.header, &self.cookie, &self.query],
            "header, cookie or query",
            self.header.as_deref(),
        )
    }
}

/// Checks that exactly one of `sources` (called `names`) is given, and that `header`, if
/// it is the one, is a header name in lower case (as HTTP/2 sends them).
pub(crate) fn check_source(
    sources: [&Option<String>; 3],
    names: &str,
    header: Option<&str>,
) -> Result<(), String> {
    if sources.iter().filter(|source| source.is_some()).count() != 1 {
        return Err(format!("name exactly one of {names}"));
    }
    header.map_or(Ok(()), check_header_name)
}

/// Checks that `name` is a header name in lower case, as HTTP/2 sends them (and as a
/// rule or key must name one to ever match).
pub fn check_header_name(name: &str) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err()
        || name.bytes().any(|b| b.is_ascii_uppercase())
    {
        return Err(format!("{name:?} is not a header name in lower case"));
    }
    Ok(())
}

/// A cookie's value from the call's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
        })
}

/// A query parameter's first value, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// One part of a weighted split: a subset and its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ShareFields", into = "ShareFields")]
pub struct Share {
    pub subset: Arc<Subset>,
    pub weight: u32,
}

/// A share as written: `{ version = "1.3.0", weight = 5 }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_version: Option<String>,
    weight: u32,
}

impl From<ShareFields> for Share {
    fn from(fields: ShareFields) -> Self {
        Self {
            subset: Arc::new(Subset {
                version: fields.version,
                labels: fields.labels,
                not_version: fields.not_version,
            }),
            weight: fields.weight,
        }
    }
}

impl From<Share> for ShareFields {
    fn from(share: Share) -> Self {
        let subset = Arc::unwrap_or_clone(share.subset);
        Self {
            version: subset.version,
            labels: subset.labels,
            not_version: subset.not_version,
            weight: share.weight,
        }
    }
}

/// One rule: when it applies (always, without `when`), and where its calls go: one
/// subset (`to`) or a weighted `split`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Match>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Arc<Subset>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<Share>,
    /// When the chosen subset has no node that can take the call: the rest of the
    /// service takes it (`true`), or the call fails UNAVAILABLE (`false`).
    pub fallback: bool,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            when: None,
            to: None,
            split: Vec::new(),
            fallback: true,
        }
    }
}

/// Where a call was steered: its subset, and whether it may fall back to the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steer {
    pub subset: Arc<Subset>,
    pub fallback: bool,
}

impl Rule {
    fn choose(&self) -> Option<Steer> {
        let subset = match &self.to {
            Some(to) => to.clone(),
            None => {
                let total: u64 = self.split.iter().map(|s| u64::from(s.weight)).sum();
                if total == 0 {
                    return None;
                }
                let mut ticket = rand::rng().random_range(0..total);
                let share = self.split.iter().find(|share| {
                    let weight = u64::from(share.weight);
                    if ticket < weight {
                        return true;
                    }
                    ticket -= weight;
                    false
                })?;
                share.subset.clone()
            }
        };
        Some(Steer {
            subset,
            fallback: self.fallback,
        })
    }

    fn check(&self) -> Result<(), (String, String)> {
        if let Some(when) = &self.when {
            when.check().map_err(|reason| ("when".to_owned(), reason))?;
        }
        match (&self.to, self.split.is_empty()) {
            (Some(_), false) | (None, true) => {
                return Err((
                    String::new(),
                    "give either to (one subset) or split (weighted subsets)".into(),
                ));
            }
            (Some(to), true) if to.is_empty() => {
                return Err(("to".into(), "name a version or labels".into()));
            }
            _ => {}
        }
        for (n, share) in self.split.iter().enumerate() {
            if share.subset.is_empty() {
                return Err((format!("split[{n}]"), "name a version or labels".into()));
            }
        }
        if !self.split.is_empty() && self.split.iter().all(|share| share.weight == 0) {
            return Err(("split".into(), "at least one weight must be above 0".into()));
        }
        Ok(())
    }
}

/// The subset the first rule that applies to `facts` chooses; `None` when no rule does
/// (the call may go to any node).
pub fn steer(rules: &[Rule], facts: &Facts<'_>) -> Option<Steer> {
    rules
        .iter()
        .find(|rule| rule.when.as_ref().is_none_or(|when| when.matches(facts)))
        .and_then(Rule::choose)
}

/// Checks `rules`; `Err((where, reason))` for the first that cannot work, `where` being
/// `[n]` or `[n].when`, to follow the rules' own key.
pub fn validate(rules: &[Rule]) -> Result<(), (String, String)> {
    for (n, rule) in rules.iter().enumerate() {
        rule.check().map_err(|(field, reason)| {
            let at = if field.is_empty() {
                format!("[{n}]")
            } else {
                format!("[{n}].{field}")
            };
            (at, reason)
        })?;
    }
    Ok(())
}

/// Every service's rules, as a route table holds them, and the headers any rule reads:
/// those a node carries on from the call it serves to the calls it makes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficTable {
    rules: std::collections::HashMap<String, Arc<[Rule]>>,
    carried: Vec<http::HeaderName>,
}

impl TrafficTable {
    /// The table of `rules` (service → its rules).
    pub fn new(rules: impl IntoIterator<Item = (String, Vec<Rule>)>) -> Self {
        let rules: std::collections::HashMap<String, Arc<[Rule]>> = rules
            .into_iter()
            .filter(|(_, rules)| !rules.is_empty())
            .map(|(service, rules)| (service, Arc::from(rules)))
            .collect();
        let mut carried: Vec<http::HeaderName> = rules
            .values()
            .flat_map(|rules| rules.iter())
            .filter_map(|rule| rule.when.as_ref()?.header_name())
            .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        carried.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        carried.dedup();
        Self { rules, carried }
    }

    /// The rules of a stored route table (`gateway routes push`), read for their
    /// `routes.<service>.traffic` alone; `Err` names what cannot be read or cannot work.
    pub fn from_route_table(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Stored {
            #[serde(default)]
            routes: BTreeMap<String, Traffic>,
        }
        #[derive(Deserialize)]
        struct Traffic {
            #[serde(default)]
            traffic: Vec<Rule>,
            #[serde(default)]
            canary: Option<crate::canary::Canary>,
        }
        let stored: Stored = toml_table(text)?;
        for (service, route) in &stored.routes {
            validate(&route.traffic)
                .map_err(|(at, reason)| format!("routes.{service}.traffic{at}: {reason}"))?;
            if let Some(canary) = &route.canary {
                canary.validate(&route.traffic).map_err(|(field, reason)| {
                    format!("routes.{service}.canary.{field}: {reason}")
                })?;
            }
        }
        // A canary's split applies to the calls services make too, as the gateway's do.
        Ok(Self::new(stored.routes.into_iter().map(
            |(service, route)| {
                let rules = crate::canary::rules_of(&route.traffic, route.canary.as_ref());
                (service, rules)
            },
        )))
    }

    /// `service`'s rules, if it has any.
    pub fn rules_of(&self, service: &str) -> Option<&Arc<[Rule]>> {
        self.rules.get(service)
    }

    /// The headers some rule reads.
    pub fn carried(&self) -> &[http::HeaderName] {
        &self.carried
    }

    /// The headers of `headers` that some rule reads, to go on with the calls made for
    /// the call that brought them; `None` when there are none.
    pub fn carried_from(&self, headers: &HeaderMap) -> Option<HeaderMap> {
        let mut carried = HeaderMap::new();
        for name in &self.carried {
            for value in headers.get_all(name) {
                carried.append(name.clone(), value.clone());
            }
        }
        (!carried.is_empty()).then_some(carried)
    }
}

/// A route table's text as `T`.
fn toml_table<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|error| error.to_string())
}

/// The traffic table in force, shared by a node's service clients and its server, and
/// replaced whole when the stored route table changes.
#[derive(Debug, Clone, Default)]
pub struct LiveTraffic(Arc<arc_swap::ArcSwap<TrafficTable>>);

impl LiveTraffic {
    pub fn current(&self) -> Arc<TrafficTable> {
        self.0.load_full()
    }

    pub fn set(&self, table: TrafficTable) {
        self.0.store(Arc::new(table));
    }

    /// See [`TrafficTable::carried_from`].
    pub fn carried_from(&self, headers: &HeaderMap) -> Option<HeaderMap> {
        self.0.load().carried_from(headers)
    }
}

tokio::task_local! {
    static CARRIED: HeaderMap;
}

/// Runs `serve` (a handler's work) carrying `headers` on to the calls it makes.
pub fn carrying<F: std::future::Future>(
    headers: HeaderMap,
    serve: F,
) -> impl std::future::Future<Output = F::Output> {
    CARRIED.scope(headers, serve)
}

/// Adds the headers of the call being served here (those some rule reads) to `headers`,
/// where it does not set them itself.
pub fn carry_into(headers: &mut HeaderMap) {
    let _ = CARRIED.try_with(|carried| {
        for name in carried.keys() {
            if !headers.contains_key(name) {
                for value in carried.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml_text: &str) -> Vec<Rule> {
        #[derive(Deserialize)]
        struct Table {
            traffic: Vec<Rule>,
        }
        toml::from_str::<Table>(toml_text)
            .expect("rules in TOML")
            .traffic
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("a header value"));
        }
        map
    }

    fn steered(rules: &[Rule], headers: &HeaderMap, query: Option<&str>) -> Option<Subset> {
        steer(rules, &Facts { headers, query }).map(|steer| (*steer.subset).clone())
    }

    fn version(v: &str) -> Option<Subset> {
        Some(Subset {
            version: Some(v.to_owned()),
            ..Subset::default()
        })
    }

    #[test]
    fn the_first_rule_that_applies_chooses_and_a_call_no_rule_applies_to_goes_anywhere() {
        let table = rules(
            r#"
            [[traffic]]
            when = { header = "x-canary", equals = "1" }
            to = { version = "1.3.0" }
            [[traffic]]
            when = { cookie = "tester" }
            to = { labels = { color = "blue" } }
            [[traffic]]
            when = { query = "version", equals = "next" }
            to = { version = "2.0.0" }
            "#,
        );
        validate(&table).expect("valid rules");
        assert_eq!(
            steered(&table, &headers(&[("x-canary", "1")]), None),
            version("1.3.0")
        );
        assert_eq!(steered(&table, &headers(&[("x-canary", "0")]), None), None);
        let blue = Some(Subset {
            labels: BTreeMap::from([("color".to_owned(), "blue".to_owned())]),
            ..Subset::default()
        });
        assert_eq!(
            steered(&table, &headers(&[("cookie", "a=1; tester=yes")]), None),
            blue
        );
        // Both apply: the first one listed wins.
        assert_eq!(
            steered(
                &table,
                &headers(&[("x-canary", "1"), ("cookie", "tester=1")]),
                None
            ),
            version("1.3.0")
        );
        assert_eq!(
            steered(&table, &headers(&[]), Some("a=b&version=next")),
            version("2.0.0")
        );
        assert_eq!(steered(&table, &headers(&[]), Some("version=nex")), None);
        assert_eq!(steered(&table, &headers(&[]), None), None);
    }

    #[test]
    fn a_split_sends_each_subset_its_share_of_the_calls() {
        let table = rules(
            r#"
            [[traffic]]
            split = [{ version = "1.2.0", weight = 95 }, { version = "1.3.0", weight = 5 }]
            "#,
        );
        validate(&table).expect("valid rules");
        let calls = 20_000;
        let canary = (0..calls)
            .filter(|_| steered(&table, &headers(&[]), None) == version("1.3.0"))
            .count();
        // 5% of 20,000 is 1,000, with a standard deviation of about 31: six of them.
        assert!((812..=1188).contains(&canary), "{canary} of {calls}");
    }

    #[test]
    fn a_subset_holds_the_nodes_of_its_version_with_all_its_labels() {
        let mut node = Instance::new("user", "127.0.0.1:1");
        node.version = "1.3.0".into();
        node.metadata.insert("color".into(), "blue".into());
        let subset = |version: Option<&str>, labels: &[(&str, &str)]| Subset {
            version: version.map(str::to_owned),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            not_version: None,
        };
        assert!(subset(Some("1.3.0"), &[]).holds(&node));
        assert!(subset(None, &[("color", "blue")]).holds(&node));
        assert!(subset(Some("1.3.0"), &[("color", "blue")]).holds(&node));
        assert!(!subset(Some("1.2.0"), &[("color", "blue")]).holds(&node));
        assert!(!subset(None, &[("color", "green")]).holds(&node));
        assert!(!subset(None, &[("zone", "a")]).holds(&node));
    }

    #[test]
    fn rules_that_cannot_work_are_refused_with_where_and_why() {
        let refused = |text: &str| validate(&rules(text)).expect_err("refused");
        assert_eq!(
            refused("[[traffic]]\nwhen = { header = \"x-a\" }\n").0,
            "[0]"
        );
        assert_eq!(
            refused(
                "[[traffic]]\nto = { version = \"1\" }\nsplit = [{ version = \"2\", weight = 1 }]\n"
            )
            .0,
            "[0]"
        );
        assert_eq!(refused("[[traffic]]\nto = {}\n").0, "[0].to");
        assert_eq!(
            refused("[[traffic]]\nsplit = [{ version = \"2\", weight = 0 }]\n").0,
            "[0].split"
        );
        assert_eq!(
            refused("[[traffic]]\nsplit = [{ weight = 3 }]\n").0,
            "[0].split[0]"
        );
        let (at, why) = refused(
            "[[traffic]]\nto = { version = \"1\" }\n[[traffic]]\nwhen = { header = \"X-Canary\" }\nto = { version = \"1\" }\n",
        );
        assert_eq!(at, "[1].when");
        assert!(why.contains("lower case"), "{why}");
        assert_eq!(
            refused(
                "[[traffic]]\nwhen = { header = \"a\", cookie = \"b\" }\nto = { version = \"1\" }\n"
            )
            .0,
            "[0].when"
        );
    }

    #[test]
    fn rules_read_back_as_written() {
        let table = rules(
            r#"
            [[traffic]]
            when = { header = "x-canary", equals = "1" }
            to = { version = "1.3.0" }
            fallback = false
            [[traffic]]
            split = [{ version = "1.2.0", weight = 95 }, { labels = { color = "blue" }, weight = 5 }]
            "#,
        );
        #[derive(Serialize, Deserialize)]
        struct Table {
            traffic: Vec<Rule>,
        }
        let text = toml::to_string(&Table {
            traffic: table.clone(),
        })
        .expect("TOML");
        assert_eq!(rules(&text), table);
    }

    #[tokio::test]
    async fn a_stored_route_table_gives_each_service_its_rules_and_the_headers_to_carry() {
        let table = TrafficTable::from_route_table(
            r#"
            [routes.user]
            timeout = "2s"
            [[routes.user.traffic]]
            when = { header = "x-canary", equals = "1" }
            to = { version = "1.3.0" }
            [[routes.order.traffic]]
            when = { cookie = "tester" }
            to = { version = "2.0.0" }
            "#,
        )
        .expect("a table");
        assert_eq!(table.rules_of("user").map(|rules| rules.len()), Some(1));
        assert!(table.rules_of("greeter").is_none());
        assert_eq!(table.carried(), ["x-canary"]);
        let refused = TrafficTable::from_route_table(
            "[[routes.user.traffic]]\nto = { version = \"1\" }\nsplit = [{ version = \"2\", weight = 1 }]\n",
        )
        .expect_err("refused");
        assert!(refused.starts_with("routes.user.traffic[0]"), "{refused}");

        // What a node serving a call carries goes on with the calls it makes, unless
        // the call sets the header itself.
        let served = headers(&[("x-canary", "1"), ("x-other", "no")]);
        let carried = table.carried_from(&served).expect("carried");
        let mut outgoing = headers(&[]);
        carrying(carried.clone(), async { carry_into(&mut outgoing) }).await;
        assert_eq!(
            outgoing.get("x-canary").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(outgoing.get("x-other").is_none());
        let mut own = headers(&[("x-canary", "0")]);
        carrying(carried, async { carry_into(&mut own) }).await;
        assert_eq!(own.get("x-canary").map(|v| v.as_bytes()), Some(&b"0"[..]));
        let mut outside = headers(&[]);
        carry_into(&mut outside);
        assert!(
            outside.is_empty(),
            "nothing is carried outside a served call"
        );
    }
}
