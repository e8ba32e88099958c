//! The attempt span layer: when a call is part of an exported trace, each attempt gets a
//! client span, a child of the call's, naming the node it went to and ending with how
//! it went; the node receives that span's context, so its own span hangs below the
//! attempt that reached it. Without spans, the call's context is passed on as it is.

use telemetry::trace::{
    Attribute, SdkTracer, SpanKind, SpanOfContext, Status, TraceContext, Tracer,
};

use super::{Around, Below, CallRequest, Step, info_of, picked_of};
use crate::node::Node;

/// Where a call's attempts belong in its trace ([`CallInfo::trace`](super::CallInfo)).
#[derive(Clone, Debug)]
pub struct AttemptTrace {
    call: TraceContext,
    tracer: Option<SdkTracer>,
    /// The request's own headers carry the call's context already (the gateway's rpc
    /// port passes its caller's on): without a span of its own, nothing is written.
    carried: bool,
}

impl AttemptTrace {
    /// Attempts of the call whose span (or, when none is exported, whose caller's
    /// context) is `call`; spans are made with `tracer` when it is set.
    pub fn new(call: TraceContext, tracer: Option<SdkTracer>) -> Self {
        Self {
            call,
            tracer,
            carried: false,
        }
    }

    /// The request's headers already carry the call's trace context.
    pub fn carried_by_the_request(mut self) -> Self {
        self.carried = true;
        self
    }

    /// Writes the attempt's trace context into `headers`; the attempt's span, when one
    /// is recorded.
    fn start(&self, node: &Node, headers: &mut http::HeaderMap) -> Option<TraceContext> {
        let Some(tracer) = &self.tracer else {
            if !self.carried {
                telemetry::trace::inject(&self.call, headers);
            }
            return None;
        };
        // A trace not sampled records nothing: its context goes on without the cost of
        // a span that would be dropped.
        if !self.call.span().span_context().is_sampled() {
            telemetry::trace::inject(&self.call, headers);
            return None;
        }
        let span = tracer
            .span_builder("attempt")
            .with_kind(SpanKind::Client)
            .with_attributes([Attribute::new(
                "server.address",
                node.instance.address.clone(),
            )])
            .start_with_context(tracer, &self.call);
        let attempt = self.call.with_span(span);
        telemetry::trace::inject(&attempt, headers);
        Some(attempt)
    }
}

#[derive(Clone, Copy, Default)]
pub struct AttemptSpansLayer;

crate::around_layer!(AttemptSpansLayer);

impl Around for AttemptSpansLayer {
    type Future<S: Below> = Step<S::Future>;

    fn around<S: Below>(&self, mut request: CallRequest, below: &mut S) -> Step<S::Future> {
        let trace = info_of(&request).ok().and_then(|info| info.trace.clone());
        let span = match (trace, picked_of(&request)) {
            (Some(trace), Ok(node)) => trace.start(&node, request.headers_mut()),
            _ => None,
        };
        let called = below.call(request);
        // Most attempts are not sampled: they pass straight through.
        let Some(attempt) = span else {
            return Step::below(called);
        };
        Step::around(Box::pin(async move {
            let outcome = called.await;
            let span = attempt.span();
            if let Err(error) = &outcome {
                span.set_status(Status::error(error.to_string()));
            }
            span.end();
            outcome
        }))
    }
}
