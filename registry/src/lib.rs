//! The contract between rust-ms nodes and the place where they find each other.
//!
//! [`Registry`] is the whole contract: register an instance, take a snapshot of what is
//! registered, and watch what changes after that snapshot. Backends live in their own
//! crates (`registry-etcd`, `registry-memory`) and prove they keep the contract by passing
//! the conformance suite (the `conformance` feature, for backends' tests only).
//!
//! Three audiences read this crate: services and the gateway use [`Registry`] to register
//! and to discover ([`Registry::discover`], [`Membership`]); a backend author implements
//! [`Registry`] with the plumbing exported here for them ([`Leaser`] and [`Registered`] for
//! keepalive, [`WatchSender`] for watches); and a backend's tests run `conformance_suite!`.

mod backoff;
#[cfg(feature = "conformance")]
pub mod conformance;
mod endpoints;
mod error;
mod follow;
mod instance;
mod keepalive;
mod membership;
mod registry;
mod validate;
mod watch;

pub use backoff::Backoff;
pub use endpoints::{parse_endpoints, strip_scheme};
pub use error::RegistryError;
pub use follow::{Follow, follow};
pub use instance::{Instance, Registration, Scope, Snapshot, unix_millis_now};
pub use keepalive::{Lease, Leaser, Liveness, Registered, RegistrationState};
pub use membership::Membership;
pub use registry::{Registry, discover_until_stopped};
pub use validate::{validate_address, validate_name};
pub use watch::{Change, Watch, WatchEvent, WatchSender};
