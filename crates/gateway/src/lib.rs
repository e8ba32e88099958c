//! The rust-ms API gateway.
//!
//! It is a node like any other (registered as `gateway` with its rpc address) that also
//! serves HTTP. [`cluster::ClusterView`] keeps, from the registry, the live nodes of every
//! service, which the HTTP side reads.

pub mod cluster;
pub mod http;

use std::sync::Arc;

use registry::Registry;
use tokio_util::sync::CancellationToken;

/// The gateway node: its HTTP router over a live view of the cluster.
pub async fn node_spec(
    registry: Arc<dyn Registry>,
    http_listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> node::NodeSpec {
    let view = cluster::ClusterView::follow(registry, stop);
    let mut spec = node::NodeSpec::new(
        "gateway",
        env!("CARGO_PKG_VERSION"),
        tonic::service::Routes::default(),
    );
    spec.http = Some(node::HttpServer {
        listener: http_listener,
        router: http::router(view),
    });
    spec
}
