//! What the gateway records of each call, on `/api` and the rpc port alike: its count by
//! service, method, HTTP status and gRPC code, its latency and the calls in flight (when
//! metrics are on); a span continuing the caller's trace, with a child span per attempt
//! whose context the node receives (when traces are exported); and one access log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use cluster::stack::AttemptTrace;
use http::HeaderMap;
use metrics::{Counter, Gauge, Histogram};
use telemetry::grpc::{CallEnd, code_name};
use telemetry::prometheus::names;
use telemetry::trace::{
    Attribute, SdkTracer, Span as _, SpanKind, SpanOfContext, Status, TraceContext, Tracer,
};
use tonic::Code;

use cluster::Node;

/// The request id: the caller's `x-request-id` when it gave a usable one, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(node::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        // The thread's own generator: no system call per request, unlike a v4 UUID's.
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

/// The front doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    /// `/api/{service}/{method}`: JSON transcoded to gRPC.
    Api,
    /// The rpc port: native gRPC passed through.
    Rpc,
    /// The REST routes services declare with `google.api.http`.
    Rest,
    /// A WebSocket on an `/api` path: streams of requests as JSON text frames.
    WebSocket,
}

impl Door {
    fn as_str(self) -> &'static str {
        match self {
            Door::Api => "api",
            Door::Rpc => "rpc",
            Door::Rest => "rest",
            Door::WebSocket => "websocket",
        }
    }
}

/// How many doors there are: `Door as usize` indexes `Meters`' arrays.
const DOORS: usize = 4;
const _: () = assert!(
    Door::Api as usize == 0
        && Door::Rpc as usize == 1
        && Door::Rest as usize == 2
        && Door::WebSocket as usize == 3
);

/// The metric handles of the calls the gateway has seen, kept so that recording a call
/// costs a lookup by name, not building and hashing a labelled key per metric.
#[derive(Default)]
pub struct Meters {
    /// By door, then service.
    methods: [RwLock<HashMap<String, MethodsOf>>; DOORS],
    in_flight: [OnceLock<Gauge>; DOORS],
    /// The dashboard's 15 minutes of samples, kept whether Prometheus metrics are on or not.
    pub history: Arc<crate::history::History>,
}

/// A service's methods, by name.
type MethodsOf = HashMap<String, Arc<MethodMeters>>;

struct MethodMeters {
    duration: Histogram,
    /// By HTTP status and gRPC code: a handful per method.
    requests: Mutex<Vec<(u16, Code, Counter)>>,
}

impl Meters {
    fn in_flight(&self, door: Door) -> &Gauge {
        self.in_flight[door as usize]
            .get_or_init(|| metrics::gauge!(names::GATEWAY_IN_FLIGHT, "door" => door.as_str()))
    }

    fn method(&self, door: Door, service: &str, method: &str) -> Arc<MethodMeters> {
        let by_service = &self.methods[door as usize];
        let found = by_service
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .and_then(|methods| methods.get(method).cloned());
        if let Some(found) = found {
            return found;
        }
        let mut all = by_service.write().unwrap_or_else(|p| p.into_inner());
        all.entry(service.to_owned())
            .or_default()
            .entry(method.to_owned())
            .or_insert_with(|| {
                Arc::new(MethodMeters {
                    duration: metrics::histogram!(names::GATEWAY_DURATION,
                        "door" => door.as_str(),
                        "service" => service.to_owned(),
                        "method" => method.to_owned()),
                    requests: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    fn record(
        &self,
        door: Door,
        service: &str,
        method: &str,
        status: u16,
        code: Code,
        seconds: f64,
    ) {
        let meters = self.method(door, service, method);
        meters.duration.record(seconds);
        let mut requests = meters.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, counter)) = requests.iter().find(|(s, c, _)| *s == status && *c == code)
        {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(names::GATEWAY_REQUESTS,
            "door" => door.as_str(),
            "service" => service.to_owned(),
            "method" => method.to_owned(),
            "http_status" => status.to_string(),
            "grpc_code" => code_name(code));
        counter.increment(1);
        requests.push((status, code, counter));
    }
}

/// A call's place in its trace: the caller's context, and the gateway's span for the
/// call when spans are exported.
pub struct CallTrace {
    incoming: TraceContext,
    call: Option<(SdkTracer, TraceContext)>,
    /// The caller's headers go on with each attempt (the rpc port): its trace context
    /// needs no writing again.
    forwarded: bool,
}

impl CallTrace {
    fn start(tracer: Option<&SdkTracer>, headers: &HeaderMap, name: &str, door: Door) -> Self {
        let incoming = telemetry::trace::extract(headers);
        let call = tracer.map(|tracer| {
            // Named once it is known to be kept: most calls are not sampled, and their
            // span is never seen.
            let mut span = tracer
                .span_builder("call")
                .with_kind(SpanKind::Server)
                .start_with_context(tracer, &incoming);
            if span.is_recording() {
                span.update_name(name.to_owned());
            }
            (tracer.clone(), incoming.with_span(span))
        });
        Self {
            incoming,
            call,
            forwarded: door == Door::Rpc,
        }
    }

    /// Where the call's attempts go in its trace: child spans of the call's, or, when
    /// spans are not exported, the caller's own context passed on as it came.
    pub fn attempts(&self) -> AttemptTrace {
        let trace = match &self.call {
            Some((tracer, call)) => AttemptTrace::new(call.clone(), Some(tracer.clone())),
            None => AttemptTrace::new(self.incoming.clone(), None),
        };
        if self.forwarded {
            trace.carried_by_the_request()
        } else {
            trace
        }
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
            if !span.is_recording() {
                return;
            }
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

/// One call through the gateway, recorded once when it ends: by [`Observed::finish`], at
/// the end of a streamed reply ([`CallEnd`]), or, when the caller went away first, on
/// drop as `CANCELLED` with HTTP 499.
pub struct Observed {
    door: Door,
    started: Instant,
    meters: Option<Arc<Meters>>,
    /// Where the call is also counted for the dashboard's charts.
    history: Arc<Meters>,
    /// Request id, HTTP method and path, kept only for the access log.
    logged: Option<(String, http::Method, String)>,
    pub trace: CallTrace,
    /// Labels only for what exists: a service with nodes, a method it has. Anything a
    /// caller invents is `unknown`, so that made-up paths cannot grow the metrics.
    service: Option<String>,
    method: Option<Method>,
    node: Option<String>,
    http_status: u16,
    done: bool,
    /// What the route's rate limit left the caller, told in `RateLimit-*` headers.
    pub allowance: Option<crate::rate_limit::Allowance>,
}

/// What is known of the method a call names.
enum Method {
    /// The service has it: a refusal (405, 501) is still a call of it.
    Known(String),
    /// Only the caller says so.
    Named(String),
}

impl Observed {
    pub fn start(
        door: Door,
        request: &http::request::Parts,
        request_id: &str,
        tracer: Option<&SdkTracer>,
        meters: &Arc<Meters>,
        access_log: bool,
    ) -> Self {
        let path = request.uri.path();
        let history = meters.clone();
        let meters = telemetry::prometheus::installed().then(|| meters.clone());
        if let Some(meters) = &meters {
            meters.in_flight(door).increment(1.0);
        }
        Self {
            door,
            started: Instant::now(),
            meters,
            history,
            logged: access_log.then(|| {
                (
                    request_id.to_owned(),
                    request.method.clone(),
                    path.to_owned(),
                )
            }),
            trace: CallTrace::start(tracer, &request.headers, path, door),
            service: None,
            method: None,
            node: None,
            http_status: 200,
            done: false,
            allowance: None,
        }
    }

    /// The registry service the call goes to, once it is known to exist.
    pub fn service(&mut self, service: &str) {
        self.service = Some(service.to_owned());
    }

    /// The method called, once the service is known to have it (`/api` looked it up).
    pub fn method(&mut self, method: &str) {
        self.method = Some(Method::Known(method.to_owned()));
    }

    /// The method a caller's path names, not checked (the rpc port passes it on): counted
    /// as `unknown` when the node answers it does not have it.
    pub fn method_named_by_caller(&mut self, method: &str) {
        self.method = Some(Method::Named(method.to_owned()));
    }

    /// The node that answered.
    pub fn answered_by(&mut self, node: &Arc<Node>) {
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
        // Only services that exist: a caller's made-up names are no chart.
        if let Some(service) = &self.service {
            self.history.history.record_call(service, code, elapsed);
        }
        if let Some(meters) = &self.meters {
            let service = self.service.as_deref().unwrap_or("unknown");
            let method = match &self.method {
                Some(Method::Known(method)) => method.as_str(),
                Some(Method::Named(method)) if code != Code::Unimplemented => method.as_str(),
                _ => "unknown",
            };
            meters.record(
                self.door,
                service,
                method,
                self.http_status,
                code,
                elapsed.as_secs_f64(),
            );
            meters.in_flight(self.door).decrement(1.0);
        }
        if let Some((request_id, http_method, path)) = &self.logged {
            let trace_id = self.trace.trace_id();
            tracing::info!(
                target: "rust_ms::access",
                door = self.door.as_str(),
                method = %http_method,
                path = %path,
                status = self.http_status,
                grpc_code = code_name(code),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                node = self.node.as_deref().unwrap_or("-"),
                request_id = %request_id,
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
