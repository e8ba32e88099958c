//! rust-ms: services that register themselves in a registry (etcd in production, memory
//! in tests and the dev stack), find each other by name, and sit behind the rust-ms API
//! gateway, which turns `POST /api/{service}/{method}` into their gRPC calls by reflection.
//!
//! A service is a [`Service`]: its name, its version, its tonic services, and `run()`.
//! The builder does the rest: flags (`--config`, `--rpc-port`, `--etcd-addr`, GO-MS's
//! spellings too), configuration layered from defaults, a TOML file, `MS_` variables and
//! flags, logging, the registry backend, gRPC with health and reflection (v1 and v1alpha),
//! registration with a lease kept alive, membership logs, and on SIGTERM: deregister,
//! drain, exit.
//!
//! ```no_run
//! # mod pb { pub const DESCRIPTORS: &[u8] = &[]; }
//! use rust_ms::Service;
//!
//! fn main() -> std::process::ExitCode {
//!     Service::new("greeter", env!("CARGO_PKG_VERSION"))
//!         .descriptors(pb::DESCRIPTORS) // rust_ms::include_descriptors!() in a real crate
//!         // .add_service(GreeterServer::new(Greeter)) for each generated tonic server
//!         .run()
//! }
//! ```
//!
//! A service that calls another one, or has settings of its own, does it in
//! [`Service::setup`], which sees a [`Context`]: `context.client("user")` is a channel
//! balanced over every node of `user`, following joins and leaves.
//!
//! The same builder runs inside another program (the dev stack, tests) with
//! [`Service::serve`]:
//!
//! ```
//! use rust_ms::registry::{Registry, Scope};
//! use rust_ms::{Connected, Launch, NodeConfig, Service};
//! // `rust_ms::memory::MemoryRegistry` with the `memory` feature.
//! use registry_memory::MemoryRegistry;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = MemoryRegistry::new();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let config = NodeConfig {
//!     rpc_port: 0,
//!     advertise_host: "127.0.0.1".into(),
//!     ..NodeConfig::default()
//! };
//! let node = tokio::spawn(Service::new("greeter", "1.0.0").serve(Launch {
//!     config,
//!     settings: Default::default(),
//!     backend: Connected::Memory(registry.clone()),
//!     shutdown: shutdown.clone(),
//! }));
//!
//! // The node registers itself; every other node can now find it.
//! let greeters = loop {
//!     let found = registry.snapshot(&Scope::service("greeter")).await?;
//!     if !found.instances.is_empty() {
//!         break found.instances;
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! };
//! assert!(greeters[0].address.starts_with("127.0.0.1:"));
//!
//! // Stopping it deregisters it first.
//! shutdown.cancel();
//! node.await??;
//! assert!(registry.snapshot(&Scope::service("greeter")).await?.instances.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! A handler that fails says why in a way callers can act on with [`errors`]: a reason
//! and its facts (`ErrorInfo`), the fields at fault (`BadRequest`), when to retry, which
//! the gateway shows in its `/api` error body.
//!
//! Features: `etcd` (default) builds the etcd backend; `memory` exports the in-memory
//! registry's type for tests. A node can always run on `registry.backend = "memory"`.

pub mod errors;

pub use config::{ConfigError, NoSections, NodeConfig, Validate};
pub use node::Connected;
pub use node::credentials::ClusterCredentials;
pub use node::{
    BoxError, CLAIM_HEADER_PREFIX, Context, Launch, NodeError as Error, REQUEST_ID_HEADER, Serve,
    Service,
};
pub use node::{ClientOptions, ServiceChannel};
/// The registry contract: instances, snapshots, watches.
pub use registry;
pub use tonic;

/// The etcd backend, for the parts that need more than the [`registry::Registry`] trait.
#[cfg(feature = "etcd")]
pub use registry_etcd as etcd;

/// The in-memory backend, for tests.
#[cfg(feature = "memory")]
pub use registry_memory as memory;

/// For a service's tests: its nodes, those of the services it calls and a gateway, in
/// the test's process on one in-memory registry.
///
/// ```
/// use rust_ms::Service;
/// use rust_ms::testing::LocalCluster;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), rust_ms::Error> {
/// let mut cluster = LocalCluster::new();
/// cluster.start(Service::new("greeter", "1.0.0")).await?;
/// // A channel to it, as another node's `context.client("greeter")` would get.
/// let greeters = cluster.client("greeter").await?;
/// assert_eq!(greeters.nodes().len(), 1);
/// cluster.stop().await
/// # }
/// ```
///
/// With a gateway among them (`cluster.start(gateway::service())`),
/// [`LocalCluster::post`](testing::LocalCluster::post) calls its `/api` as a front end
/// would. A dependency is faked with a [`Mock`](testing::Mock): its methods answered by
/// closures, registered under its name, counting its calls (or by starting a [`Service`]
/// of its name that serves a test implementation of its tonic trait).
#[cfg(feature = "testing")]
pub mod testing {
    pub use node::{HttpReply, LocalCluster, Mock};
}

/// The encoded `FileDescriptorSet` of what this crate serves, written by
/// `rust_ms_build::Protos` (or `compile_protos`) in its build script, for
/// [`Service::descriptors`].
#[macro_export]
macro_rules! include_descriptors {
    () => {
        include_bytes!(concat!(env!("OUT_DIR"), "/rust_ms_descriptors.bin"))
    };
}

/// The encoded `FileDescriptorSet` of what this crate calls (`Protos::calls` in its build
/// script), for [`Service::calls`].
#[macro_export]
macro_rules! include_called_descriptors {
    () => {
        include_bytes!(concat!(env!("OUT_DIR"), "/rust_ms_called_descriptors.bin"))
    };
}
