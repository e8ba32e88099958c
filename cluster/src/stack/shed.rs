//! The shed layer: a call past its method's adaptive concurrency limit (see
//! [`crate::shed`]) is refused at once with `UNAVAILABLE` and when to come back; a call let
//! through counts in flight until its reply's head, and its latency teaches the limit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Code;

use std::time::Duration;

use super::{AnsweredIn, Around, Below, CallError, CallRequest, CallResponse, info_of};
use crate::classify::Attempt;
use crate::shed::{Admitted, Limits, RETRY_AFTER};

/// Each method's limit; `None`: load shedding is off, and calls pass as they come.
#[derive(Clone)]
pub struct ShedLayer {
    limits: Option<Arc<Limits>>,
}

impl ShedLayer {
    pub fn new(limits: Option<Arc<Limits>>) -> Self {
        Self { limits }
    }
}

crate::around_layer!(ShedLayer);

impl Around for ShedLayer {
    type Future<S: Below> = Limited<S::Future>;

    fn around<S: Below>(&self, request: CallRequest, below: &mut S) -> Limited<S::Future> {
        let Some(limits) = &self.limits else {
            return Limited::Unlimited {
                call: below.call(request),
            };
        };
        let limiter = match info_of(&request) {
            Ok(info) => limits.of(&info.service, &info.method),
            Err(error) => return Limited::Refused { error: Some(error) },
        };
        match limiter.admit() {
            Ok(admitted) => Limited::Running {
                admitted: Some(admitted),
                call: below.call(request),
            },
            Err(shed) => {
                // The limiter's own names: past the bound of methods a made-up one is
                // counted, and refused, under the shared limit.
                let (service, method) = limiter.names();
                Limited::Refused {
                    error: Some(CallError::Denied {
                        code: Code::Unavailable,
                        reason: format!(
                            "{service}.{method} is overloaded: {} calls are in flight, its \
                             limit now; try again later",
                            shed.limit
                        ),
                        retry_after: Some(RETRY_AFTER),
                    }),
                }
            }
        }
    }
}

/// What an outcome says of how loaded the nodes are: an answer, how long the attempt that
/// gave it took (a call sent on after a node failed is judged by the node that answered,
/// so a dead node is the balancer's business, not a sign of overload); a call out of time,
/// how long it waited; a call that never had an answer, nothing.
fn latency_of(outcome: &Result<CallResponse, CallError>, admitted: &Admitted) -> Option<Duration> {
    match outcome {
        Ok(response) => Some(
            response
                .extensions()
                .get::<AnsweredIn>()
                .map_or_else(|| admitted.started().elapsed(), |answered| answered.0),
        ),
        Err(error) if error.attempt() == Some(Attempt::TimedOut) => {
            Some(admitted.started().elapsed())
        }
        Err(_) => None,
    }
}

pin_project_lite::pin_project! {
    /// A call under its method's limit: in flight until its reply's head.
    #[project = LimitedProjection]
    pub enum Limited<F> {
        Running {
            admitted: Option<Admitted>,
            #[pin]
            call: F,
        },
        Unlimited {
            #[pin]
            call: F,
        },
        Refused { error: Option<CallError> },
    }
}

impl<F> Future for Limited<F>
where
    F: Future<Output = Result<CallResponse, CallError>>,
{
    type Output = Result<CallResponse, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitedProjection::Running { admitted, call } => {
                let outcome = std::task::ready!(call.poll(cx));
                if let Some(admitted) = admitted.take() {
                    let took = latency_of(&outcome, &admitted);
                    admitted.finish(took);
                }
                Poll::Ready(outcome)
            }
            LimitedProjection::Unlimited { call } => call.poll(cx),
            LimitedProjection::Refused { error } => Poll::Ready(Err(error.take().unwrap_or(
                CallError::Misassembled("a shed call was polled after it ended"),
            ))),
        }
    }
}
