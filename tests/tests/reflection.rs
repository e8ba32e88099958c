//! Tools find every service: each node answers gRPC reflection in both protocol versions
//! (v1 and v1alpha), the gateway's rpc port answers it for the whole cluster, and a node
//! that another program registered with nothing but its address is routed like any other.

use std::time::Duration;

use prost::Message;
use serde_json::json;
use tests::etcd::Etcd;
use tests::grpc::channel;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;
use tonic_reflection::pb::{v1, v1alpha};

const PATIENCE: Duration = Duration::from_secs(60);

/// A binary on etcd, on loopback ports the OS picks.
fn start(binary: &str, etcd: &Etcd) -> Node {
    Node::start(
        binary,
        binary,
        &[],
        &[
            ("MS_RPC_PORT", "0"),
            ("MS_HTTP_PORT", "0"),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
            ("MS_REGISTRY__ETCD_ADDR", &etcd.etcd_addr()),
        ],
    )
}

/// The services a reflection v1 server lists.
async fn list_v1(address: &str) -> Vec<String> {
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        v1::server_reflection_client::ServerReflectionClient::new(channel(address).await)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection v1 answers")
            .into_inner();
    match replies
        .message()
        .await
        .expect("a reply")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1 reply {other:?}"),
    }
}

/// The services a reflection v1alpha server lists, and the file that declares `symbol`.
async fn list_and_find_v1alpha(address: &str, symbol: &str) -> (Vec<String>, Vec<String>) {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol(symbol.to_owned()),
    ]
    .map(|request| v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut replies =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(address).await)
            .server_reflection_info(futures::stream::iter(requests))
            .await
            .expect("reflection v1alpha answers")
            .into_inner();
    let services = match replies
        .message()
        .await
        .expect("a reply")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1alpha reply {other:?}"),
    };
    let files = match replies
        .message()
        .await
        .expect("a reply")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::FileDescriptorResponse(found)) => found
            .file_descriptor_proto
            .iter()
            .map(|bytes| file_name(bytes))
            .collect(),
        other => panic!("no file for {symbol}: {other:?}"),
    };
    (services, files)
}

/// The `name` of an encoded FileDescriptorProto (field 1).
fn file_name(bytes: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Named {
        #[prost(string, tag = "1")]
        name: String,
    }
    Named::decode(bytes).expect("a file descriptor").name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn nodes_answer_both_reflection_versions_and_the_gateway_answers_for_the_cluster() {
    let etcd = require!(Etcd::start().await);
    let user = start("user", &etcd);
    let order = start("order", &etcd);
    let gateway = start("gateway", &etcd);
    let user_rpc = user.listening("rpc").await;
    let gateway_rpc = gateway.listening("rpc").await;
    order.listening("rpc").await;

    // A node describes its own API, in both versions, and nothing it does not serve.
    let listed = list_v1(&user_rpc).await;
    assert!(
        listed.contains(&"user.v1.UserService".to_owned()),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&"order.v1.OrderService".to_owned()),
        "{listed:?}"
    );
    let (listed, files) = list_and_find_v1alpha(&user_rpc, "user.v1.UserService").await;
    assert!(
        listed.contains(&"user.v1.UserService".to_owned()),
        "{listed:?}"
    );
    assert!(
        files.contains(&"user/v1/user.proto".to_owned()),
        "{files:?}"
    );

    // The gateway's rpc port lists every service of the cluster once both are discovered.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let listed = loop {
        let listed = list_v1(&gateway_rpc).await;
        let complete = ["user.v1.UserService", "order.v1.OrderService"]
            .iter()
            .all(|s| listed.contains(&s.to_string()));
        if complete {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway lists only {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        listed.contains(&"grpc.health.v1.Health".to_owned()),
        "{listed:?}"
    );
    let (listed, files) = list_and_find_v1alpha(&gateway_rpc, "order.v1.OrderService").await;
    assert!(
        listed.contains(&"user.v1.UserService".to_owned()),
        "{listed:?}"
    );
    assert!(
        listed.contains(&"order.v1.OrderService".to_owned()),
        "{listed:?}"
    );
    assert!(
        files.contains(&"order/v1/order.proto".to_owned()),
        "{files:?}"
    );
    let (_, files) = list_and_find_v1alpha(&gateway_rpc, "user.v1.ExistsRequest").await;
    assert!(
        files.contains(&"user/v1/user.proto".to_owned()),
        "{files:?}"
    );

    for node in [&user, &order, &gateway] {
        node.sigterm().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_node_registered_by_a_bare_json_value_is_routed_by_the_gateway() {
    let etcd = require!(Etcd::start().await);
    let gateway = start("gateway", &etcd);
    let http = gateway.listening("http").await;

    // A service written in another language: a gRPC server with reflection, registered by
    // its own program with a value holding only its address. (The probe runs in this
    // process and registers nowhere but a private in-memory registry.)
    let private = std::sync::Arc::new(registry_memory::MemoryRegistry::new());
    let foreign = tests::probe::start(private, None).await;
    let mut client = etcd.client().await;
    let value = json!({ "address": foreign.address }).to_string();
    client
        .put("go-ms/services/probe/written-by-hand", value, None)
        .await
        .expect("write the bare value");
    gateway
        .wait_for(
            &format!("Server [probe] cluster [{}] join", foreign.address),
            PATIENCE,
        )
        .await;

    let reply = HttpClient::default()
        .post_until(
            &format!("http://{http}/api/probe/Echo"),
            &json!({ "text": "from another language" }),
            200,
            PATIENCE,
        )
        .await;
    assert_eq!(reply.body["text"], "from another language");
    assert_eq!(reply.header("x-served-by"), Some(foreign.address.as_str()));

    gateway.sigterm().await;
    foreign.stop().await;
}
