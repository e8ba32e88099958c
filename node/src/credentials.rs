//! Call credentials between nodes: every call a node makes carries a timestamp and an
//! HMAC-SHA256 of `path \n timestamp` under the shared `security.call_key`; a service with
//! a key refuses calls without a valid one. Health checks stay open, so that probes work.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tower::{Layer, Service};

/// What a node presents and checks on calls inside the cluster: a signature under the
/// call key and, with `security.mtls`, mutual TLS.
#[derive(Clone, Debug, Default)]
pub struct ClusterCredentials {
    pub key: CallKey,
    pub tls: Option<MutualTls>,
}

/// Both sides of mutual TLS between nodes, read once from `security.mtls`.
#[derive(Clone)]
pub struct MutualTls {
    server: tonic::transport::ServerTlsConfig,
    client: tonic::transport::ClientTlsConfig,
}

impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MutualTls")
    }
}

impl ClusterCredentials {
    /// Reads the key and the PEM files; an unreadable file is an error naming its key.
    pub fn from_config(security: &config::SecurityConfig) -> Result<Self, crate::NodeError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
        let key = CallKey::new(&security.call_key);
        let Some(mtls) = &security.mtls else {
            return Ok(Self { key, tls: None });
        };
        let (ca, cert, key_file) = mtls.mutual_files().map_err(|cause| crate::NodeError::Tls {
            key: "security.mtls".to_owned(),
            cause,
        })?;
        let read = |name: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| crate::NodeError::Tls {
                key: format!("security.mtls.{name}"),
                cause: format!("cannot read {}: {e}", path.display()),
            })
        };
        let ca = Certificate::from_pem(read("ca", ca)?);
        let identity = Identity::from_pem(read("cert", cert)?, read("key", key_file)?);
        Ok(Self {
            key,
            tls: Some(MutualTls {
                server: ServerTlsConfig::new()
                    .identity(identity.clone())
                    .client_ca_root(ca.clone()),
                client: ClientTlsConfig::new().ca_certificate(ca).identity(identity),
            }),
        })
    }

    /// Where to reach a node at `address` (`host:port`): `https` and this node's client
    /// certificate under mutual TLS, plain `http` otherwise.
    pub fn endpoint(&self, address: &str) -> Result<tonic::transport::Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| e.to_string())?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.client.clone())
                .map_err(|e| e.to_string()),
            None => Ok(endpoint),
        }
    }

    /// The server side: what a service requires of whoever connects to it.
    pub fn server_tls(&self) -> Option<tonic::transport::ServerTlsConfig> {
        self.tls.as_ref().map(|tls| tls.server.clone())
    }
}

pub const TIMESTAMP_HEADER: &str = "x-ms-call-ts";
pub const SIGNATURE_HEADER: &str = "x-ms-call-sig";

type HmacSha256 = Hmac<Sha256>;

/// The shared key; `None` inside when signing is off.
#[derive(Clone, Default)]
pub struct CallKey(Option<Arc<Vec<u8>>>);

impl std::fmt::Debug for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CallKey(set)"
        } else {
            "CallKey(off)"
        })
    }
}

impl CallKey {
    /// An empty key turns signing and checking off.
    pub fn new(key: &str) -> Self {
        Self((!key.is_empty()).then(|| Arc::new(key.as_bytes().to_vec())))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    fn mac(&self, path: &str, timestamp: &str) -> Option<HmacSha256> {
        let key = self.0.as_ref()?;
        let mut mac = HmacSha256::new_from_slice(key).ok()?;
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(timestamp.as_bytes());
        Some(mac)
    }

    /// `(timestamp, signature)` for a call to `path` now; `None` when signing is off.
    pub fn sign(&self, path: &str) -> Option<(String, String)> {
        let timestamp = registry::unix_millis_now().to_string();
        let signature = hex(&self.mac(path, &timestamp)?.finalize().into_bytes());
        Some((timestamp, signature))
    }

    /// Checks a call's credential; the reason when it is refused.
    pub fn verify(
        &self,
        path: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        max_skew: Duration,
    ) -> Result<(), String> {
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            return Err(
                "call credential missing: calls must come through the gateway or another node"
                    .into(),
            );
        };
        let sent: u64 = timestamp
            .parse()
            .map_err(|_| "call credential timestamp unreadable".to_owned())?;
        let skew = registry::unix_millis_now().abs_diff(sent);
        if skew > max_skew.as_millis() as u64 {
            return Err(format!(
                "call credential expired ({skew} ms from our clock)"
            ));
        }
        let bytes = unhex(signature).ok_or("call credential signature unreadable")?;
        let mac = self.mac(path, timestamp).ok_or("no call key")?;
        mac.verify_slice(&bytes)
            .map_err(|_| "call credential signature does not match".to_owned())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Client side: adds the credential to every request of the wrapped service.
#[derive(Clone, Debug)]
pub struct Signed<S> {
    inner: S,
    key: CallKey,
}

impl<S> Signed<S> {
    pub fn new(inner: S, key: CallKey) -> Self {
        Self { inner, key }
    }
}

impl<S, B> Service<http::Request<B>> for Signed<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some((timestamp, signature)) = self.key.sign(request.uri().path()) {
            let headers = request.headers_mut();
            if let (Ok(ts), Ok(sig)) = (timestamp.parse(), signature.parse()) {
                headers.insert(TIMESTAMP_HEADER, ts);
                headers.insert(SIGNATURE_HEADER, sig);
            }
        }
        self.inner.call(request)
    }
}

/// Server side: refuses calls without a valid credential, except health checks.
#[derive(Clone, Debug)]
pub struct RequireCredentialLayer {
    key: CallKey,
    max_skew: Duration,
}

impl RequireCredentialLayer {
    pub fn new(key: CallKey, max_skew: Duration) -> Self {
        Self { key, max_skew }
    }
}

impl<S> Layer<S> for RequireCredentialLayer {
    type Service = RequireCredential<S>;

    fn layer(&self, inner: S) -> RequireCredential<S> {
        RequireCredential {
            inner,
            key: self.key.clone(),
            max_skew: self.max_skew,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequireCredential<S> {
    inner: S,
    key: CallKey,
    max_skew: Duration,
}

impl<S, B> Service<http::Request<B>> for RequireCredential<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let open = !self.key.is_set() || path.starts_with("/grpc.health.v1.Health/");
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let checked = if open {
            Ok(())
        } else {
            self.key.verify(
                path,
                header(TIMESTAMP_HEADER),
                header(SIGNATURE_HEADER),
                self.max_skew,
            )
        };
        match checked {
            Ok(()) => futures_util::future::Either::Left(self.inner.call(request)),
            Err(reason) => {
                tracing::debug!(%path, %reason, "call refused");
                let refused = tonic::Status::unauthenticated(reason).into_http();
                futures_util::future::Either::Right(std::future::ready(Ok(refused)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_for_its_path_and_key_only() {
        let key = CallKey::new("k1");
        let (ts, sig) = key.sign("/user.v1.UserService/Exists").unwrap();
        let skew = Duration::from_secs(60);
        assert!(
            key.verify("/user.v1.UserService/Exists", Some(&ts), Some(&sig), skew)
                .is_ok()
        );
        assert!(
            key.verify("/user.v1.UserService/Get", Some(&ts), Some(&sig), skew)
                .is_err()
        );
        assert!(
            CallKey::new("k2")
                .verify("/user.v1.UserService/Exists", Some(&ts), Some(&sig), skew)
                .is_err()
        );
        assert!(
            key.verify("/x", None, None, skew)
                .unwrap_err()
                .contains("missing")
        );
        assert!(
            key.verify("/user.v1.UserService/Exists", Some("1"), Some(&sig), skew)
                .unwrap_err()
                .contains("expired")
        );
    }

    #[test]
    fn an_empty_key_signs_nothing() {
        assert!(CallKey::new("").sign("/a").is_none());
        assert!(!CallKey::new("").is_set());
    }
}
