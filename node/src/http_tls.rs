//! TLS on a node's HTTP port (`[http.tls]`): rustls with HTTP/2 and HTTP/1.1 offered by
//! ALPN, and the certificate re-read when its files change, so that a renewed certificate
//! reaches new connections without a restart and without dropping the open ones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the certificate's files are looked at for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Why the HTTP port's certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls: cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("http.tls: {} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("http.tls: {} holds no PEM private key: {reason}", .path.display())]
    NoKey { path: PathBuf, reason: String },
    #[error("http.tls: the certificate and key do not make a TLS server: {0}")]
    Config(#[from] rustls::Error),
}

/// The port's TLS: the server configuration in force, replaced when the files change.
#[derive(Clone)]
pub struct PublicTls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl PublicTls {
    /// Reads `cert` and `key`; an error says which file and why.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// The acceptor for the next connection, with the certificate in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }

    /// Re-reads the files whenever their modification time changes, until `stop`. A
    /// change that cannot be loaded (a half-written file, a key that does not match)
    /// keeps the certificate in force and says why; the next change is tried again.
    pub async fn reload_on_change(self, stop: CancellationToken) {
        let mut seen = modified(&self.cert, &self.key);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_CHECK) => {}
            }
            let now = modified(&self.cert, &self.key);
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&self.cert, &self.key) {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                    tracing::info!(cert = %self.cert.display(), "http.tls: certificate reloaded");
                }
                Err(error) => {
                    tracing::warn!(%error, "http.tls: the changed certificate was not loaded; the previous one stays in force");
                }
            }
        }
    }
}

fn modified(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (at(cert), at(key))
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::NoKey {
        path: key.to_owned(),
        reason: error.to_string(),
    })?;
    // ring, the provider the rest of the tree's rustls uses: no process-wide default needed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
