//! A stand-in for a service a test does not want to run: each method answered by a closure,
//! registered under the service's name so that `context.client(name)` of the node under
//! test reaches it like a real node.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use tonic::{Request, Response, Status};

use crate::{Serve, Service};

type Answer<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;

/// Nodes of a fake service: methods of one gRPC service (`user.v1.UserService`) answered
/// by closures over the generated message types, registered under a registry name
/// (`user`). It counts the calls each method received. Clones share the counts, so a test
/// keeps one to ask after starting [`Mock::service`].
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), node::NodeError> {
/// use node::{LocalCluster, Mock};
/// use tonic::Status;
///
/// // Any prost messages serve; a real test uses the called service's generated types.
/// let users = Mock::new("user", "user.v1.UserService").unary(
///     "Exists",
///     |request: tonic::Request<String>| async move {
///         match request.into_inner().as_str() {
///             "" => Err(Status::invalid_argument("username must not be empty")),
///             name => Ok(name == "ada"),
///         }
///     },
/// );
/// let mut cluster = LocalCluster::new();
/// cluster.start(users.service()).await?;
/// // ... the service under test calls `user` ...
/// assert_eq!(users.calls("Exists"), 0);
/// cluster.stop().await
/// # }
/// ```
#[derive(Clone)]
pub struct Mock {
    name: String,
    grpc_service: String,
    methods: Vec<(String, axum::routing::MethodRouter)>,
    descriptors: Option<&'static [u8]>,
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Mock {
    /// A fake of the service registered as `name` whose gRPC service is `grpc_service`
    /// (`package.Service`, as in its `.proto`). A method it has no answer for is
    /// UNIMPLEMENTED, as on a real node.
    pub fn new(name: impl Into<String>, grpc_service: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            grpc_service: grpc_service.into(),
            methods: Vec::new(),
            descriptors: None,
            calls: Arc::default(),
        }
    }

    /// Answers the unary method `method` (its name in the `.proto`: `Exists`) with
    /// `answer`, which gets the request (message and metadata) and returns the reply or
    /// the status the caller sees.
    pub fn unary<Req, Reply, F, Fut>(self, method: &str, answer: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Reply: prost::Message + Send + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Status>> + Send + 'static,
    {
        let answer = Arc::new(answer);
        let handler = tower::service_fn(move |request: http::Request<Body>| {
            let answer = Arc::clone(&answer);
            async move {
                let mut grpc = tonic::server::Grpc::new(codec::<Reply, Req>());
                let reply = grpc.unary(Unary(answer), request).await;
                Ok::<_, Infallible>(reply.map(Body::new))
            }
        });
        self.route(method, handler)
    }

    /// Answers the server-streaming method `method` with the messages `answer` returns,
    /// sent one by one, or with its status before any message.
    pub fn server_stream<Req, Reply, F, Fut>(self, method: &str, answer: F) -> Self
    where
        Req: prost::Message + Default + Send + 'static,
        Reply: prost::Message + Send + 'static,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Reply>, Status>> + Send + 'static,
    {
        let answer = Arc::new(answer);
        let handler = tower::service_fn(move |request: http::Request<Body>| {
            let answer = Arc::clone(&answer);
            async move {
                let mut grpc = tonic::server::Grpc::new(codec::<Reply, Req>());
                let reply = grpc.server_streaming(Streamed(answer), request).await;
                Ok::<_, Infallible>(reply.map(Body::new))
            }
        });
        self.route(method, handler)
    }

    /// The descriptors of the faked service (its crate's `DESCRIPTORS`), served by
    /// reflection: needed only when a gateway in the test routes to the fake.
    pub fn descriptors(mut self, set: &'static [u8]) -> Self {
        self.descriptors = Some(set);
        self
    }

    /// How many calls of `method` reached the fake so far, on any of its nodes.
    pub fn calls(&self, method: &str) -> usize {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.get(method).copied().unwrap_or(0)
    }

    /// A node of the fake, to start with `LocalCluster::start`; start it twice for two
    /// nodes.
    pub fn service(&self) -> Service {
        let mock = self.clone();
        let mut service = Service::new(mock.name.clone(), "0.0.0-mock");
        if let Some(set) = mock.descriptors {
            service = service.descriptors(set);
        }
        service.setup(move |_context| {
            let mock = mock.clone();
            async move {
                let mut router = axum::Router::new();
                for (method, handler) in mock.methods {
                    router = router.route(&format!("/{}/{method}", mock.grpc_service), handler);
                }
                Ok(Serve::new().add_routes(mock.grpc_service, router))
            }
        })
    }

    fn route<H>(mut self, method: &str, handler: H) -> Self
    where
        H: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        H::Future: Send + 'static,
    {
        let calls = Arc::clone(&self.calls);
        let counted = method.to_owned();
        let handler = tower::ServiceBuilder::new()
            .map_request(move |request: http::Request<Body>| {
                let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
                *calls.entry(counted.clone()).or_default() += 1;
                request
            })
            .service(handler);
        self.methods.retain(|(name, _)| name != method);
        self.methods
            .push((method.to_owned(), axum::routing::post_service(handler)));
        self
    }
}

fn codec<Encode, Decode>() -> tonic_prost::ProstCodec<Encode, Decode> {
    tonic_prost::ProstCodec::default()
}

/// A closure as tonic's unary handler.
struct Unary<F>(Arc<F>);

impl<Req, Reply, F, Fut> tonic::server::UnaryService<Req> for Unary<F>
where
    F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Status>> + Send + 'static,
    Reply: Send + 'static,
{
    type Response = Reply;
    type Future = Answer<Response<Reply>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let reply = (self.0)(request);
        Box::pin(async move { reply.await.map(Response::new) })
    }
}

/// A closure returning every message at once as tonic's server-streaming handler.
struct Streamed<F>(Arc<F>);

type Messages<Reply> = Pin<Box<dyn futures_util::Stream<Item = Result<Reply, Status>> + Send>>;

impl<Req, Reply, F, Fut> tonic::server::ServerStreamingService<Req> for Streamed<F>
where
    F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Reply>, Status>> + Send + 'static,
    Reply: Send + 'static,
{
    type Response = Reply;
    type ResponseStream = Messages<Reply>;
    type Future = Answer<Response<Messages<Reply>>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let replies = (self.0)(request);
        Box::pin(async move {
            let replies = replies.await?;
            let stream: Messages<Reply> =
                Box::pin(futures_util::stream::iter(replies.into_iter().map(Ok)));
            Ok(Response::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalCluster;

    /// Calls `/{service}/{method}` of the cluster's `name` nodes with a prost message.
    async fn grpc(
        cluster: &LocalCluster,
        name: &str,
    ) -> tonic::client::Grpc<crate::ServiceChannel> {
        let mut grpc = tonic::client::Grpc::new(cluster.client(name).await.unwrap());
        grpc.ready().await.unwrap();
        grpc
    }

    #[tokio::test]
    async fn a_mock_answers_unary_and_streaming_calls_from_its_closures_and_counts_them() {
        let shelf = Mock::new("shelf", "shelf.v1.Shelf")
            .unary("Count", |request: Request<String>| async move {
                Ok(request.into_inner().len() as u64)
            })
            .server_stream("Spell", |request: Request<String>| async move {
                match request.into_inner() {
                    word if word.is_empty() => Err(Status::invalid_argument("no word")),
                    word => Ok(word.chars().map(String::from).collect()),
                }
            });
        let mut cluster = LocalCluster::new();
        cluster.start(shelf.service()).await.unwrap();

        let mut grpc = grpc(&cluster, "shelf").await;
        let count: u64 = grpc
            .unary(
                Request::new("four".to_owned()),
                "/shelf.v1.Shelf/Count".parse().unwrap(),
                codec::<String, u64>(),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(count, 4);

        let mut grpc = grpc.clone();
        grpc.ready().await.unwrap();
        let mut letters = grpc
            .server_streaming(
                Request::new("ab".to_owned()),
                "/shelf.v1.Shelf/Spell".parse().unwrap(),
                codec::<String, String>(),
            )
            .await
            .unwrap()
            .into_inner();
        let mut spelt = Vec::new();
        while let Some(letter) = letters.message().await.unwrap() {
            spelt.push(letter);
        }
        assert_eq!(spelt, ["a", "b"]);

        grpc.ready().await.unwrap();
        let refused = grpc
            .server_streaming(
                Request::new(String::new()),
                "/shelf.v1.Shelf/Spell".parse().unwrap(),
                codec::<String, String>(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);

        grpc.ready().await.unwrap();
        let unknown = grpc
            .unary(
                Request::new(String::new()),
                "/shelf.v1.Shelf/Shelve".parse().unwrap(),
                codec::<String, String>(),
            )
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unimplemented);

        assert_eq!((shelf.calls("Count"), shelf.calls("Spell")), (1, 2));
        assert_eq!(shelf.calls("Shelve"), 0);
        cluster.stop().await.unwrap();
    }
}
