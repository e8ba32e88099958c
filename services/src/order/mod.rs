//! The `order` service: `order.v1.OrderService`, which checks users through `user`.

use rust_ms::{Serve, Service, ServiceChannel};
use tonic::{Code, Request, Response, Status};

use crate::proto::order::v1::order_service_server::{OrderService as OrderApi, OrderServiceServer};
use crate::proto::order::v1::{CreateRequest, CreateResponse, Order};
// The user service's client, as any crate that calls it takes it: no user server code.
use crate::text::{clip, quote};
use clients::user::v1::ExistsRequest;
use clients::user::v1::user_service_client::UserServiceClient;

pub const GRPC_SERVICE: &str = "order.v1.OrderService";

/// The most of the user service's own message passed on: it is another node's text.
const UPSTREAM_MESSAGE_MAX: usize = 200;

/// Creates orders for users that exist, asking `user` over a discovered channel.
#[derive(Clone)]
pub struct OrderService {
    users: UserServiceClient<ServiceChannel>,
}

impl OrderService {
    /// `users` is a channel to the user service, as `Context::client` builds.
    pub fn new(users: ServiceChannel) -> Self {
        Self {
            users: UserServiceClient::new(users),
        }
    }

    pub fn into_server(self) -> OrderServiceServer<Self> {
        OrderServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl OrderApi for OrderService {
    async fn create(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let subject_header = format!("{}sub", rust_ms::CLAIM_HEADER_PREFIX);
        let subject = request
            .metadata()
            .get(subject_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let request_id = request.metadata().get(rust_ms::REQUEST_ID_HEADER).cloned();
        let CreateRequest { username, item } = request.into_inner();
        if let Some(subject) = subject
            && subject != username
        {
            return Err(Status::permission_denied(format!(
                "the caller's token is for {}; it cannot order for {}",
                quote(&subject),
                quote(&username)
            )));
        }
        if item.trim().is_empty() {
            return Err(Status::invalid_argument("item must not be empty"));
        }
        let mut lookup = Request::new(ExistsRequest {
            username: username.clone(),
        });
        // The same request id through every hop, for whoever reads the logs.
        if let Some(id) = request_id {
            lookup.metadata_mut().insert(rust_ms::REQUEST_ID_HEADER, id);
        }
        let exists = self
            .users
            .clone()
            .exists(lookup)
            .await
            .map_err(|status| match status.code() {
                Code::InvalidArgument => status,
                _ => Status::unavailable(format!(
                    "user service: {}",
                    clip(status.message(), UPSTREAM_MESSAGE_MAX)
                )),
            })?
            .into_inner()
            .exists;
        if !exists {
            return Err(Status::not_found(format!("no user {}", quote(&username))));
        }
        Ok(Response::new(CreateResponse {
            order: Some(Order {
                id: uuid::Uuid::new_v4().to_string(),
                username,
                item,
                created_at_ms: rust_ms::registry::unix_millis_now() as i64,
            }),
        }))
    }
}

/// The `order` service, calling `user` over a channel balanced across its nodes.
pub fn service() -> Service {
    Service::new("order", env!("CARGO_PKG_VERSION"))
        .about("The rust-ms example order service, which calls user")
        .descriptors(crate::ORDER_DESCRIPTOR_SET)
        // What it knows of user's methods (which are safe to repeat) is compiled in.
        .calls(clients::DESCRIPTORS)
        .setup(|context| async move {
            let users = context.client("user").await?;
            Ok(Serve::new().add_service(OrderService::new(users).into_server()))
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rust_ms::testing::LocalCluster;

    use super::*;
    use crate::user::{MemoryUserStore, UserSettings};

    /// An order service whose users are a real user node, started beside it on the
    /// cluster it returns (dropping that stops the node).
    async fn orders() -> (OrderService, LocalCluster) {
        let mut cluster = LocalCluster::new();
        let mut settings = UserSettings::default();
        settings.user.token_secret = "order-test-secret".into();
        let user = crate::user::service_with_store(Arc::new(MemoryUserStore::new()));
        cluster.start_with(user, settings).await.unwrap();
        let users = cluster.client("user").await.unwrap();
        (OrderService::new(users), cluster)
    }

    fn create(username: &str, subject: Option<&str>) -> Request<CreateRequest> {
        let mut request = Request::new(CreateRequest {
            username: username.to_owned(),
            item: "book".into(),
        });
        if let Some(subject) = subject {
            let header = format!("{}sub", rust_ms::CLAIM_HEADER_PREFIX);
            request.metadata_mut().insert(
                tonic::metadata::MetadataKey::from_bytes(header.as_bytes()).unwrap(),
                subject.parse().unwrap(),
            );
        }
        request
    }

    #[tokio::test]
    async fn a_20kb_username_gets_short_messages_from_create() {
        let (orders, _user) = orders().await;
        let long = "a".repeat(20_000);

        let status = orders.create(create(&long, None)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(
            status.message().len() < 300,
            "{} bytes",
            status.message().len()
        );
        assert!(status.message().contains("no user \"aaaa"), "{status:?}");

        let status = orders.create(create(&long, Some("bob"))).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().len() < 300,
            "{} bytes",
            status.message().len()
        );
        assert!(status.message().contains("cannot order for"), "{status:?}");
    }

    /// A cluster of an order node and a fake `user` whose `Exists` knows only "ada" and
    /// fails with UNAVAILABLE for "down", keeping the request id each call carried.
    async fn orders_beside_a_fake_user() -> (
        crate::proto::order::v1::order_service_client::OrderServiceClient<ServiceChannel>,
        rust_ms::testing::Mock,
        Arc<std::sync::Mutex<Vec<String>>>,
        LocalCluster,
    ) {
        use clients::user::v1::ExistsResponse;
        let seen_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&seen_ids);
        let users = rust_ms::testing::Mock::new("user", "user.v1.UserService").unary(
            "Exists",
            move |request: Request<ExistsRequest>| {
                let id = request.metadata().get(rust_ms::REQUEST_ID_HEADER).cloned();
                if let Some(id) = id.and_then(|id| id.to_str().map(str::to_owned).ok()) {
                    seen.lock().unwrap().push(id);
                }
                async move {
                    match request.into_inner().username.as_str() {
                        "down" => Err(Status::unavailable("the user store is down")),
                        name => Ok(ExistsResponse {
                            exists: name == "ada",
                        }),
                    }
                }
            },
        );
        let mut cluster = LocalCluster::new();
        cluster.start(users.service()).await.unwrap();
        cluster.start(service()).await.unwrap();
        let orders = crate::proto::order::v1::order_service_client::OrderServiceClient::new(
            cluster.client("order").await.unwrap(),
        );
        (orders, users, seen_ids, cluster)
    }

    #[tokio::test]
    async fn create_asks_user_once_per_order_and_passes_the_request_id_on() {
        let (mut orders, users, seen_ids, cluster) = orders_beside_a_fake_user().await;
        let mut request = create("ada", None);
        request
            .metadata_mut()
            .insert(rust_ms::REQUEST_ID_HEADER, "req-42".parse().unwrap());
        let order = orders.create(request).await.unwrap().into_inner().order;
        assert_eq!(order.map(|order| order.username).as_deref(), Some("ada"));
        assert_eq!(users.calls("Exists"), 1);
        assert_eq!(seen_ids.lock().unwrap().as_slice(), ["req-42"]);

        let missing = orders.create(create("bob", None)).await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
        assert_eq!(users.calls("Exists"), 2);
        cluster.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_user_service_makes_create_unavailable_and_says_which_service() {
        let (mut orders, users, _, cluster) = orders_beside_a_fake_user().await;
        let status = orders.create(create("down", None)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("user service: the user store is down"),
            "{status:?}"
        );
        // A status the service sent is its answer: not retried.
        assert_eq!(users.calls("Exists"), 1);
        cluster.stop().await.unwrap();
    }
}
