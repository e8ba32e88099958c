//! Traces across nodes: W3C `traceparent`/`tracestate` read from a call's headers and
//! written into the calls it makes, and spans exported over OTLP/gRPC when a collector
//! is configured (`[telemetry] otlp_endpoint`). Each node has its own exporter, named
//! after its service, so that a process running several nodes (the dev stack) still
//! tells them apart.

use std::time::Duration;

use config::TelemetryConfig;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

pub use opentelemetry::context::FutureExt;
pub use opentelemetry::trace::TraceContextExt as SpanOfContext;
pub use opentelemetry::trace::{Span, SpanKind, Status, Tracer};
pub use opentelemetry::{Context as TraceContext, KeyValue as Attribute};
pub use opentelemetry_sdk::trace::SdkTracer;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot export traces to {endpoint} (telemetry.otlp_endpoint): {cause}")]
    Exporter { endpoint: String, cause: String },
}

/// One node's span exporter: its tracer, and the pipeline to flush when it stops.
#[derive(Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Spans of `service` sent to `config.otlp_endpoint` in batches; `None` when no
    /// endpoint is configured. New traces are sampled at `config.sample_ratio`; a trace
    /// a caller started keeps the caller's decision. Call inside a Tokio runtime.
    pub fn start(
        service: &str,
        version: &str,
        config: &TelemetryConfig,
    ) -> Result<Option<Self>, TraceError> {
        if config.otlp_endpoint.is_empty() {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TraceError::Exporter {
                endpoint: config.otlp_endpoint.clone(),
                cause: e.to_string(),
            })?;
        let resource = Resource::builder()
            .with_service_name(service.to_owned())
            .with_attribute(KeyValue::new("service.version", version.to_owned()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("rust-ms");
        Ok(Some(Self { provider, tracer }))
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Sends what is still batched and stops the exporter. Blocks: call it where a
    /// thread may wait (`spawn_blocking`).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(%error, "some spans could not be exported before shutdown");
        }
    }
}

/// The trace context a call's headers carry (`traceparent`, `tracestate`); an empty
/// context when they carry none or a malformed one.
pub fn extract(headers: &http::HeaderMap) -> Context {
    if !headers.contains_key(TRACEPARENT) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeadersOut(headers))
}

/// Writes `cx`'s span into `headers` as `traceparent` (and `tracestate`), so that the
/// node called continues the trace. Nothing is written for a context without a span.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(cx, &mut HeadersIn(headers));
}

/// The trace id of `cx`'s span in hex, for log lines; `None` without a trace.
pub fn trace_id(cx: &Context) -> Option<String> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// The header that carries a W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

struct HeadersOut<'a>(&'a http::HeaderMap);

impl Extractor for HeadersOut<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersIn<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersIn<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(mut value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            // A value new on every call: HTTP/2 sends it as a literal rather than index
            // it, which would push the headers that repeat out of its table.
            value.set_sensitive(true);
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_traceparent_is_passed_on_with_the_same_trace_id() {
        let mut incoming = http::HeaderMap::new();
        incoming.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract(&incoming);
        assert_eq!(
            trace_id(&cx).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut outgoing = http::HeaderMap::new();
        inject(&cx, &mut outgoing);
        assert_eq!(outgoing.get(TRACEPARENT), incoming.get(TRACEPARENT));
    }

    #[test]
    fn a_malformed_traceparent_starts_no_trace() {
        let mut incoming = http::HeaderMap::new();
        incoming.insert(TRACEPARENT, "00-nonsense".parse().unwrap());
        let cx = extract(&incoming);
        assert_eq!(trace_id(&cx), None);
        let mut outgoing = http::HeaderMap::new();
        inject(&cx, &mut outgoing);
        assert!(outgoing.is_empty());
    }
}
