//! The record layer: counts the attempt in its node's in-flight calls until the reply's
//! head arrives (so that a long stream does not count as load forever), then records its
//! latency, or a failure that is the node's fault toward setting it aside.

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service};

use super::{BoxFuture, CallError, CallRequest, CallResponse, info_of, picked_of};
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

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            view: self.view.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Record<S> {
    view: ClusterView,
    inner: S,
}

impl<S> Service<CallRequest> for Record<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = CallError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = CallResponse;
    type Error = CallError;
    type Future = BoxFuture<Result<CallResponse, CallError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        let facts =
            info_of(&request).and_then(|info| Ok((picked_of(&request)?, info.method.clone())));
        let view = self.view.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (node, method) = facts?;
            let started = Instant::now();
            let in_flight = InFlight::start(&node);
            let outcome = inner.call(request).await;
            drop(in_flight);
            let node_fault = outcome
                .as_ref()
                .err()
                .and_then(CallError::attempt)
                .is_some_and(|attempt| attempt.is_node_fault());
            view.record(&node, &method, started.elapsed(), node_fault);
            outcome
        })
    }
}
