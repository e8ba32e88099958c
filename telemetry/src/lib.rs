//! What a rust-ms node tells its operator.
//!
//! - [`prometheus`]: the process's metrics recorder (the `metrics` facade, rendered in
//!   Prometheus text format on the admin port), the names every node and the gateway
//!   report under, and their help texts.
//! - [`trace`]: OpenTelemetry spans exported over OTLP/gRPC when a collector is
//!   configured, and the W3C `traceparent`/`tracestate` carried from node to node.
//! - [`grpc`]: how a gRPC call ended, read off its response as it streams by.

#[cfg(feature = "collector")]
pub mod collector;
pub mod grpc;
pub mod prometheus;
pub mod trace;

pub use prometheus::MetricsError;
pub use trace::{TraceError, Tracing};
