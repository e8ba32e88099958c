//! The benchmark harness of rust-ms, as a library for its binaries: `bench-echo`, the
//! upstream node every proxy is measured over, `bench-busy`, a node of fixed capacity for
//! the overload runs, and `bench`, which runs everything.

pub mod busy;
pub mod chart;
pub mod echo;
pub mod load;
pub mod paced;
pub mod procs;
pub mod results;
