//! The breaker layer: a service whose calls keep failing is not called for a while, then
//! probed with single calls (the route's `circuit_breaker`). It judges each call once, by
//! its final gRPC code: a failure of the stack below, or the status that ends the reply
//! (a stream's, when its last frame has gone by). Failures that say the service is in
//! trouble count; a caller's mistakes do not.

use std::sync::{Arc, Mutex};

use cluster::stack::{Around, Below, CallError, CallRequest, Step, info_of};
use telemetry::grpc::OnEnd;
use telemetry::prometheus::names;
use tonic::Code;

use super::GatewayCall;
use crate::resilience::{Admission, BreakerState, CircuitBreaker, Guards, lock};

/// Reads the breaker from the service's guards, which the admit layer puts in the
/// request's extensions; a call without them, or whose route has no breaker, passes.
#[derive(Clone, Copy, Default)]
pub struct BreakerLayer;

cluster::around_layer!(BreakerLayer);

impl Around for BreakerLayer {
    type Future<S: Below> = Step<S::Future>;

    fn around<S: Below>(&self, request: CallRequest, below: &mut S) -> Step<S::Future> {
        let ticket = match Ticket::issue(&request) {
            Ok(Some(ticket)) => ticket,
            Ok(None) => return Step::below(below.call(request)),
            Err(refused) => return Step::decided(Err(refused)),
        };
        let called = below.call(request);
        Step::around(Box::pin(async move {
            match called.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = OnEnd::new(body, &parts.headers, move |code| ticket.settle(code));
                    Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(body),
                    ))
                }
                Err(error) => {
                    ticket.settle(error.code());
                    Err(error)
                }
            }
        }))
    }
}

/// A call let through the breaker, to be settled with its code.
struct Ticket {
    guards: Arc<Guards>,
    admission: Admission,
    service: Arc<str>,
}

impl Ticket {
    /// Lets the call through, or refuses it while the circuit is open; `None` when the
    /// service has no breaker.
    fn issue(request: &CallRequest) -> Result<Option<Ticket>, CallError> {
        let Some(guards) = request
            .extensions()
            .get::<GatewayCall>()
            .and_then(|call| call.guards.as_ref())
        else {
            return Ok(None);
        };
        let Some(breaker) = breaker_of(guards) else {
            return Ok(None);
        };
        let service = info_of(request)?.service.clone();
        let admission = lock(breaker).admit().map_err(|wait| {
            metrics::counter!(names::GATEWAY_CIRCUIT_REFUSED, "service" => service.to_string())
                .increment(1);
            CallError::Denied {
                code: Code::Unavailable,
                reason: format!("circuit open for {service:?}: its calls keep failing"),
                retry_after: Some(wait),
            }
        })?;
        Ok(Some(Ticket {
            guards: guards.clone(),
            admission,
            service,
        }))
    }

    fn settle(self, code: Code) {
        // A call its caller gave up on says nothing of the service (and a probe whose
        // caller left is replaced once `open_for` has passed).
        let Some(breaker) = breaker_of(&self.guards).filter(|_| code != Code::Cancelled) else {
            return;
        };
        let mut breaker = lock(breaker);
        let was_open = breaker.state() != BreakerState::Closed;
        breaker.record(self.admission, is_server_failure(code));
        let open = breaker.state() != BreakerState::Closed;
        // Only a change is worth a labelled key: most calls leave the circuit as it was.
        if open != was_open {
            metrics::gauge!(names::GATEWAY_CIRCUIT_OPEN, "service" => self.service.to_string())
                .set(if open { 1.0 } else { 0.0 });
        }
    }
}

fn breaker_of(guards: &Guards) -> Option<&Mutex<CircuitBreaker>> {
    guards.breaker.as_ref().map(|(_, breaker)| breaker)
}

/// Failures that say the service is in trouble, as opposed to a caller's mistake.
fn is_server_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}
