//! A later release of the user service (`user_next.proto`: Exists kept, Greet added),
//! to upgrade a running cluster without building a second binary.

use std::sync::Arc;

use registry::Registry;
use tonic::{Request, Response, Status};

use crate::in_process::InProcessNode;

pub mod proto {
    tonic::include_proto!("user.v1");
}

use proto::user_service_server::{UserService, UserServiceServer};
use proto::{ExistsRequest, ExistsResponse, GreetRequest, GreetResponse};

pub const VERSION: &str = "0.2.0";
const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/user_next_descriptor.bin"));

struct NextUsers;

#[tonic::async_trait]
impl UserService for NextUsers {
    async fn exists(
        &self,
        _request: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        Ok(Response::new(ExistsResponse { exists: false }))
    }

    async fn greet(
        &self,
        request: Request<GreetRequest>,
    ) -> Result<Response<GreetResponse>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(GreetResponse {
            greeting: format!("hello {name}, from user {VERSION}"),
        }))
    }
}

/// One node of the later release, registered as `user` at [`VERSION`].
pub async fn start(registry: Arc<dyn Registry>) -> InProcessNode {
    let routes = tonic::service::Routes::new(UserServiceServer::new(NextUsers));
    let mut spec = node::NodeSpec::new("user", VERSION, routes);
    spec.grpc_services = vec!["user.v1.UserService".to_owned()];
    spec.descriptor_sets = vec![DESCRIPTOR_SET];
    InProcessNode::start(spec, registry).await
}
