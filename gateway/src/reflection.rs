//! gRPC server reflection on the gateway's rpc port for the whole cluster: the union of
//! the APIs its nodes describe, so that a tool pointed at the gateway (grpcurl, Postman,
//! evans) lists and calls every service behind it. Both protocol versions are answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use reflect::ReflectedFile;
use tower::ServiceExt;

use crate::state::Gateway;

/// The gRPC paths this module answers instead of passing them to a node.
pub const V1_PATH: &str = "/grpc.reflection.v1.ServerReflection/{*method}";
pub const V1ALPHA_PATH: &str = "/grpc.reflection.v1alpha.ServerReflection/{*method}";

/// `grpc.reflection.v1.ServerReflection` for the cluster.
pub async fn v1(State(api): State<Arc<Gateway>>, request: Request) -> Response {
    match builder(&api).await.build_v1() {
        Ok(server) => answer(server, request).await,
        Err(error) => unavailable(error),
    }
}

/// `grpc.reflection.v1alpha.ServerReflection` for the cluster.
pub async fn v1alpha(State(api): State<Arc<Gateway>>, request: Request) -> Response {
    match builder(&api).await.build_v1alpha() {
        Ok(server) => answer(server, request).await,
        Err(error) => unavailable(error),
    }
}

/// A reflection server over the files of every service version the gateway routes to
/// now, read by reflection from one of its nodes (and cached, as for `/api`). Each file
/// is served as its node sent it, custom options (`google.api.http`) included.
async fn builder(api: &Gateway) -> reflect::server::Builder {
    let mut one_node_per_version = BTreeMap::new();
    let snapshot = api.view.snapshot();
    for node in snapshot.nodes() {
        let key = (node.instance.service.clone(), node.instance.version.clone());
        if node.instance.service != "gateway" {
            one_node_per_version.entry(key).or_insert(node);
        }
    }
    // Newer versions first (by their text), so a file two versions share is the newer's.
    let mut files: BTreeMap<String, Bytes> = BTreeMap::new();
    for ((service, version), node) in one_node_per_version.into_iter().rev() {
        match api.schema_of(node).await {
            Ok(schema) => {
                for (name, encoded) in schema.encoded_files() {
                    files
                        .entry(name.to_owned())
                        .or_insert_with(|| encoded.clone());
                }
            }
            // One service that cannot be read must not hide the others.
            Err(error) => {
                tracing::warn!(%service, %version, %error, "left out of cluster reflection")
            }
        }
    }
    let health = reflect::split_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|encoded| ReflectedFile::decode(encoded).ok());
    for file in health {
        files.entry(file.name().to_owned()).or_insert(file.encoded);
    }
    files
        .into_values()
        .fold(reflect::server::Builder::new(), |builder, file| {
            builder.register_encoded_file(file)
        })
}

async fn answer<S>(server: S, request: Request) -> Response
where
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
{
    match server.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

fn unavailable(error: reflect::server::BuildError) -> Response {
    tonic::Status::unavailable(format!("cluster reflection: {error}"))
        .into_http::<axum::body::Body>()
        .into_response()
}
