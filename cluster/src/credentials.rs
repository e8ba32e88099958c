//! Call credentials between nodes: every call a node makes carries a timestamp and an
//! HMAC-SHA256 of `path \n timestamp` under the shared `security.call_key`; a service with
//! a key refuses calls without a valid one. Health checks stay open, so that probes work.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tower::{Layer, Service};

/// A TLS setting that cannot be used; `key` is the configuration key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {cause}")]
pub struct CredentialsError {
    pub key: String,
    pub cause: String,
}

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
    pub fn from_config(security: &config::SecurityConfig) -> Result<Self, CredentialsError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
        let key = CallKey::new(&security.call_key);
        let Some(mtls) = &security.mtls else {
            return Ok(Self { key, tls: None });
        };
        let (ca, cert, key_file) = mtls.mutual_files().map_err(|cause| CredentialsError {
            key: "security.mtls".to_owned(),
            cause,
        })?;
        let read = |name: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| CredentialsError {
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
    pub fn endpoint(
        &self,
        address: &str,
    ) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))?;
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.client.clone()),
            None => Ok(endpoint),
        }
    }

    /// The server side: what a service requires of whoever connects to it.
    pub fn server_tls(&self) -> Option<tonic::transport::ServerTlsConfig> {
        self.tls.as_ref().map(|tls| tls.server.clone())
    }
}

pub const TIMESTAMP_HEADER: &str = "x-ms-call-ts";
pub const NONCE_HEADER: &str = "x-ms-call-nonce";
pub const SIGNATURE_HEADER: &str = "x-ms-call-sig";
/// SHA-256 of the request body as sent (its gRPC frames), hex: set by a caller that knows
/// the whole body up front (the gateway's unary calls), covered by the signature, and
/// checked by the service against the body it receives.
pub const BODY_HEADER: &str = "x-ms-call-body";
/// The largest body a service buffers to check it against its digest.
const MAX_CHECKED_BODY: usize = 8 << 20;

/// The value of [`BODY_HEADER`] for a unary call whose message encodes to `message`.
pub fn body_digest(message: &[u8]) -> String {
    use sha2::Digest;
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update((message.len() as u32).to_be_bytes());
    hasher.update(message);
    hex(&hasher.finalize())
}

/// What a signature authorizes: one call, to one method, at one time.
pub struct Credential {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

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

    fn mac(&self, path: &str, timestamp: &str, nonce: &str, body: &str) -> Option<HmacSha256> {
        let key = self.0.as_ref()?;
        let mut mac = HmacSha256::new_from_slice(key).ok()?;
        for part in [path, timestamp, nonce, body] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        Some(mac)
    }

    /// A credential for one call to `path` now, bound to the body's digest when the caller
    /// gave one (`-` when not); `None` when signing is off.
    pub fn sign(&self, path: &str, body: Option<&str>) -> Option<Credential> {
        let timestamp = registry::unix_millis_now().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let body = body.unwrap_or("-");
        let signature = hex(&self
            .mac(path, &timestamp, &nonce, body)?
            .finalize()
            .into_bytes());
        Some(Credential {
            timestamp,
            nonce,
            signature,
        })
    }

    /// Checks a call's credential: signed with our key for this method, within the clock
    /// skew, and never seen before (`seen` remembers nonces for the skew window, so a
    /// captured credential cannot be replayed). The reason when it is refused.
    pub fn verify(
        &self,
        path: &str,
        credential: [Option<&str>; 3],
        body: Option<&str>,
        max_skew: Duration,
        seen: &SeenNonces,
    ) -> Result<(), String> {
        let [Some(timestamp), Some(nonce), Some(signature)] = credential else {
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
        let mac = self
            .mac(path, timestamp, nonce, body.unwrap_or("-"))
            .ok_or("no call key")?;
        mac.verify_slice(&bytes)
            .map_err(|_| "call credential signature does not match".to_owned())?;
        // Only a valid signature's nonce is remembered: forged ones cost no memory.
        if !seen.first_use(nonce, sent + max_skew.as_millis() as u64) {
            return Err("call credential already used: a replayed call".to_owned());
        }
        Ok(())
    }
}

/// The nonces of calls accepted within the clock-skew window, each until it could no
/// longer pass the timestamp check anyway.
#[derive(Debug, Default)]
pub struct SeenNonces {
    /// nonce → the Unix millisecond after which its credential is expired.
    until: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl SeenNonces {
    /// Whether `nonce` is new (and remembers it until `expires_ms`).
    fn first_use(&self, nonce: &str, expires_ms: u64) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what expired, now and then, so memory follows the call rate.
        if until.len() >= 1024 && until.len().is_power_of_two() {
            let now = registry::unix_millis_now();
            until.retain(|_, expires| *expires >= now);
        }
        if until.contains_key(nonce) {
            return false;
        }
        until.insert(nonce.to_owned(), expires_ms);
        true
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

/// One HTTP/2 connection to one node, its calls carrying this node's call credential.
pub type NodeChannel = Signed<tonic::transport::Channel>;

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

    /// Whether calls through it are signed (a caller then binds unary bodies with
    /// [`BODY_HEADER`]).
    pub fn signs(&self) -> bool {
        self.key.is_set()
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
        // The call continues the trace of whatever this node is doing (the handler of a
        // call it serves), unless its maker set a trace of its own (the gateway's attempt).
        if !request
            .headers()
            .contains_key(telemetry::trace::TRACEPARENT)
        {
            telemetry::trace::inject(
                &telemetry::trace::TraceContext::current(),
                request.headers_mut(),
            );
        }
        let body = request
            .headers()
            .get(BODY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(credential) = self.key.sign(request.uri().path(), body.as_deref()) {
            let headers = request.headers_mut();
            if let (Ok(ts), Ok(nonce), Ok(sig)) = (
                credential.timestamp.parse(),
                credential.nonce.parse(),
                credential.signature.parse(),
            ) {
                headers.insert(TIMESTAMP_HEADER, ts);
                headers.insert(NONCE_HEADER, nonce);
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
    seen: Arc<SeenNonces>,
}

impl RequireCredentialLayer {
    pub fn new(key: CallKey, max_skew: Duration) -> Self {
        Self {
            key,
            max_skew,
            seen: Arc::default(),
        }
    }
}

impl<S> Layer<S> for RequireCredentialLayer {
    type Service = RequireCredential<S>;

    fn layer(&self, inner: S) -> RequireCredential<S> {
        RequireCredential {
            inner,
            key: self.key.clone(),
            max_skew: self.max_skew,
            seen: self.seen.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequireCredential<S> {
    inner: S,
    key: CallKey,
    max_skew: Duration,
    seen: Arc<SeenNonces>,
}

// Generic over the bodies, so that it sits as well in front of tonic's routes as in
// front of an axum router: a node's own services and its fallback.
impl<S, B, RB> Service<http::Request<B>> for RequireCredential<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + From<bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let open = !self.key.is_set() || path.starts_with("/grpc.health.v1.Health/");
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let digest = header(BODY_HEADER).map(str::to_owned);
        let checked = if open {
            Ok(())
        } else {
            self.key.verify(
                path,
                [
                    header(TIMESTAMP_HEADER),
                    header(NONCE_HEADER),
                    header(SIGNATURE_HEADER),
                ],
                digest.as_deref(),
                self.max_skew,
                &self.seen,
            )
        };
        if let Err(reason) = checked {
            tracing::debug!(%path, %reason, "call refused");
            let refused = tonic::Status::unauthenticated(reason).into_http();
            return Box::pin(std::future::ready(Ok(refused)));
        }
        // The service that was polled ready takes this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(digest) = digest.filter(|_| !open) else {
            return Box::pin(inner.call(request));
        };
        Box::pin(async move {
            use http_body_util::BodyExt;
            let (parts, body) = request.into_parts();
            let bytes = match http_body_util::Limited::new(body, MAX_CHECKED_BODY)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let status = tonic::Status::unauthenticated(format!(
                        "the body a call credential covers could not be read: {error}"
                    ));
                    return Ok(status.into_http());
                }
            };
            use sha2::Digest;
            if hex(&Sha256::digest(&bytes)) != digest {
                let status =
                    tonic::Status::unauthenticated("call credential does not match the body sent");
                return Ok(status.into_http());
            }
            inner
                .call(http::Request::from_parts(parts, B::from(bytes)))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(credential: &Credential) -> [Option<&str>; 3] {
        [
            Some(&credential.timestamp),
            Some(&credential.nonce),
            Some(&credential.signature),
        ]
        .map(|part| part.map(String::as_str))
    }

    #[test]
    fn a_signature_verifies_for_its_path_and_key_only() {
        let key = CallKey::new("k1");
        let exists = "/user.v1.UserService/Exists";
        let skew = Duration::from_secs(60);
        let credential = key.sign(exists, None).unwrap();
        let other_key = CallKey::new("k2");
        let seen = SeenNonces::default();
        assert!(
            key.verify(
                "/user.v1.UserService/Get",
                parts(&credential),
                None,
                skew,
                &seen
            )
            .is_err()
        );
        assert!(
            other_key
                .verify(exists, parts(&credential), None, skew, &seen)
                .is_err()
        );
        assert!(
            key.verify(exists, parts(&credential), None, skew, &seen)
                .is_ok()
        );
        let missing = key
            .verify("/x", [None, None, None], None, skew, &seen)
            .unwrap_err();
        assert!(missing.contains("missing"));
        let old = [
            Some("1"),
            Some(credential.nonce.as_str()),
            Some(credential.signature.as_str()),
        ];
        assert!(
            key.verify(exists, old, None, skew, &seen)
                .unwrap_err()
                .contains("expired")
        );
    }

    #[test]
    fn a_credential_is_good_for_one_call_only() {
        let key = CallKey::new("k1");
        let skew = Duration::from_secs(60);
        let seen = SeenNonces::default();
        let credential = key.sign("/order.v1.OrderService/Create", None).unwrap();
        let path = "/order.v1.OrderService/Create";
        assert!(
            key.verify(path, parts(&credential), None, skew, &seen)
                .is_ok()
        );
        let replayed = key
            .verify(path, parts(&credential), None, skew, &seen)
            .unwrap_err();
        assert!(replayed.contains("already used"), "{replayed}");
        // A forged signature with a fresh nonce is refused and not remembered.
        let forged = [
            Some(credential.timestamp.as_str()),
            Some("fresh"),
            Some("00"),
        ];
        assert!(key.verify(path, forged, None, skew, &seen).is_err());
        assert!(seen.first_use("fresh", u64::MAX));
    }

    #[test]
    fn a_credential_bound_to_a_body_digest_fails_for_another_digest_or_none() {
        let key = CallKey::new("k1");
        let skew = Duration::from_secs(60);
        let path = "/user.v1.UserService/Register";
        let digest = body_digest(b"the body");
        let seen = SeenNonces::default();
        let bound = key.sign(path, Some(&digest)).unwrap();
        let other = body_digest(b"another body");
        assert!(
            key.verify(path, parts(&bound), Some(&other), skew, &seen)
                .is_err()
        );
        assert!(key.verify(path, parts(&bound), None, skew, &seen).is_err());
        assert!(
            key.verify(path, parts(&bound), Some(&digest), skew, &seen)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_service_refuses_a_body_other_than_the_one_signed() {
        let key = CallKey::new("k1");
        let layer = RequireCredentialLayer::new(key.clone(), Duration::from_secs(60));
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = reached.clone();
        // Any body that can be rebuilt from the bytes read: the node's routes take axum's.
        type Body = http_body_util::Full<bytes::Bytes>;
        let inner = tower::service_fn(move |_request: http::Request<Body>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let mut service = layer.layer(inner);
        let path = "/user.v1.UserService/Register";
        let call = |body: &'static [u8], signed_for: &'static [u8]| {
            let digest = body_digest(signed_for);
            let credential = key.sign(path, Some(&digest)).unwrap();
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
            frame.extend_from_slice(body);
            http::Request::builder()
                .uri(path)
                .header(TIMESTAMP_HEADER, credential.timestamp)
                .header(NONCE_HEADER, credential.nonce)
                .header(SIGNATURE_HEADER, credential.signature)
                .header(BODY_HEADER, digest)
                .body(Body::new(bytes::Bytes::from(frame)))
                .unwrap()
        };
        let swapped = service.call(call(b"evil", b"good")).await.unwrap();
        assert_eq!(swapped.headers()["grpc-status"], "16");
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
        let honest = service.call(call(b"good", b"good")).await.unwrap();
        assert!(honest.headers().get("grpc-status").is_none());
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn an_empty_key_signs_nothing() {
        assert!(CallKey::new("").sign("/a", None).is_none());
        assert!(!CallKey::new("").is_set());
    }
}
