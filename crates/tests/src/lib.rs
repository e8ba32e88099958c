//! Fixtures for rust-ms integration tests: etcd in containers (one member or a
//! three-member cluster) and, for the binaries, helpers to start and read real processes.

pub mod etcd;
pub mod http;
pub mod process;
pub mod user_next;
