//! Nodes that behave as a test asks, on loopback: a gRPC server of `test.v1.Echo`
//! (described by reflection, as a real node is) whose every call answers, fails with a
//! status of its own, hangs, or breaks its stream after the request went out. For tests
//! of the doors that call through the stack (the gateway's and the service client).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use prost_reflect::prost_types::method_options::IdempotencyLevel;
use prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    MethodDescriptorProto, MethodOptions, ServiceDescriptorProto, field_descriptor_proto,
};
use registry::{Change, Instance};
use tokio_util::sync::CancellationToken;

use crate::credentials::ClusterCredentials;
use crate::meta::GRPC_SERVICES;
use crate::view::{ClusterView, Ejection, ViewMetrics, ViewOptions};

/// The gRPC service every fake node serves.
pub const ECHO: &str = "test.v1.Echo";
/// Safe to repeat (`NO_SIDE_EFFECTS`): retried after a failure that may have run.
pub const LOOK: &str = "Look";
/// Not marked: never repeated once it may have run.
pub const CHANGE: &str = "Change";

/// The message of `test.v1.Echo`'s methods, for callers compiled against it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Word {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// What a fake node does with each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Echoes the request's message back, status OK.
    Answer,
    /// Answers with this status of its own (trailers-only).
    Fail(tonic::Code),
    /// Never answers.
    Hang,
    /// Sends the reply's head, then breaks the stream: the call may have run.
    Break,
}

/// A fake node, serving until dropped.
pub struct FakeNode {
    pub instance: Instance,
    calls: Arc<AtomicUsize>,
    last_headers: Arc<std::sync::Mutex<http::HeaderMap>>,
    stop: CancellationToken,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeNode {
    /// A node `id` of `service` on a free loopback port.
    pub async fn start(service: &str, id: &str, behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let calls = Arc::new(AtomicUsize::new(0));
        let last_headers = Arc::default();
        let stop = CancellationToken::new();
        let reflection = reflect::server::Builder::new()
            .register_encoded_file_descriptor_set(
                prost::Message::encode_to_vec(&echo_descriptors()),
            )
            .build_v1()
            .map_err(std::io::Error::other)?;
        let echo = EchoServer {
            behaviour,
            calls: calls.clone(),
            last_headers: Arc::clone(&last_headers),
        };
        let server = tonic::transport::Server::builder()
            .add_service(reflection)
            .add_service(echo)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Ok(Self {
            instance: instance(service, id, &address.to_string()),
            calls,
            last_headers,
            stop,
        })
    }

    /// How many calls of `test.v1.Echo` reached it.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The headers (gRPC metadata) of the last call that reached it.
    pub fn last_headers(&self) -> http::HeaderMap {
        self.last_headers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A view of `instances` with no health checks and no setting aside, so that what a test
/// sends is what each node gets; it reports under `metrics`.
pub fn plain_view(
    instances: impl IntoIterator<Item = Instance>,
    metrics: ViewMetrics,
) -> ClusterView {
    let options = ViewOptions::new(
        Ejection {
            after_failures: u32::MAX,
            for_how_long: std::time::Duration::from_secs(1),
            max_ejected_percent: 50,
        },
        std::time::Duration::ZERO,
        ClusterCredentials::default(),
        metrics,
    );
    let view = ClusterView::for_tests(options);
    for instance in instances {
        view.apply_for_tests(Change::Joined(instance));
    }
    view
}

/// A fake node that `first` behaves as, and one that answers.
pub async fn beside_an_answering_node(
    service: &str,
    first: Behaviour,
) -> std::io::Result<(FakeNode, FakeNode)> {
    let first = FakeNode::start(service, "first", first).await?;
    let answering = FakeNode::start(service, "answering", Behaviour::Answer).await?;
    Ok((first, answering))
}

/// A node `id` of `service` registered at a loopback port where nothing listens: every
/// connection to it is refused, so nothing sent to it ever runs.
pub async fn unreachable(service: &str, id: &str) -> std::io::Result<Instance> {
    let address = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    Ok(instance(service, id, &address.to_string()))
}

fn instance(service: &str, id: &str, address: &str) -> Instance {
    let mut instance = Instance::new(service, address).with_id(id);
    instance.metadata.insert(GRPC_SERVICES.into(), ECHO.into());
    instance
}

/// `test.v1.Echo`: `Look` and `Change`, both taking and returning a `Word { text }`.
pub fn echo_descriptors() -> FileDescriptorSet {
    let word = DescriptorProto {
        name: Some("Word".into()),
        field: vec![FieldDescriptorProto {
            name: Some("text".into()),
            number: Some(1),
            label: Some(field_descriptor_proto::Label::Optional as i32),
            r#type: Some(field_descriptor_proto::Type::String as i32),
            json_name: Some("text".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let method = |name: &str, level: IdempotencyLevel| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(".test.v1.Word".into()),
        output_type: Some(".test.v1.Word".into()),
        options: Some(MethodOptions {
            idempotency_level: Some(level as i32),
            ..Default::default()
        }),
        ..Default::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("test/v1/echo.proto".into()),
            package: Some("test.v1".into()),
            message_type: vec![word],
            service: vec![ServiceDescriptorProto {
                name: Some("Echo".into()),
                method: vec![
                    method(LOOK, IdempotencyLevel::NoSideEffects),
                    method(CHANGE, IdempotencyLevel::IdempotencyUnknown),
                ],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        }],
    }
}

#[derive(Clone)]
struct EchoServer {
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
    last_headers: Arc<std::sync::Mutex<http::HeaderMap>>,
}

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = ECHO;
}

type Reply = http::Response<tonic::body::Body>;

impl tower::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = Reply;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.last_headers.lock().unwrap_or_else(|p| p.into_inner()) = request.headers().clone();
        let behaviour = self.behaviour;
        Box::pin(async move {
            let message = request
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            Ok(match behaviour {
                Behaviour::Answer => answer(message),
                Behaviour::Fail(code) => {
                    tonic::Status::new(code, "failing on purpose").into_http::<tonic::body::Body>()
                }
                Behaviour::Hang => std::future::pending().await,
                Behaviour::Break => broken(),
            })
        })
    }
}

fn grpc_head() -> http::response::Builder {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
}

/// The request's framed message sent back, then status OK.
fn answer(framed: Bytes) -> Reply {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, tonic::Status>(http_body::Frame::data(framed)),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
    grpc_head().body(body).unwrap_or_default()
}

/// A head, then an error instead of the message: the server resets the stream.
fn broken() -> Reply {
    let frames = futures::stream::iter([Err::<http_body::Frame<Bytes>, _>(
        tonic::Status::internal("breaking the stream on purpose"),
    )]);
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
    grpc_head().body(body).unwrap_or_default()
}
