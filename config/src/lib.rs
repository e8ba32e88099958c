//! Configuration of a rust-ms node.
//!
//! Layers, later ones winning: the defaults, a TOML file, `MS_` environment variables
//! (`__` nests: `MS_REGISTRY__ETCD_ADDR`), then command-line flags. Every key must be known
//! and every value valid, or loading fails with one line that names the key and where its
//! value came from.

mod error;
mod load;
mod node;

pub use error::{AdminListenError, ConfigError};
pub use load::{Flags, Loaded, NoSections, REDACTED, Validate, is_secret, load, redact};
pub use node::{
    AdminConfig, Backend, CalledService, ClientConfig, DEFAULT_ADMIN_LISTEN, HttpLimits, HttpTls,
    LogConfig, LogFormat, NodeConfig, RegistryConfig, SecurityConfig, TelemetryConfig, TlsConfig,
};
