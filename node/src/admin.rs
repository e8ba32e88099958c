//! The operator's port, one per process (`[admin] listen`, loopback by default), apart
//! from the ports callers use:
//!
//! - `/metrics`: every count and histogram of the process, Prometheus text format;
//! - `/healthz`: the process is alive;
//! - `/readyz`: every node of the process has registered, seen the registry once, can do
//!   its work, and is not shutting down (503 with the reason otherwise);
//! - `/admin/cluster`, `/admin/routes`, …: views the nodes publish (the gateway's view of
//!   every node, its route table; a service's view of the registry);
//! - `/`: the live dashboard, a page compiled into the binary;
//! - `/{page}`: pages the nodes add (the gateway's `/api-docs`), compiled in too, with
//!   their routes under `/admin/{page}/…`.
//!
//! With `[admin] token` set, `/metrics` and `/admin/*` want `Authorization: Bearer …`;
//! the pages themselves hold no data and are open, as the dashboard is.
//!
//! Left at its default, `admin.listen` gives way to a free port on the same host when
//! another process has it (several nodes on one host, as in GO-MS); every node publishes
//! where its process's admin port is under [`METADATA_KEY`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use config::NodeConfig;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::NodeError;

const DASHBOARD: &str = include_str!("admin/dashboard.html");

/// The registry metadata key under which every node publishes its process's admin
/// address, `host:port` (the advertised host when the port listens on every interface);
/// the dashboard links each node to `http://{admin}/`. Absent when the admin port is off.
pub(crate) const METADATA_KEY: &str = cluster::meta::ADMIN;

/// Where `admin.listen` came from, which decides what a taken address does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Set by the file, the environment or a flag: a taken address stops start-up.
    Given,
    /// Left at its default: a taken address gives way to a free port on the same host.
    Default,
}

impl Listen {
    /// Where `loaded` got its `admin.listen`.
    pub fn of<S>(loaded: &config::Loaded<S>) -> Self {
        if loaded.given("admin.listen") {
            Listen::Given
        } else {
            Listen::Default
        }
    }
}

/// What a node publishes under `/admin/{name}`: a JSON document made when asked.
pub type View = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Value> + Send>> + Send + Sync>;

/// A page a node adds to the admin port: `html` (compiled in, holding no data) at
/// `/{name}`, and `routes` for what the page reads and does, which answer paths under
/// `/admin/{name}/` and sit behind `admin.token` as the views do.
#[derive(Clone)]
pub struct AdminPage {
    pub html: &'static str,
    pub routes: Router,
}

/// Where a node is on its way to serving, as `/readyz` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Listening, not registered yet.
    Starting,
    /// Registered; the first listing of the registry has not arrived.
    Listing,
    Ready,
    /// The node says it cannot do its work now (its store is unreachable).
    NotServing,
    /// Shutting down: deregistering, then draining.
    Draining,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::Starting => "starting: not registered yet",
            Stage::Listing => "waiting for the first listing of the registry",
            Stage::Ready => "ready",
            Stage::NotServing => "not serving: the node reports it cannot do its work",
            Stage::Draining => "shutting down",
        }
    }
}

/// What a node's readiness is made of; each part set by the piece that knows it.
#[derive(Default)]
struct NodeState {
    registered: AtomicBool,
    listed: AtomicBool,
    not_serving: AtomicBool,
    draining: AtomicBool,
}

impl NodeState {
    fn stage(&self) -> Stage {
        let is = |flag: &AtomicBool| flag.load(Ordering::Acquire);
        if is(&self.draining) {
            Stage::Draining
        } else if !is(&self.registered) {
            Stage::Starting
        } else if !is(&self.listed) {
            Stage::Listing
        } else if is(&self.not_serving) {
            Stage::NotServing
        } else {
            Stage::Ready
        }
    }
}

struct NodeEntry {
    service: String,
    version: String,
    state: Arc<NodeState>,
    views: BTreeMap<String, (u8, View)>,
    pages: BTreeMap<String, AdminPage>,
}

/// The process's admin state: its nodes' readiness and the views they publish.
#[derive(Default)]
pub(crate) struct Admin {
    nodes: Mutex<BTreeMap<u64, NodeEntry>>,
    next_id: AtomicU64,
    /// The admin port's bound address, once [`start`] opened it.
    bound: OnceLock<SocketAddr>,
}

/// The admin state of this process.
pub(crate) fn process() -> &'static Admin {
    static ADMIN: OnceLock<Admin> = OnceLock::new();
    ADMIN.get_or_init(Admin::default)
}

/// A node's place on the admin port, for as long as the node runs.
pub(crate) struct NodeAdmin {
    id: u64,
    state: Arc<NodeState>,
    admin: &'static Admin,
}

impl NodeAdmin {
    /// The node's entry is in the registry.
    pub fn registered(&self) {
        self.state.registered.store(true, Ordering::Release);
    }

    /// The node has seen the registry's nodes once.
    pub fn listed(&self) {
        self.state.listed.store(true, Ordering::Release);
    }

    /// Whether the node can do its work (its own readiness, as grpc.health.v1 says it).
    pub fn serving(&self, serving: bool) {
        self.state.not_serving.store(!serving, Ordering::Release);
    }

    /// The node is leaving: it never reports ready again.
    pub fn draining(&self) {
        self.state.draining.store(true, Ordering::Release);
    }

    /// The admin port reads the stage from the shared state; only tests ask a node.
    #[cfg(test)]
    pub fn stage(&self) -> Stage {
        self.state.stage()
    }

    /// Publishes `view` as `/admin/{name}`. When several nodes of the process publish
    /// the same name, the highest `rank` is shown (the gateway's view of the cluster over
    /// a service's view of the registry).
    pub fn publish(&self, name: &str, rank: u8, view: View) {
        let mut nodes = lock(&self.admin.nodes);
        if let Some(entry) = nodes.get_mut(&self.id) {
            entry.views.insert(name.to_owned(), (rank, view));
        }
    }

    /// Adds `page` as `/{name}`, its routes under `/admin/{name}/`. When several nodes of
    /// the process add the same name, the first one's is served.
    pub fn add_page(&self, name: &str, page: AdminPage) {
        let mut nodes = lock(&self.admin.nodes);
        if let Some(entry) = nodes.get_mut(&self.id) {
            entry.pages.insert(name.to_owned(), page);
        }
    }
}

impl Drop for NodeAdmin {
    fn drop(&mut self) {
        lock(&self.admin.nodes).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admin {
    /// Adds a node of `service` to what `/readyz` waits for, until the handle drops.
    pub fn node(&'static self, service: &str, version: &str) -> NodeAdmin {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(NodeState::default());
        lock(&self.nodes).insert(
            id,
            NodeEntry {
                service: service.to_owned(),
                version: version.to_owned(),
                state: state.clone(),
                views: BTreeMap::new(),
                pages: BTreeMap::new(),
            },
        );
        NodeAdmin {
            id,
            state,
            admin: self,
        }
    }

    /// The address other processes reach this process's admin port at (`host` when it
    /// listens on every interface), for the node's metadata; `None` when it is not open.
    pub fn published_address(&self, host: &str) -> Option<String> {
        let bound = self.bound.get()?;
        Some(if bound.ip().is_unspecified() {
            crate::advertise::join_host_port(host, bound.port())
        } else {
            bound.to_string()
        })
    }

    fn readiness(&self) -> (bool, Value) {
        let nodes = lock(&self.nodes);
        let list: Vec<Value> = nodes
            .values()
            .map(|node| {
                let stage = node.state.stage();
                json!({
                    "service": node.service,
                    "ready": stage == Stage::Ready,
                    "state": stage.describe(),
                })
            })
            .collect();
        let ready = !nodes.is_empty() && nodes.values().all(|n| n.state.stage() == Stage::Ready);
        (ready, json!({ "ready": ready, "nodes": list }))
    }

    fn view(&self, name: &str) -> Option<View> {
        let nodes = lock(&self.nodes);
        nodes
            .values()
            .filter_map(|node| node.views.get(name))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, view)| view.clone())
    }

    fn page(&self, name: &str) -> Option<AdminPage> {
        let nodes = lock(&self.nodes);
        nodes
            .values()
            .find_map(|node| node.pages.get(name))
            .cloned()
    }

    fn page_names(&self) -> Vec<String> {
        self.names(|node| node.pages.keys().cloned().collect())
    }

    fn view_names(&self) -> Vec<String> {
        self.names(|node| node.views.keys().cloned().collect())
    }

    /// The names `of` gives for each node, sorted, each once.
    fn names(&self, of: impl Fn(&NodeEntry) -> Vec<String>) -> Vec<String> {
        let nodes = lock(&self.nodes);
        let mut names: Vec<String> = nodes.values().flat_map(of).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The service and version the dashboard names the process after: the node whose
    /// `cluster` view the dashboard shows (one that ranks its own view above the
    /// registry's: the gateway's, with health), else the process's first node.
    fn headline(&self) -> Value {
        let nodes = lock(&self.nodes);
        let node = nodes
            .values()
            .find(|n| n.views.get("cluster").is_some_and(|(rank, _)| *rank > 0))
            .or_else(|| nodes.values().next());
        match node {
            Some(node) => json!({ "service": node.service, "version": node.version }),
            None => Value::Null,
        }
    }
}

/// `{"services": {name: {…per_service(name), "nodes": [{id, address, version, metadata,
/// …details}]}}}`: the shape of `/admin/cluster`, which the dashboard reads, whoever
/// publishes it (a node's view of the registry, the gateway's view with health).
pub fn cluster_json<'a>(
    nodes: impl IntoIterator<Item = (&'a registry::Instance, Map<String, Value>)>,
    per_service: impl Fn(&str) -> Map<String, Value>,
) -> Value {
    let mut services = Map::new();
    for (node, details) in nodes {
        let entry = services.entry(node.service.clone()).or_insert_with(|| {
            let mut service = per_service(&node.service);
            service.insert("nodes".to_owned(), Value::Array(Vec::new()));
            Value::Object(service)
        });
        if let Some(Value::Array(list)) = entry.get_mut("nodes") {
            let mut listed = Map::new();
            listed.insert("id".to_owned(), json!(node.id));
            listed.insert("address".to_owned(), json!(node.address));
            listed.insert("version".to_owned(), json!(node.version));
            listed.insert("metadata".to_owned(), json!(node.metadata));
            listed.extend(details);
            list.push(Value::Object(listed));
        }
    }
    json!({ "services": services })
}

/// Opens the admin port of `config` for the process `name` (nothing when `admin.listen` is
/// empty) and installs the metrics recorder when `telemetry.metrics` is on. A taken address
/// stops start-up when `listen` is [`Listen::Given`]; left at its default, it gives way to
/// a free port on the same host, logged. The port serves until the process ends, so that
/// `/readyz` can say "shutting down" while the nodes drain. Returns the bound address,
/// which the process's nodes then publish under [`METADATA_KEY`].
pub async fn start(
    name: &str,
    config: &NodeConfig,
    listen: Listen,
) -> Result<Option<SocketAddr>, NodeError> {
    let address = config
        .admin
        .address()
        .map_err(|reason| NodeError::Unsupported(format!("admin.listen: {reason}")))?;
    let Some(address) = address else {
        return Ok(None);
    };
    if config.telemetry.metrics {
        telemetry::prometheus::install().map_err(|e| NodeError::Serve {
            what: "installing metrics",
            cause: e.to_string(),
        })?;
    }
    let in_use = |error: &std::io::Error| error.kind() == std::io::ErrorKind::AddrInUse;
    let (listener, moved) = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => (listener, false),
        // Another node of this host has the default: the OS picks a port beside it.
        Err(error) if listen == Listen::Default && in_use(&error) => {
            let free = SocketAddr::new(address.ip(), 0);
            let listener = tokio::net::TcpListener::bind(free)
                .await
                .map_err(|source| NodeError::Bind {
                    address: format!("{free} (admin.listen's default {address} is taken)"),
                    source,
                })?;
            (listener, true)
        }
        Err(source) => {
            let hint = if in_use(&source) {
                "; each node on a host needs its own: --admin-listen 127.0.0.1:0 (admin.listen, MS_ADMIN__LISTEN) lets the OS choose"
            } else {
                ""
            };
            return Err(NodeError::Bind {
                address: format!("{address} (admin.listen{hint})"),
                source,
            });
        }
    };
    let bound = listener.local_addr().map_err(|e| NodeError::Serve {
        what: "reading the admin port's address",
        cause: e.to_string(),
    })?;
    if moved {
        tracing::info!(
            "Server [{name}] the default admin address {address} is taken (another node on this host?), so the admin port is on {bound}; admin.listen sets one"
        );
    }
    // Only the first opening counts: a process has one admin port.
    let _ = process().bound.set(bound);
    let router = router(config.admin.token.clone());
    // The operator's port stays cleartext: `http.tls` is for the public port.
    tokio::spawn(crate::http_server::serve(
        listener,
        router,
        config.http.clone(),
        None,
        CancellationToken::new(),
    ));
    // The address last on the line, as for the other ports: tools read it there.
    tracing::info!("Server [{name}] admin listening on {bound}");
    if !bound.ip().is_loopback() && config.admin.token.is_empty() {
        tracing::warn!(
            "the admin port {bound} is reachable from other hosts without a token: set admin.token, or listen on 127.0.0.1"
        );
    }
    Ok(Some(bound))
}

/// The admin port's routes; `token` (when not empty) guards `/metrics` and `/admin/*`.
pub(crate) fn router(token: String) -> Router {
    let token = Arc::new(token);
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin", get(index))
        .route("/admin/{view}", get(view))
        .route("/admin/{view}/{*rest}", any(page_route))
        .route("/{page}", get(page))
        .with_state(token)
}

type Token = State<Arc<String>>;

/// Whether the request may read guarded endpoints.
fn allowed(token: &str, headers: &HeaderMap) -> bool {
    if token.is_empty() {
        return true;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared in constant time: the token's prefix must not leak through timing.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "this admin port wants Authorization: Bearer <admin.token>" })),
    )
        .into_response()
}

async fn readyz() -> Response {
    let (ready, body) = process().readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(token): Token, headers: HeaderMap) -> Response {
    if !allowed(&token, &headers) {
        return unauthorized();
    }
    match telemetry::prometheus::render() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are off in this process (telemetry.metrics = false)\n",
        )
            .into_response(),
    }
}

async fn index(State(token): Token, headers: HeaderMap) -> Response {
    if !allowed(&token, &headers) {
        return unauthorized();
    }
    let admin = process();
    let views: Vec<String> = admin
        .view_names()
        .into_iter()
        .map(|name| format!("/admin/{name}"))
        .collect();
    let pages: Vec<String> = admin
        .page_names()
        .into_iter()
        .map(|name| format!("/{name}"))
        .collect();
    Json(json!({ "node": admin.headline(), "views": views, "pages": pages })).into_response()
}

/// A page a node added, or 404 naming those there are.
async fn page(Path(name): Path<String>) -> Response {
    let admin = process();
    match admin.page(&name) {
        Some(page) => Html(page.html).into_response(),
        None => {
            let mut known = vec!["/ (the dashboard)".to_owned()];
            known.extend(
                admin
                    .page_names()
                    .into_iter()
                    .map(|name| format!("/{name}")),
            );
            (
                StatusCode::NOT_FOUND,
                format!(
                    "no page /{name} on this admin port; there are: {}\n",
                    known.join(", ")
                ),
            )
                .into_response()
        }
    }
}

/// What a page reads and does: the request goes whole to the routes of the page named
/// by its first segment under `/admin/`.
async fn page_route(
    State(token): Token,
    Path((name, _rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    if !allowed(&token, request.headers()) {
        return unauthorized();
    }
    let Some(page) = process().page(&name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no page {name:?} here to answer {}", request.uri().path()) })),
        )
            .into_response();
    };
    // A fresh request: the page's routes match its path on their own, without the
    // parameters this router took from it.
    let (parts, body) = request.into_parts();
    let mut fresh = Request::new(body);
    *fresh.method_mut() = parts.method;
    *fresh.uri_mut() = parts.uri;
    *fresh.version_mut() = parts.version;
    *fresh.headers_mut() = parts.headers;
    match tower::ServiceExt::oneshot(page.routes, fresh).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn view(State(token): Token, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !allowed(&token, &headers) {
        return unauthorized();
    }
    let admin = process();
    let Some(view) = admin.view(&name) else {
        let known = admin.view_names().join(", ");
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no view {name:?} here; there are: {known}") })),
        )
            .into_response();
    };
    let mut body = view().await;
    if let Value::Object(fields) = &mut body {
        fields
            .entry("node".to_owned())
            .or_insert_with(|| admin.headline());
    }
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_must_match_whole() {
        let mut headers = HeaderMap::new();
        assert!(allowed("", &headers));
        assert!(!allowed("s3cret", &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!allowed("s3cret", &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(allowed("s3cret", &headers));
    }

    #[tokio::test]
    async fn a_taken_admin_address_stops_start_up_when_given_and_gives_way_to_a_free_port_when_left_at_the_default()
     {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let mut config = NodeConfig::default();
        config.admin.listen = address.to_string();
        config.telemetry.metrics = false;

        let refused = start("unit-test", &config, Listen::Given)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains(&address.to_string()), "{refused}");
        assert!(refused.contains("admin.listen"), "{refused}");

        let moved = start("unit-test", &config, Listen::Default)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(moved.ip(), address.ip(), "on the same host");
        assert_ne!(moved.port(), address.port());
        assert_eq!(
            process().published_address("10.0.0.5"),
            Some(moved.to_string()),
            "bound to loopback, it is published as such"
        );
    }

    #[test]
    fn a_node_is_ready_once_registered_and_listed_and_not_while_draining() {
        let node = process().node("unit-test-drain", "0");
        assert_eq!(node.stage(), Stage::Starting);
        node.registered();
        assert_eq!(node.stage(), Stage::Listing);
        node.listed();
        assert_eq!(node.stage(), Stage::Ready);
        node.serving(false);
        assert_eq!(node.stage(), Stage::NotServing);
        node.serving(true);
        node.draining();
        node.serving(true);
        assert_eq!(node.stage(), Stage::Draining);
    }
}
