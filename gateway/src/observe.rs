//! What the gateway records of each call, on `/api` and the rpc port alike: its count by
//! service, method, HTTP status and gRPC code, its latency and the calls in flight (when
//! metrics are on); a span continuing the caller's trace, with a child span per attempt
//! whose context the node receives (when traces are exported); and one access log line.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use telemetry::grpc::{CallEnd, code_name};
use telemetry::prometheus::names;
use telemetry::trace::{
    Attribute, SdkTracer, SpanKind, SpanOfContext, Status, TraceContext, Tracer,
};
use tonic::Code;

use crate::cluster::NodeHandle;

/// The two front doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `/api/{service}/{method}`: JSON transcoded to gRPC.
    Api,
    /// The rpc port: native gRPC passed through.
    Rpc,
}

impl Door {
    fn as_str(self) -> &'static str {
        match self {
            Door::Api => "api",
            Door::Rpc => "rpc",
        }
    }
}

/// A call's place in its trace: the caller's context, and the gateway's span for the
/// call when spans are exported.
pub struct CallTrace {
    incoming: TraceContext,
    call: Option<(SdkTracer, TraceContext)>,
}

impl CallTrace {
    fn start(tracer: Option<&SdkTracer>, headers: &HeaderMap, name: &str) -> Self {
        let incoming = telemetry::trace::extract(headers);
        let call = tracer.map(|tracer| {
            let span = tracer
                .span_builder(name.to_owned())
                .with_kind(SpanKind::Server)
                .start_with_context(tracer, &incoming);
            (tracer.clone(), incoming.with_span(span))
        });
        Self { incoming, call }
    }

    /// The trace headers an attempt on `node` carries: a child span of the call's (to be
    /// ended with [`AttemptSpan::end`]), or, when spans are not exported, the caller's own
    /// context passed on as it came.
    pub fn attempt(&self, node: &NodeHandle) -> (HeaderMap, AttemptSpan) {
        let mut headers = HeaderMap::new();
        let Some((tracer, call)) = &self.call else {
            telemetry::trace::inject(&self.incoming, &mut headers);
            return (headers, AttemptSpan(None));
        };
        let span = tracer
            .span_builder("attempt")
            .with_kind(SpanKind::Client)
            .with_attributes([Attribute::new(
                "server.address",
                node.instance.address.clone(),
            )])
            .start_with_context(tracer, call);
        let cx = call.with_span(span);
        telemetry::trace::inject(&cx, &mut headers);
        (headers, AttemptSpan(Some(cx)))
    }

    fn trace_id(&self) -> Option<String> {
        match &self.call {
            Some((_, cx)) => telemetry::trace::trace_id(cx),
            None => telemetry::trace::trace_id(&self.incoming),
        }
    }

    fn end(&self, code: Code, http_status: u16) {
        if let Some((_, cx)) = &self.call {
            let span = cx.span();
            span.set_attribute(Attribute::new("rpc.grpc.status_code", code as i64));
            span.set_attribute(Attribute::new(
                "http.response.status_code",
                i64::from(http_status),
            ));
            if code != Code::Ok {
                span.set_status(Status::error(code_name(code)));
            }
            span.end();
        }
    }
}

/// One attempt's span; ends with how the attempt went.
pub struct AttemptSpan(Option<TraceContext>);

impl AttemptSpan {
    pub fn end(self, failed: Option<&str>) {
        if let Some(cx) = self.0 {
            let span = cx.span();
            if let Some(message) = failed {
                span.set_status(Status::error(message.to_owned()));
            }
            span.end();
        }
    }
}

/// One call through the gateway, recorded once when it ends: by [`Observed::finish`], at
/// the end of a streamed reply ([`CallEnd`]), or, when the caller went away first, on
/// drop as `CANCELLED` with HTTP 499.
pub struct Observed {
    door: Door,
    started: Instant,
    request_id: String,
    http_method: http::Method,
    path: String,
    pub trace: CallTrace,
    /// Labels only for what exists: a service with nodes, a method it has. Anything a
    /// caller invents is `unknown`, so that made-up paths cannot grow the metrics.
    service: Option<String>,
    method: Option<String>,
    node: Option<String>,
    http_status: u16,
    access_log: bool,
    done: bool,
}

impl Observed {
    pub fn start(
        door: Door,
        request: &http::request::Parts,
        request_id: &str,
        tracer: Option<&SdkTracer>,
        access_log: bool,
    ) -> Self {
        let path = request.uri.path();
        if telemetry::prometheus::installed() {
            metrics::gauge!(names::GATEWAY_IN_FLIGHT, "door" => door.as_str()).increment(1.0);
        }
        Self {
            door,
            started: Instant::now(),
            request_id: request_id.to_owned(),
            http_method: request.method.clone(),
            trace: CallTrace::start(tracer, &request.headers, path),
            path: path.to_owned(),
            service: None,
            method: None,
            node: None,
            http_status: 200,
            access_log,
            done: false,
        }
    }

    /// The registry service the call goes to, once it is known to exist.
    pub fn service(&mut self, service: &str) {
        self.service = Some(service.to_owned());
    }

    /// The method called, once the service is known to have it.
    pub fn method(&mut self, method: &str) {
        self.method = Some(method.to_owned());
    }

    /// The node that answered.
    pub fn answered_by(&mut self, node: &Arc<NodeHandle>) {
        self.node = Some(node.instance.address.clone());
    }

    /// Records the call: its HTTP status and gRPC code, and the node that gave the
    /// answer, if one did.
    pub fn finish(mut self, http_status: u16, code: Code, node: Option<&str>) {
        if let Some(node) = node {
            self.node = Some(node.to_owned());
        }
        self.http_status = http_status;
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        self.trace.end(code, self.http_status);
        if telemetry::prometheus::installed() {
            let door = self.door.as_str();
            let service = self.service.take().unwrap_or_else(|| "unknown".to_owned());
            let method = match self.method.take() {
                Some(method) if code != Code::Unimplemented => method,
                _ => "unknown".to_owned(),
            };
            metrics::counter!(names::GATEWAY_REQUESTS,
                "door" => door,
                "service" => service.clone(),
                "method" => method.clone(),
                "http_status" => self.http_status.to_string(),
                "grpc_code" => code_name(code))
            .increment(1);
            metrics::histogram!(names::GATEWAY_DURATION,
                "door" => door, "service" => service, "method" => method)
            .record(elapsed.as_secs_f64());
            metrics::gauge!(names::GATEWAY_IN_FLIGHT, "door" => door).decrement(1.0);
        }
        if self.access_log {
            let trace_id = self.trace.trace_id();
            tracing::info!(
                target: "rust_ms::access",
                door = self.door.as_str(),
                method = %self.http_method,
                path = %self.path,
                status = self.http_status,
                grpc_code = code_name(code),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                node = self.node.as_deref().unwrap_or("-"),
                request_id = %self.request_id,
                trace_id = trace_id.as_deref().unwrap_or("-"),
                "access"
            );
        }
    }
}

impl CallEnd for Observed {
    fn end(mut self, code: Code) {
        self.record(code);
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if !self.done {
            // The caller went away before the answer: nginx's "client closed request".
            self.http_status = 499;
            self.record(Code::Cancelled);
        }
    }
}
