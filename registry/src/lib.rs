//! The contract between rust-ms nodes and the place where they find each other.
//!
//! [`Registry`] is the whole contract: register an instance, take a snapshot of what is
//! registered, and watch what changes after that snapshot. Backends live in their own
//! crates (`registry-etcd`, `registry-memory`) and prove they keep the contract by passing
//! the conformance suite (the `conformance` feature, for backends' tests only).
//!
//! Three audiences read this crate: services and the gateway, at the root, register
//! ([`Registry::register`] → [`Registered`]) and discover ([`Registry::discover`], and
//! [`follow`] for a view kept current); a backend author implements [`Registry`] with what
//! [`backend`] holds; and a backend's tests run `conformance_suite!` (feature
//! `conformance`).

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
pub use keepalive::{Registered, RegistrationState};
pub use registry::{Registry, discover_until_stopped};
pub use validate::{validate_address, validate_name};
pub use watch::{Change, Watch, WatchEvent};

/// What a backend author implements the trait with: the keepalive loop every backend
/// shares ([`Leaser`](backend::Leaser) is the backend's part of it), the producing side
/// of a watch, and the bookkeeping that turns a re-list into the real difference.
pub mod backend {
    pub use crate::keepalive::{Lease, Leaser, Liveness};
    pub use crate::membership::Membership;
    pub use crate::watch::WatchSender;
}
