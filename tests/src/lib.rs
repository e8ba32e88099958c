//! Fixtures for rust-ms integration tests: etcd in containers (one member or a
//! three-member cluster), helpers to start and read the real binaries, and test-only
//! services run as in-process nodes on a real registry.

pub mod browser;
pub mod dropping_node;
pub mod etcd;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod in_process;
pub mod k8s;
pub mod metrics;
pub mod outside;
pub mod probe;
pub mod process;
pub mod python;
pub mod user_next;
