use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The keys every node shares. A service's own sections sit beside these in its config type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// The gateway's HTTP port; other nodes ignore it.
    pub http_port: u16,
    /// The gRPC port; 0 lets the OS choose, and the chosen port is what gets registered.
    pub rpc_port: u16,
    /// The address the node's ports are bound on: `0.0.0.0` (every IPv4 interface, the
    /// default), `::`, or one address such as `127.0.0.1`.
    pub listen_host: String,
    /// `auto` (the host's first non-loopback IPv4) or the address other nodes dial.
    pub advertise_host: String,
    /// How long in-flight requests may take to finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub registry: RegistryConfig,
    pub log: LogConfig,
    pub security: SecurityConfig,
    /// Limits of the HTTP port (the gateway's), against clients that stall or flood.
    pub http: HttpLimits,
    /// The operator's port: metrics, health, readiness, the cluster view, the dashboard.
    pub admin: AdminConfig,
    /// Metrics on and off, and where traces go.
    pub telemetry: TelemetryConfig,
    /// Calls this node makes to other services (`context.client("user")`).
    pub client: ClientConfig,
    /// Metadata the node registers beside what the runtime publishes (`color = "blue"`):
    /// what the gateway's traffic rules choose nodes by; `weight` is the node's share
    /// under the weighted balancer.
    pub labels: BTreeMap<String, String>,
}

/// Metadata keys the runtime writes itself, which labels may not set.
pub const RUNTIME_METADATA: [&str; 3] = ["grpc.services", "http", "admin"];

/// `[client]`: how a node calls other services: deadlines, retries, health checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// The deadline of a call to another service; a call made while serving one that
    /// has less time left gets what is left instead.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The share of calls, in percent (0 to 1000), that may be retried on another node
    /// after they may have run there (only methods safe to repeat ever are).
    pub retry_budget_percent: f32,
    /// How often each called node's grpc.health.v1 is asked; 0s turns checks off.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Consecutive transport failures that set a called node aside; 0 never does.
    pub eject_after_failures: u32,
    /// How long a node is set aside.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
    /// Whether each called method has an adaptive concurrency limit: past it a call fails
    /// at once with `UNAVAILABLE` instead of queueing behind an overloaded service.
    pub load_shedding: bool,
    /// Per called service, by its registered name: `[client.services.user] timeout = "2s"`.
    pub services: BTreeMap<String, CalledService>,
}

/// `[client.services.<name>]`: what differs for calls to one service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CalledService {
    /// The deadline of its calls, instead of `client.timeout`.
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retry_budget_percent: 20.0,
            health_interval: Duration::from_secs(5),
            eject_after_failures: 3,
            eject_for: Duration::from_secs(10),
            load_shedding: true,
            services: BTreeMap::new(),
        }
    }
}

impl ClientConfig {
    /// The deadline of calls to `service`.
    pub fn timeout_of(&self, service: &str) -> Duration {
        self.services
            .get(service)
            .and_then(|called| called.timeout)
            .unwrap_or(self.timeout)
    }
}

/// Where the admin port listens unless `admin.listen` says otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9900";

/// `[admin]`: one port per process for the operator, apart from the ports callers use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// `host:port` of the admin port (port 0: the OS chooses); `""` turns it off. On
    /// loopback by default: what it shows is for the operator. Left at the default
    /// ([`DEFAULT_ADMIN_LISTEN`]) and taken by another process, it gives way to a free
    /// port on the same host, so that several nodes share a host as in GO-MS; set in a
    /// file, the environment or a flag (even to the default), a taken address stops
    /// start-up ([`crate::Loaded::given`] tells the two apart).
    pub listen: String,
    /// When set, `/metrics` and `/admin/*` want `Authorization: Bearer <token>`;
    /// `/healthz`, `/readyz` and the dashboard page itself stay open for probes.
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN.to_owned(),
            token: String::new(),
        }
    }
}

impl AdminConfig {
    /// The address to bind, `None` when the admin port is off.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, crate::AdminListenError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|_| crate::AdminListenError {
                listen: self.listen.clone(),
            })
    }
}

/// `[telemetry]`: Prometheus metrics, and OpenTelemetry traces sent over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Counts and latencies kept for `/metrics` on the admin port.
    pub metrics: bool,
    /// An OTLP/gRPC collector (`http://127.0.0.1:4317`); `""`: no spans are exported,
    /// though a caller's `traceparent` is still passed on.
    pub otlp_endpoint: String,
    /// The share of new traces recorded (0.0 to 1.0); a trace a caller started keeps
    /// the caller's decision.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics: true,
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
        }
    }
}

/// `[http]`: what a client of the HTTP port may take or hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpLimits {
    /// How long a request's headers may take to arrive; also how long an idle HTTP/1.1
    /// keep-alive connection waits for its next request.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a request body may stall between bytes before the request fails (408).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A connection on which nothing moved for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once; past it new ones wait to be accepted.
    pub max_connections: usize,
    /// The largest request head (request line and headers) read; past it, 431.
    pub max_header_bytes: usize,
    /// `[http.tls]`: the port speaks TLS (HTTP/2 and HTTP/1.1 by ALPN) with this
    /// certificate; unset, cleartext (HTTP/1.1, and HTTP/2 with prior knowledge).
    pub tls: HttpTls,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            tls: HttpTls::default(),
        }
    }
}

/// `[http.tls]`: the HTTP port's certificate. Both files are re-read when either
/// changes, so a renewed certificate is served to new connections without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpTls {
    /// PEM: the certificate, then the chain up to (not including) the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl HttpTls {
    /// `(cert, key)` when TLS is on; `None` when off; why not when only one is set.
    pub fn files(&self) -> Result<Option<(&Path, &Path)>, String> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("has a cert and no key: TLS takes both".to_owned()),
            (None, Some(_)) => Err("has a key and no cert: TLS takes both".to_owned()),
        }
    }
}

/// `[security]`: proof that a call comes from inside the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// Shared by every node: calls between nodes are signed with it, and services refuse
    /// calls without a valid signature. Empty: no signing, no checking.
    pub call_key: String,
    /// How far a signed call's clock may be from ours.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Mutual TLS between nodes: services accept only connections whose client presents
    /// a certificate of this CA, and every node presents `cert` when it calls one. The
    /// gateway's own ports stay open to outside callers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<TlsConfig>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            call_key: String::new(),
            max_clock_skew: Duration::from_secs(60),
            mtls: None,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            http_port: 8080,
            rpc_port: 8180,
            listen_host: "0.0.0.0".to_owned(),
            advertise_host: "auto".to_owned(),
            shutdown_grace: Duration::from_secs(10),
            registry: RegistryConfig::default(),
            log: LogConfig::default(),
            security: SecurityConfig::default(),
            http: HttpLimits::default(),
            admin: AdminConfig::default(),
            telemetry: TelemetryConfig::default(),
            client: ClientConfig::default(),
            labels: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Etcd,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    pub backend: Backend,
    /// etcd endpoints: GO-MS's `a|b` form, or commas.
    pub etcd_addr: String,
    pub namespace: String,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Etcd,
            etcd_addr: "127.0.0.1:2379".to_owned(),
            namespace: "go-ms".to_owned(),
            ttl: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            username: None,
            password: None,
            tls: None,
        }
    }
}

impl RegistryConfig {
    /// The etcd endpoints, split and checked.
    pub fn endpoints(&self) -> Result<Vec<String>, registry::RegistryError> {
        registry::parse_endpoints(&self.etcd_addr)
    }
}

/// PEM files for TLS: to etcd (`registry.tls`), between nodes (`security.mtls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// `(ca, cert, key)` when all three are set, as mutual TLS needs; otherwise why not.
    pub fn mutual_files(&self) -> Result<(&Path, &Path, &Path), String> {
        fn need<'a>(name: &str, file: &'a Option<PathBuf>) -> Result<&'a Path, String> {
            file.as_deref()
                .ok_or_else(|| format!("has no {name}: mutual TLS takes ca, cert and key together"))
        }
        Ok((
            need("ca", &self.ca)?,
            need("cert", &self.cert)?,
            need("key", &self.key)?,
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `rust_ms=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

impl crate::Validate for NodeConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: String| Err((key.to_owned(), reason));
        if self.advertise_host != "auto" {
            let probe = format!("{}:1", self.advertise_host);
            if registry::validate_address(&probe).is_err() {
                return bad(
                    "advertise_host",
                    format!(
                        "{:?} is not \"auto\" or a host without a port",
                        self.advertise_host
                    ),
                );
            }
        }
        if self.listen_host.parse::<std::net::IpAddr>().is_err() {
            return bad(
                "listen_host",
                format!(
                    "{:?} is not an IP address (0.0.0.0, ::, 127.0.0.1, ...)",
                    self.listen_host
                ),
            );
        }
        for (name, value) in &self.labels {
            let key = format!("labels.{name}");
            if RUNTIME_METADATA.contains(&name.as_str()) {
                return bad(
                    &key,
                    format!(
                        "{name:?} is written by the runtime ({}); choose another name",
                        RUNTIME_METADATA.join(", ")
                    ),
                );
            }
            if name.is_empty() || value.is_empty() {
                return bad(&key, "a label needs a name and a value".to_owned());
            }
        }
        let http = &self.http;
        for (key, value) in [
            ("http.header_read_timeout", http.header_read_timeout),
            ("http.body_read_timeout", http.body_read_timeout),
            ("http.idle_timeout", http.idle_timeout),
        ] {
            if value < Duration::from_millis(10) {
                return bad(key, format!("{value:?} is under the minimum of 10ms"));
            }
        }
        if http.max_connections == 0 {
            return bad("http.max_connections", "must be at least 1".to_owned());
        }
        if http.max_header_bytes < 8192 {
            return bad(
                "http.max_header_bytes",
                format!("{} is under the minimum of 8192", http.max_header_bytes),
            );
        }
        if let Err(reason) = http.tls.files() {
            return bad("http.tls", reason);
        }
        let registry = &self.registry;
        if registry.ttl < Duration::from_secs(1) {
            return bad(
                "registry.ttl",
                format!("{:?} is under the minimum of 1s", registry.ttl),
            );
        }
        if registry.connect_timeout.is_zero() {
            return bad(
                "registry.connect_timeout",
                "must be more than 0s".to_owned(),
            );
        }
        if let Err(e) = registry::validate_name("namespace", &registry.namespace) {
            return bad("registry.namespace", e.to_string());
        }
        if let Some(Err(reason)) = self.security.mtls.as_ref().map(TlsConfig::mutual_files) {
            return bad("security.mtls", reason);
        }
        if let Err(reason) = self.admin.address() {
            return bad("admin.listen", reason.to_string());
        }
        let client = &self.client;
        if client.timeout.is_zero() {
            return bad("client.timeout", "must be more than 0s".to_owned());
        }
        if let Some((name, _)) = client
            .services
            .iter()
            .find(|(_, called)| called.timeout.is_some_and(|t| t.is_zero()))
        {
            return bad(
                &format!("client.services.{name}.timeout"),
                "must be more than 0s".to_owned(),
            );
        }
        if !(0.0..=1000.0).contains(&client.retry_budget_percent) {
            return bad(
                "client.retry_budget_percent",
                format!("{} is not between 0 and 1000", client.retry_budget_percent),
            );
        }
        let telemetry = &self.telemetry;
        if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
            return bad(
                "telemetry.sample_ratio",
                format!("{} is not between 0.0 and 1.0", telemetry.sample_ratio),
            );
        }
        let endpoint = &telemetry.otlp_endpoint;
        if !endpoint.is_empty()
            && (!(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                || endpoint.parse::<http::Uri>().is_err())
        {
            return bad(
                "telemetry.otlp_endpoint",
                format!("{endpoint:?} is not an http:// or https:// URL of an OTLP/gRPC collector"),
            );
        }
        if registry.backend == Backend::Etcd
            && let Err(registry::RegistryError::InvalidInput { reason, .. }) = registry.endpoints()
        {
            return bad("registry.etcd_addr", reason);
        }
        Ok(())
    }
}
