use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The keys every node shares. A service's own sections sit beside these in its config type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
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
        if registry.backend == Backend::Etcd
            && let Err(registry::RegistryError::InvalidInput { reason, .. }) = registry.endpoints()
        {
            return bad("registry.etcd_addr", reason);
        }
        Ok(())
    }
}
