//! The canary layer: while a route's canary runs, each call is counted for the side that
//! answered it (the canary's version or the baseline), by its final gRPC code and how
//! long it took to end, for the step's judgement (see [`crate::canary`]). Calls no node
//! answered (refused, shed, none to take them) are neither side's.

use std::sync::Arc;

use cluster::canary::Outcome;
use cluster::stack::{Around, Below, CallRequest, Picked, Step, info_of};
use telemetry::grpc::OnEnd;
use tokio::time::Instant;

use super::GatewayCall;
use crate::canary::CanaryMeter;
use crate::history::History;

#[derive(Clone)]
pub struct CanaryLayer {
    meter: Arc<CanaryMeter>,
    /// The dashboard's charts show the two sides by version.
    history: Arc<History>,
}

impl CanaryLayer {
    pub fn new(meter: Arc<CanaryMeter>, history: Arc<History>) -> Self {
        Self { meter, history }
    }
}

cluster::around_layer!(CanaryLayer);

impl Around for CanaryLayer {
    type Future<S: Below> = Step<S::Future>;

    fn around<S: Below>(&self, request: CallRequest, below: &mut S) -> Step<S::Future> {
        // The route, shared: its canary is read where the call ends, not copied per call.
        let route = request
            .extensions()
            .get::<GatewayCall>()
            .map(|call| call.route.clone())
            .filter(|route| {
                route
                    .canary
                    .as_ref()
                    .is_some_and(|canary| canary.outcome() == Outcome::Running)
            });
        let (Some(route), Ok(info)) = (route, info_of(&request)) else {
            return Step::below(below.call(request));
        };
        let service = info.service.clone();
        let (meter, history, started) = (self.meter.clone(), self.history.clone(), Instant::now());
        let called = below.call(request);
        Step::around(Box::pin(async move {
            match called.await {
                Ok(response) => {
                    let Some(node) = response.extensions().get::<Picked>().map(|p| p.0.clone())
                    else {
                        return Ok(response);
                    };
                    let (parts, body) = response.into_parts();
                    let body = OnEnd::new(body, &parts.headers, move |code| {
                        let (version, took) = (&node.instance.version, started.elapsed());
                        if let Some(canary) = &route.canary {
                            meter.record(&service, canary, version, code, took);
                        }
                        history.record_version(&service, version, code, took);
                    });
                    Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(body),
                    ))
                }
                Err(error) => {
                    if let Some(node) = error.node() {
                        let (version, took) = (&node.instance.version, started.elapsed());
                        if let Some(canary) = &route.canary {
                            meter.record(&service, canary, version, error.code(), took);
                        }
                        history.record_version(&service, version, error.code(), took);
                    }
                    Err(error)
                }
            }
        }))
    }
}
