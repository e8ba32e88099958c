//! The record layer: counts the attempt in its node's in-flight calls until the reply's
//! head arrives (so that a long stream does not count as load forever), then records its
//! latency, or a failure that is the node's fault toward setting it aside.

use tokio::time::Instant;

use super::{Around, Below, CallError, CallFuture, CallRequest, info_of, picked_of};
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
    fn around<S: Below>(&self, request: CallRequest, mut below: S) -> CallFuture {
        let facts =
            info_of(&request).and_then(|info| Ok((picked_of(&request)?, info.method.clone())));
        let view = self.view.clone();
        Box::pin(async move {
            let (node, method) = facts?;
            let started = Instant::now();
            let in_flight = InFlight::start(&node);
            let outcome = below.call(request).await;
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
