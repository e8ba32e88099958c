//! The benchmark harness of rust-ms, as a library for its two binaries: `bench-echo`,
//! the upstream node every proxy is measured over, and `bench`, which runs everything.

pub mod chart;
pub mod echo;
pub mod load;
pub mod procs;
pub mod results;
