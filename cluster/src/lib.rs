//! The cluster as every rust-ms caller sees it, and the one way a call goes out.
//!
//! [`ClusterView`] is the live, health-checked view of the nodes of the followed services
//! (typed [`Node`]s, one HTTP/2 channel each, set aside after transport failures with a
//! cap), published as a snapshot read without locks. The [`stack`] is the call path as
//! tower layers over it: retry (with a budget) → balance → record → per-attempt timeout →
//! the node. The gateway's doors and the service client ([`ServiceChannel`], what
//! `context.client("user")` returns) run it; they differ in what they put around it.

pub mod affinity;
mod balance;
pub mod canary;
mod classify;
mod client;
#[cfg(test)]
mod client_door_tests;
pub mod credentials;
pub mod deadline;
mod health;
pub mod meta;
mod node;
mod schema;
pub mod shed;
pub mod stack;
mod stats;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod traffic;
mod view;

pub use balance::{Balance, candidates, pick};
pub use classify::Attempt;
pub use client::{ClientOptions, MethodFacts, ServiceChannel, facts_of, idempotency_level};
pub use health::HEALTH_CHECKS_AT_ONCE;
pub use node::Node;
pub use schema::{Schema, SchemaError, Schemas};
pub use stats::{InFlight, NodeStats};
pub use view::{
    ClusterView, Ejection, GrpcTargets, MAX_EJECTED_PERCENT, Snapshot, ViewMetrics, ViewOptions,
};
