//! The example services on the real binaries and a real etcd: three `user` nodes share
//! accounts, `order` reaches them through discovery, and each serves health and reflection.

use std::time::Duration;

use services::proto::order::v1::CreateRequest;
use services::proto::order::v1::order_service_client::OrderServiceClient;
use services::proto::user::v1::user_service_client::UserServiceClient;
use services::proto::user::v1::{ExistsRequest, GetRequest, LoginRequest, RegisterRequest};
use services::user::TokenIssuer;
use tests::etcd::Etcd;
use tests::grpc::channel;
use tests::process::Node;
use tests::require;
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "services-test-secret";

fn service_node(binary: &str, n: usize, etcd: &Etcd) -> Node {
    let mut env = vec![("MS_ADVERTISE_HOST", "127.0.0.1")];
    if binary == "user" {
        // Only user has a [user] section; any other node refuses the key.
        env.push(("MS_USER__TOKEN_SECRET", SECRET));
    }
    Node::start(
        binary,
        &format!("{binary}-{n}"),
        &["--rpc-port", "0", "--etcd-addr", &etcd.etcd_addr()],
        &env,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn three_user_nodes_share_accounts_and_order_finds_them_through_discovery() {
    let etcd = require!(Etcd::start().await);
    let users: Vec<Node> = (1..=3).map(|n| service_node("user", n, &etcd)).collect();
    let order = service_node("order", 1, &etcd);
    let mut clients = Vec::new();
    let mut addresses = Vec::new();
    for node in &users {
        let address = node.listening("rpc").await;
        clients.push(UserServiceClient::new(channel(&address).await));
        addresses.push(address);
    }
    let order_address = order.listening("rpc").await;
    for address in &addresses {
        order
            .wait_for(
                &format!("Server [user] cluster [{address}] join"),
                Duration::from_secs(30),
            )
            .await;
    }

    // Registered on one node, known to the others.
    let id = clients[0]
        .register(RegisterRequest {
            username: "alice".into(),
            password: "correct horse".into(),
        })
        .await
        .expect("register")
        .into_inner()
        .id;
    assert!(!id.is_empty());
    let again = clients[1]
        .register(RegisterRequest {
            username: "alice".into(),
            password: "another password".into(),
        })
        .await
        .expect_err("duplicate username");
    assert_eq!(again.code(), Code::AlreadyExists);

    let token = clients[2]
        .login(LoginRequest {
            username: "alice".into(),
            password: "correct horse".into(),
        })
        .await
        .expect("login on another node")
        .into_inner()
        .token;
    let issuer = TokenIssuer::new(SECRET.as_bytes(), Duration::from_secs(60));
    assert_eq!(issuer.verify(&token).expect("valid token"), "alice");

    let wrong = clients[1]
        .login(LoginRequest {
            username: "alice".into(),
            password: "wrong horse".into(),
        })
        .await
        .expect_err("bad password");
    assert_eq!(wrong.code(), Code::Unauthenticated);

    let invalid = clients[0]
        .register(RegisterRequest {
            username: "A!".into(),
            password: "long enough".into(),
        })
        .await
        .expect_err("invalid username");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("3 to 32 characters"),
        "{}",
        invalid.message()
    );

    assert!(
        clients[1]
            .exists(ExistsRequest {
                username: "alice".into()
            })
            .await
            .expect("exists")
            .into_inner()
            .exists
    );
    let user = clients[2]
        .get(GetRequest {
            username: "alice".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(
        (user.id.as_str(), user.username.as_str()),
        (id.as_str(), "alice")
    );

    // order → user through the discovered, balanced channel.
    let mut orders = OrderServiceClient::new(channel(&order_address).await);
    let created = orders
        .create(CreateRequest {
            username: "alice".into(),
            item: "book".into(),
        })
        .await
        .expect("order for alice")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(
        (created.username.as_str(), created.item.as_str()),
        ("alice", "book")
    );
    let missing = orders
        .create(CreateRequest {
            username: "nobody".into(),
            item: "book".into(),
        })
        .await
        .expect_err("no such user");
    assert_eq!(missing.code(), Code::NotFound);

    // A user node leaves: order follows the leave and keeps working on the other two.
    users[0].sigterm().await;
    order
        .wait_for(
            &format!("Server [user] cluster [{}] leave", addresses[0]),
            Duration::from_secs(10),
        )
        .await;
    for _ in 0..6 {
        orders
            .create(CreateRequest {
                username: "alice".into(),
                item: "pen".into(),
            })
            .await
            .expect("order after a user node left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn every_service_node_serves_health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let etcd = require!(Etcd::start().await);
    for (binary, service) in [
        ("user", "user.v1.UserService"),
        ("order", "order.v1.OrderService"),
    ] {
        let node = service_node(binary, 1, &etcd);
        let channel = channel(&node.listening("rpc").await).await;
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service} health");

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let reply = replies
            .message()
            .await
            .expect("reflection reply")
            .expect("one reply");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&service.to_owned()), "{names:?}");
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
    }
}

/// PEM files of the mutual-TLS test cluster (see testdata/mtls/README.md).
fn mtls_file(name: &str) -> String {
    format!("{}/testdata/mtls/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn tls_channel(address: &str, identity: Option<(&str, &str)>) -> Result<Channel, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |name: &str| std::fs::read(mtls_file(name)).expect("test PEM file");
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("cluster-ca.pem")));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    Channel::from_shared(format!("https://{address}"))
        .expect("uri")
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn with_mutual_tls_services_answer_only_callers_with_a_cluster_certificate() {
    let etcd = require!(Etcd::start().await);
    let (ca, cert, key) = (
        mtls_file("cluster-ca.pem"),
        mtls_file("node.pem"),
        mtls_file("node.key"),
    );
    let mtls = [
        ("MS_ADVERTISE_HOST", "127.0.0.1"),
        ("MS_SECURITY__MTLS__CA", ca.as_str()),
        ("MS_SECURITY__MTLS__CERT", cert.as_str()),
        ("MS_SECURITY__MTLS__KEY", key.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        mtls.iter().chain(extra).copied().collect()
    };
    let args = |rest: &[&str]| -> Vec<String> {
        ["--rpc-port", "0", "--etcd-addr", &etcd.etcd_addr()]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let user_args = args(&[]);
    let user = Node::start(
        "user",
        "user-mtls",
        &user_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &with(&[("MS_USER__TOKEN_SECRET", SECRET)]),
    );
    let order_args = args(&[]);
    let order = Node::start(
        "order",
        "order-mtls",
        &order_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &with(&[]),
    );
    let gateway_args = args(&["--http-port", "0"]);
    let gateway = Node::start(
        "gateway",
        "gateway-mtls",
        &gateway_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &with(&[]),
    );
    let user_address = user.listening("rpc").await;
    order.listening("rpc").await;
    let http = gateway.listening("http").await;

    // Through the gateway, and from order to user: every hop inside is mutual TLS.
    let client = tests::http::HttpClient::default();
    let patience = Duration::from_secs(60);
    let account = serde_json::json!({"username": "tlsuser", "password": "tls-password"});
    client
        .post_until(
            &format!("http://{http}/api/user/Register"),
            &account,
            200,
            patience,
        )
        .await;
    let order_body = serde_json::json!({"username": "tlsuser", "item": "book"});
    client
        .post_until(
            &format!("http://{http}/api/order/Create"),
            &order_body,
            200,
            patience,
        )
        .await;

    // Directly: only a client with a certificate of the cluster's CA gets an answer.
    let exists = || ExistsRequest {
        username: "tlsuser".into(),
    };
    let plain = match Channel::from_shared(format!("http://{user_address}"))
        .expect("uri")
        .connect()
        .await
    {
        Ok(channel) => UserServiceClient::new(channel)
            .exists(exists())
            .await
            .map(|_| ())
            .map_err(|s| s.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(plain.is_err(), "plaintext call answered");
    for identity in [None, Some(("outsider.pem", "outsider.key"))] {
        let refused = match tls_channel(&user_address, identity).await {
            Ok(channel) => UserServiceClient::new(channel)
                .exists(exists())
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
            Err(e) => Err(e),
        };
        assert!(refused.is_err(), "TLS call with {identity:?} answered");
    }
    let trusted = tls_channel(&user_address, Some(("node.pem", "node.key")))
        .await
        .expect("TLS with the cluster's certificate connects");
    assert!(
        UserServiceClient::new(trusted)
            .exists(exists())
            .await
            .expect("a call with the cluster's certificate is answered")
            .into_inner()
            .exists
    );
}
