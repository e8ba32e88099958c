//! Active health checks: each node's grpc.health.v1 asked every interval, a bounded
//! number of checks in flight at once across a whole view.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::credentials::NodeChannel;

/// Health checks in flight at once, across all of a view's nodes. Each check holds a
/// connection attempt and its buffers: a gateway starting against 10,000 nodes checked
/// them all in one burst, 10,000 connections at once and twice the memory it settles at.
pub const HEALTH_CHECKS_AT_ONCE: usize = 256;

/// One node's checks: where to ask, what to ask about, where the answer goes.
pub(crate) struct HealthCheck {
    pub channel: NodeChannel,
    /// The registry service, for the metric's label.
    pub registered_as: String,
    /// The gRPC service asked about ("" for the server as a whole).
    pub grpc_service: String,
    pub address: String,
    pub healthy: Arc<AtomicBool>,
    pub interval: Duration,
    pub at_once: Arc<Semaphore>,
    /// The counter checks are reported under (the gateway's or the service client's).
    pub metric: &'static str,
}

impl HealthCheck {
    /// Asks the node every `interval`; a NOT_SERVING answer or no answer takes it out of
    /// rotation until a check says SERVING again. A check waits for one of the `at_once`
    /// permits shared by every node; the wait is not counted against the node.
    pub async fn run(self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let mut client = HealthClient::new(self.channel.clone());
        // The first check runs at once, which also opens the node's connection on join.
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(self.interval).await;
            }
            first = false;
            let request = HealthCheckRequest {
                service: self.grpc_service.clone(),
            };
            // Only a closed semaphore refuses a permit, and nothing closes this one.
            let Ok(_permit) = self.at_once.acquire().await else {
                return;
            };
            let answer = tokio::time::timeout(
                self.interval.min(Duration::from_secs(2)),
                client.check(request),
            )
            .await;
            let serving = matches!(&answer, Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32);
            let result = if serving { "serving" } else { "not_serving" };
            metrics::counter!(self.metric, "service" => self.registered_as.clone(), "result" => result)
                .increment(1);
            if self.healthy.swap(serving, Ordering::Relaxed) != serving {
                let address = &self.address;
                if serving {
                    tracing::info!(%address, "health check passes again; node back in rotation");
                } else {
                    tracing::warn!(%address, "health check failed; node out of rotation");
                }
            }
        }
    }
}
