//! `bench.v1.Echo`: answers at almost no cost, so the proxy in front is what is measured.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

pub mod pb {
    tonic::include_proto!("bench.v1");
}

use pb::echo_server::{Echo, EchoServer};
use pb::{Payload, StreamRequest};

/// The most copies one `Stream` call may ask for.
pub const MAX_STREAM: u32 = 10_000;

#[derive(Clone, Copy, Default)]
pub struct Echoes;

#[tonic::async_trait]
impl Echo for Echoes {
    async fn echo(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let StreamRequest { data, count } = request.into_inner();
        if count > MAX_STREAM {
            return Err(Status::invalid_argument(format!(
                "count {count} is over {MAX_STREAM}"
            )));
        }
        let copies = (0..count).map(move |_| Ok(Payload { data: data.clone() }));
        Ok(Response::new(Box::pin(futures::stream::iter(copies))))
    }
}

/// The echo service as a rust-ms node, registered as `echo`.
pub fn service() -> rust_ms::Service {
    rust_ms::Service::new("echo", env!("CARGO_PKG_VERSION"))
        .about("The benchmarks' upstream: echoes its payload")
        .descriptors(rust_ms::include_descriptors!())
        .add_service(EchoServer::new(Echoes).max_decoding_message_size(8 << 20))
}
