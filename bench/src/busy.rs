//! `bench.v1.Busy`: an upstream with a fixed capacity, for the overload runs. Each node has
//! [`WORKERS`] workers and a call holds one for [`WORK`] (about what the argon2
//! login costs); calls past them wait their turn, as on a pool of database connections.
//! Two nodes take about 228 calls a second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::echo::pb::Payload;
use crate::echo::pb::busy_server::{Busy, BusyServer};

/// Calls one node works on at once.
pub const WORKERS: usize = 4;
/// How long each takes.
pub const WORK: Duration = Duration::from_millis(35);

#[derive(Clone)]
pub struct Workers(Arc<Semaphore>);

impl Default for Workers {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(WORKERS)))
    }
}

#[tonic::async_trait]
impl Busy for Workers {
    async fn work(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        // Waits its turn; a caller that gives up (its deadline) leaves the queue.
        let _worker = self
            .0
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the workers are gone"))?;
        tokio::time::sleep(WORK).await;
        Ok(Response::new(request.into_inner()))
    }
}

/// The busy service as a rust-ms node, registered as `busy`.
pub fn service() -> rust_ms::Service {
    rust_ms::Service::new("busy", env!("CARGO_PKG_VERSION"))
        .about("An upstream of the benchmarks with a fixed capacity: 4 workers of 35 ms")
        .descriptors(rust_ms::include_descriptors!())
        .add_service(BusyServer::new(Workers::default()))
}
