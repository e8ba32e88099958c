//! A later release of the user service (`user_next.proto`: Exists kept, Greet added),
//! run in the test process as a real node on a real registry, to upgrade a running
//! cluster without building a second binary.

use std::sync::Arc;
use std::time::Duration;

use registry::{Registry, Scope};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

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

/// One node of the later release, registered on loopback.
pub struct NextUserNode {
    pub address: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), node::NodeError>>,
}

impl NextUserNode {
    pub async fn start(registry: Arc<dyn Registry>) -> Self {
        let routes = tonic::service::Routes::new(UserServiceServer::new(NextUsers));
        let mut spec = node::NodeSpec::new("user", VERSION, routes);
        spec.grpc_services = vec!["user.v1.UserService".to_owned()];
        spec.descriptor_sets = vec![DESCRIPTOR_SET];
        let config = config::NodeConfig {
            rpc_port: 0,
            advertise_host: "127.0.0.1".to_owned(),
            shutdown_grace: Duration::from_secs(2),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let registry = registry.clone();
            let stop = stop.clone();
            async move { node::run_node(spec, &config, registry, stop).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let address = loop {
            let listed = registry.snapshot(&Scope::service("user")).await;
            if let Some(instance) = listed
                .ok()
                .and_then(|s| s.instances.into_iter().find(|i| i.version == VERSION))
            {
                break instance.address;
            }
            assert!(
                !task.is_finished() && tokio::time::Instant::now() < deadline,
                "the user {VERSION} node never registered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            address,
            stop,
            task,
        }
    }

    /// The node's graceful exit: deregister, drain, stop.
    pub async fn stop(self) {
        self.stop.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the node stopped within 30 s")
            .expect("the node task did not panic");
        outcome.expect("the node exited cleanly");
    }
}
