//! The production [`Registry`]: etcd v3 through `etcd-client`.
//!
//! Each registration is one key, `{namespace}/services/{service}/{id}`, holding the
//! instance as JSON and bound to its own lease. Watches follow a key prefix and fall back
//! to a re-list and a diff whenever etcd cannot replay what was missed.

mod endpoints;
mod key_watch;
mod kv;
mod layout;
mod lease;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use registry::{
    Backoff, Instance, Registered, Registration, Registry, RegistryError, Scope, Snapshot, Watch,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;

pub use key_watch::{KeyFollower, KeyWatch};
pub use kv::Kv;
use layout::Layout;
pub use registry::parse_endpoints;

/// How to reach etcd and where in it to keep the registry.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `host:port` (or `http(s)://host:port`) of each member.
    pub endpoints: Vec<String>,
    /// Key prefix of everything rust-ms stores; `go-ms` as in GO-MS.
    pub namespace: String,
    /// How long [`EtcdRegistry::connect`] keeps trying before it gives up.
    pub connect_timeout: Duration,
    /// Bound on each single request, so a dead member cannot stall a caller.
    pub request_timeout: Duration,
    pub credentials: Option<Credentials>,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// PEM files for TLS: the CA that signed etcd's certificate and, for mutual TLS, ours.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            namespace: "go-ms".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            credentials: None,
            tls: None,
        }
    }

    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    fn client_options(&self) -> Result<ConnectOptions, RegistryError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout)
            // Notice a dead member (container killed, cable cut) within seconds.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(credentials) = &self.credentials {
            options = options.with_user(&credentials.username, &credentials.password);
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        Ok(options)
    }
}

fn read_pem(field: &'static str, path: &PathBuf) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path)
        .map_err(|e| RegistryError::invalid(field, format!("cannot read {}: {e}", path.display())))
}

fn tls_options(files: &TlsFiles) -> Result<TlsOptions, RegistryError> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &files.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem("tls.ca", ca)?));
    }
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read_pem("tls.cert", cert)?,
                read_pem("tls.key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(RegistryError::invalid(
                "tls",
                "a client certificate needs both cert and key",
            ));
        }
    }
    Ok(tls)
}

/// Runs a single etcd request with the configured bound.
pub(crate) async fn within<T>(
    bound: Duration,
    operation: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(bound, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(RegistryError::backend(operation, describe(&error))),
        Err(_) => Err(RegistryError::backend(
            operation,
            format!("no answer within {bound:?}"),
        )),
    }
}

/// Runs a unary etcd request within `bound`, trying again while etcd answers "unavailable".
///
/// With several endpoints, a call can land on a member that just died; the balanced channel
/// sends the next attempt elsewhere. Only requests that are safe to repeat go through here.
pub(crate) async fn request<T, F, Fut>(
    client: &Client,
    bound: Duration,
    operation: &'static str,
    mut call: F,
) -> Result<T, RegistryError>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + bound;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(remaining, call(client.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(RegistryError::backend(
                    operation,
                    format!("no answer within {bound:?}"),
                ));
            }
        };
        let delay = backoff.next_delay();
        if !is_unavailable(&error) || Instant::now() + delay >= deadline {
            return Err(RegistryError::backend(operation, describe(&error)));
        }
        tokio::time::sleep(delay).await;
    }
}

/// An etcd error in one short line: the gRPC status and the root cause, without the
/// nested debug output etcd-client's own Display carries.
pub(crate) fn describe(error: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return error.to_string();
    };
    let head = format!("{:?}: {}", status.code(), status.message());
    let mut root: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(next) = root.and_then(|r| r.source()) {
        root = Some(next);
    }
    match root.map(|r| r.to_string()) {
        Some(root) if root.len() < 120 && !head.contains(&root) => format!("{head} ({root})"),
        _ => head,
    }
}

fn is_unavailable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.code() == Code::Unavailable,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Errors that waiting cannot cure: bad credentials, a bad URL, a TLS misconfiguration.
fn is_permanent(error: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match error {
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => true,
        E::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
        ),
        _ => false,
    }
}

#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    layout: Layout,
    options: Arc<EtcdOptions>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.options.endpoints)
            .field("namespace", &self.options.namespace)
            .finish()
    }
}

impl EtcdRegistry {
    /// Connects and proves etcd answers, retrying with backoff for up to
    /// `connect_timeout`; the error then names every endpoint tried.
    pub async fn connect(options: EtcdOptions) -> Result<Self, RegistryError> {
        if options.endpoints.is_empty() {
            return Err(RegistryError::invalid("etcd_addr", "no endpoint given"));
        }
        for endpoint in &options.endpoints {
            parse_endpoints(endpoint)?;
        }
        registry::validate_name("namespace", options.namespace.trim_end_matches('/'))?;
        let client_options = options.client_options()?;
        let urls: Vec<String> = options
            .endpoints
            .iter()
            .map(|e| endpoints::to_url(e, options.tls.is_some()))
            .collect();
        let layout = Layout::new(&options.namespace);
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut attempts = 0u32;
        loop {
            let remaining = options.connect_timeout.saturating_sub(started.elapsed());
            let attempt = async {
                let mut client = Client::connect(&urls, Some(client_options.clone())).await?;
                client
                    .get(
                        layout.namespace(),
                        Some(GetOptions::new().with_count_only()),
                    )
                    .await?;
                Ok::<_, etcd_client::Error>(client)
            };
            let cause = match tokio::time::timeout(remaining.max(Duration::from_millis(1)), attempt)
                .await
            {
                Ok(Ok(client)) => {
                    return Ok(Self {
                        client,
                        layout,
                        options: Arc::new(options),
                    });
                }
                Ok(Err(error)) if is_permanent(&error) => {
                    return Err(RegistryError::Unreachable {
                        endpoints: options.endpoints.join(", "),
                        waited: round_to_millis(started.elapsed()),
                        cause: describe(&error),
                    });
                }
                Ok(Err(error)) => describe(&error),
                Err(_) => "no answer".to_owned(),
            };
            let remaining = options.connect_timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(RegistryError::Unreachable {
                    endpoints: options.endpoints.join(", "),
                    waited: round_to_millis(started.elapsed()),
                    cause,
                });
            }
            if attempts == 0 {
                tracing::warn!(
                    endpoints = %options.endpoints.join(", "),
                    %cause,
                    "etcd not reachable yet; retrying for up to {:?}",
                    options.connect_timeout
                );
            } else {
                tracing::debug!(%cause, "etcd still not reachable");
            }
            attempts += 1;
            tokio::time::sleep(backoff.next_delay().min(remaining)).await;
        }
    }

    /// The underlying client, for tools that need etcd beyond the registry.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Bounded access to the keys beside the registry, for a service's own data.
    pub fn kv(&self) -> Kv {
        Kv::new(
            self.client.clone(),
            self.options.request_timeout,
            self.layout.namespace(),
        )
    }

    pub fn namespace(&self) -> &str {
        self.layout.namespace()
    }

    /// The key an instance is stored under.
    pub fn key_of(&self, instance: &Instance) -> String {
        self.layout.key(&instance.service, &instance.id)
    }

    pub(crate) async fn list(&self, scope: &Scope) -> Result<(Vec<Instance>, u64), RegistryError> {
        let prefix = self.layout.prefix(scope);
        let response = request(
            &self.client,
            self.options.request_timeout,
            "list",
            |mut client| {
                let prefix = prefix.clone();
                async move {
                    client
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            },
        )
        .await?;
        let revision = response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| RegistryError::backend("list", "etcd sent no revision"))?;
        let mut instances = Vec::with_capacity(response.kvs().len());
        for kv in response.kvs() {
            match self.layout.decode(kv.key(), kv.value()) {
                Ok(Some(instance)) => instances.push(instance),
                Ok(None) => {}
                // One unreadable entry must not hide every other node.
                Err(error) => tracing::warn!(%error, "skipping registry entry"),
            }
        }
        Ok((instances, revision.max(0) as u64))
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, registration: Registration) -> Result<Registered, RegistryError> {
        registration.validate()?;
        let leaser = Arc::new(lease::EtcdLeaser::new(
            self.client.clone(),
            self.layout.clone(),
            self.options.request_timeout,
        ));
        Registered::start(leaser, registration).await
    }

    async fn snapshot(&self, scope: &Scope) -> Result<Snapshot, RegistryError> {
        scope.validate()?;
        let (instances, revision) = self.list(scope).await?;
        Ok(Snapshot::new(scope.clone(), revision, instances))
    }

    async fn watch(&self, from: &Snapshot) -> Result<Watch, RegistryError> {
        from.scope.validate()?;
        let stop = CancellationToken::new();
        let (tx, watch) = Watch::channel(Some(stop.clone()));
        tokio::spawn(watch::follow(self.clone(), from.clone(), tx, stop));
        Ok(watch)
    }

    fn describe(&self) -> String {
        format!("etcd {}", self.options.endpoints.join("|"))
    }
}
