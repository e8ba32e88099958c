//! The life of a rust-ms node, shared by the gateway, every service and the dev stack:
//! flags and configuration, the registry backend chosen from configuration, gRPC serving
//! with health and reflection, registration, membership logs, and a graceful exit.

mod admin;
mod advertise;
mod backend;
mod cli;
mod error;
mod http_server;
mod http_tls;
mod local;
mod logging;
mod membership;
#[cfg(feature = "testing")]
mod mock;
mod observe;
mod serve;
mod service;
mod shutdown;
mod traffic;

pub use admin::{Listen as AdminListen, cluster_json, start as start_admin};
pub use backend::Connected;
pub use cli::{CommonArgs, load_config_with, parse as parse_args, run as run_main};
pub use cluster::credentials;
pub use cluster::{ClientOptions, ServiceChannel};
pub use error::NodeError;
#[cfg(feature = "testing")]
pub use local::HttpReply;
pub use local::LocalCluster;
#[cfg(feature = "testing")]
pub use mock::Mock;
pub use serve::{HttpServer, NodeSpec, run_node};
pub use service::{BoxError, Context, Launch, Serve, Service};
pub use shutdown::cancel_on_signal;

/// The header that carries one request's id from the gateway through every node it reaches.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Where `gateway routes push` stores the route table in etcd, under `namespace`: every
/// gateway applies it, and every node's service clients follow its traffic rules.
pub fn route_table_key(namespace: &str) -> String {
    format!("{}/config/gateway/routes", namespace.trim_end_matches('/'))
}

/// JWT claims the gateway verified travel to services as metadata under this prefix
/// (`sub` → `x-jwt-sub`); the gateway never passes a caller's own such headers on.
pub const CLAIM_HEADER_PREFIX: &str = "x-jwt-";

/// `rust-ms 0.1.0, commit abc123def456`: the framework a service's `--version` names
/// after the service's own version.
pub const FRAMEWORK: &str = concat!(
    "rust-ms ",
    env!("CARGO_PKG_VERSION"),
    ", commit ",
    env!("MS_GIT_COMMIT")
);

/// `0.1.0 (commit abc123def456)`: what `--version` prints after the binary's name.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MS_GIT_COMMIT"),
    ")"
);
