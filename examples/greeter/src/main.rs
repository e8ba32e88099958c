//! A whole rust-ms service. `greeter --registry memory` runs it alone; with
//! `--etcd-addr 127.0.0.1:2379` it joins a cluster, and any gateway of that cluster
//! answers `POST /api/greeter/Hello {"name": "Ada"}` with no configuration.

use rust_ms::Service;
use tonic::{Request, Response, Status};

mod pb {
    tonic::include_proto!("greeter.v1");
}
use pb::greeter_server::{Greeter, GreeterServer};
use pb::{HelloReply, HelloRequest};

struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        let message = format!("Hello, {name}!");
        Ok(Response::new(HelloReply { message }))
    }
}

fn main() -> std::process::ExitCode {
    Service::new("greeter", env!("CARGO_PKG_VERSION"))
        .about("The rust-ms example greeter: Hello, {name}!")
        .descriptors(rust_ms::include_descriptors!())
        .add_service(GreeterServer::new(Hello))
        .run()
}
