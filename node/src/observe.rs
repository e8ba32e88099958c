//! What a node records of every call it serves: a count by method and status and a
//! latency histogram (when metrics are on), and a server span continuing the caller's
//! trace. The caller's trace context stays current while the handler runs, so that the
//! calls the handler makes through [`crate::client`] carry it on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use telemetry::grpc::{CallEnd, OnEnd, code_name};
use telemetry::prometheus::names;
use telemetry::trace::{FutureExt, SpanKind, SpanOfContext, Status, TraceContext, Tracer};
use tonic::Code;

/// Wraps a node's gRPC server in [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    observer: Arc<Observer>,
}

struct Observer {
    service: String,
    tracer: Option<telemetry::trace::SdkTracer>,
    /// What the traffic rules read, carried on to the handler's own calls.
    traffic: Option<cluster::traffic::LiveTraffic>,
}

impl ObserveLayer {
    /// Calls served by a node of `service`; spans go to `tracing` when it is set; the
    /// headers `traffic`'s rules read go on with the handler's calls.
    pub fn new(
        service: &str,
        tracing: Option<&telemetry::Tracing>,
        traffic: Option<cluster::traffic::LiveTraffic>,
    ) -> Self {
        Self {
            observer: Arc::new(Observer {
                service: service.to_owned(),
                tracer: tracing.map(|t| t.tracer().clone()),
                traffic,
            }),
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            observer: self.observer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    observer: Arc<Observer>,
}

/// A served call, recorded when its reply's last frame has gone by.
pub struct Served {
    observer: Arc<Observer>,
    path: String,
    started: Instant,
    /// The server span, when spans are exported.
    span: Option<TraceContext>,
}

impl CallEnd for Served {
    fn end(self, code: Code) {
        if telemetry::prometheus::installed() {
            // A path no service answers is the caller's invention: one label for all of them.
            let method = if code == Code::Unimplemented {
                "unknown".to_owned()
            } else {
                self.path
            };
            let service = self.observer.service.clone();
            metrics::counter!(names::SERVER_REQUESTS,
                "service" => service.clone(), "method" => method.clone(), "grpc_code" => code_name(code))
            .increment(1);
            metrics::histogram!(names::SERVER_DURATION, "service" => service, "method" => method)
                .record(self.started.elapsed().as_secs_f64());
        }
        if let Some(cx) = self.span {
            let span = cx.span();
            span.set_attribute(telemetry::trace::Attribute::new(
                "rpc.grpc.status_code",
                code as i64,
            ));
            if code != Code::Ok {
                span.set_status(Status::error(code_name(code)));
            }
            span.end();
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<OnEnd<RB, Served>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The handler's calls to other services end by the deadline of the call it serves.
        let serving_until = cluster::deadline::timeout_of(request.headers())
            .map(|timeout| tokio::time::Instant::now() + timeout);
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let parent = telemetry::trace::extract(request.headers());
        let span = self.observer.tracer.as_ref().map(|tracer| {
            let span = tracer
                .span_builder(path.clone())
                .with_kind(SpanKind::Server)
                .with_attributes([
                    telemetry::trace::Attribute::new("rpc.system", "grpc"),
                    telemetry::trace::Attribute::new("rpc.method", path.clone()),
                ])
                .start_with_context(tracer, &parent);
            parent.with_span(span)
        });
        // The handler's own calls continue the trace: the server span when there is
        // one, else the caller's context passed through as it came.
        let current = span.clone().unwrap_or(parent);
        let carried = self
            .observer
            .traffic
            .as_ref()
            .and_then(|traffic| traffic.carried_from(request.headers()));
        let handled = self.inner.call(request).with_context(current);
        let called = cluster::deadline::serving_until(serving_until, async move {
            match carried {
                Some(headers) => cluster::traffic::carrying(headers, handled).await,
                None => handled.await,
            }
        });
        let served = Served {
            observer: self.observer.clone(),
            path,
            started,
            span,
        };
        Box::pin(async move {
            let response = called.await?;
            let (parts, body) = response.into_parts();
            let body = OnEnd::new(body, &parts.headers, served);
            Ok(http::Response::from_parts(parts, body))
        })
    }
}
