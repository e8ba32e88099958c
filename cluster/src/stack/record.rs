//! The record layer: counts the attempt in its node's in-flight calls until the reply's
//! head arrives (so that a long stream does not count as load forever), then records its
//! latency, or a failure that is the node's fault toward setting it aside.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::{Around, Below, CallError, CallRequest, CallResponse, info_of, picked_of};
use crate::node::Node;
use crate::stats::InFlight;
use crate::view::ClusterView;

#[derive(Clone)]
pub struct RecordLayer {
    view: ClusterView,
}

impl RecordLayer {
    pub fn new(view: ClusterView) -> Self {
        Self { view }
    }
}

crate::around_layer!(RecordLayer);

impl Around for RecordLayer {
    type Future<S: Below> = Recorded<S::Future>;

    fn around<S: Below>(&self, request: CallRequest, below: &mut S) -> Recorded<S::Future> {
        let facts =
            info_of(&request).and_then(|info| Ok((picked_of(&request)?, info.method.clone())));
        match facts {
            Ok((node, method)) => Recorded::Running {
                in_flight: Some(InFlight::start(&node)),
                view: self.view.clone(),
                node,
                method,
                started: Instant::now(),
                call: below.call(request),
            },
            Err(error) => Recorded::Refused { error: Some(error) },
        }
    }
}

pin_project_lite::pin_project! {
    /// An attempt being recorded: in flight until its reply's head, then its latency or
    /// its failure.
    #[project = RecordedProjection]
    pub enum Recorded<F> {
        Running {
            in_flight: Option<InFlight>,
            view: ClusterView,
            node: Arc<Node>,
            method: Arc<str>,
            started: Instant,
            #[pin]
            call: F,
        },
        Refused { error: Option<CallError> },
    }
}

impl<F> Future for Recorded<F>
where
    F: Future<Output = Result<CallResponse, CallError>>,
{
    type Output = Result<CallResponse, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RecordedProjection::Running {
                in_flight,
                view,
                node,
                method,
                started,
                call,
            } => {
                let mut outcome = std::task::ready!(call.poll(cx));
                in_flight.take();
                let took = started.elapsed();
                if let Ok(response) = &mut outcome {
                    response.extensions_mut().insert(super::AnsweredIn(took));
                }
                let node_fault = outcome
                    .as_ref()
                    .err()
                    .and_then(CallError::attempt)
                    .is_some_and(|attempt| attempt.is_node_fault());
                view.record(node, method, took, node_fault);
                Poll::Ready(outcome)
            }
            RecordedProjection::Refused { error } => Poll::Ready(Err(error.take().unwrap_or(
                CallError::Misassembled("a refused attempt was polled after it ended"),
            ))),
        }
    }
}
