//! Native gRPC through the gateway's rpc port, on the real binaries and a real etcd:
//! unary and server streams from a user node, client and bidirectional streams from a probe.

use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{PATIENCE, gateway_config, probe_behind_a_gateway, users_behind_a_gateway};
use tests::grpc::channel as grpc_channel;
use tests::require;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_tonic_client_on_the_gateway_rpc_port_is_answered_by_a_user_node_unary_and_streaming() {
    use services::proto::order::v1::CreateRequest;
    use services::proto::order::v1::order_service_client::OrderServiceClient;
    use services::proto::user::v1::user_service_client::UserServiceClient;
    use services::proto::user::v1::{ExistsRequest, ListRequest, RegisterRequest};

    let etcd = require!(Etcd::start().await);
    let (users, gateway, _) = users_behind_a_gateway(&etcd, "grpc", 1).await;
    let address = &users[0].1;
    let channel = grpc_channel(&gateway.rpc).await;
    let reply = UserServiceClient::new(channel.clone())
        .exists(ExistsRequest {
            username: "nobody".into(),
        })
        .await
        .expect("Exists through the gateway");
    assert_eq!(
        reply
            .metadata()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok()),
        Some(address.as_str())
    );
    assert!(!reply.into_inner().exists);

    // A server stream passes through message by message, in order, to its end.
    let mut users = UserServiceClient::new(channel.clone());
    let names = ["stream-c", "stream-a", "stream-b", "other"];
    for name in names {
        users
            .register(RegisterRequest {
                username: name.into(),
                password: "long enough".into(),
            })
            .await
            .expect("Register through the gateway");
    }
    let mut stream = users
        .list(ListRequest {
            prefix: "stream-".into(),
            limit: 0,
        })
        .await
        .expect("List through the gateway")
        .into_inner();
    let mut listed = Vec::new();
    while let Some(user) = stream.message().await.expect("stream message") {
        listed.push(user.username);
    }
    assert_eq!(listed, ["stream-a", "stream-b", "stream-c"]);
    // A status the node returns on a stream reaches the caller as it was sent.
    let refused = users
        .list(ListRequest {
            prefix: String::new(),
            limit: 1_000_000,
        })
        .await
        .expect_err("limit over the cap");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("cap"), "{refused:?}");

    // A gRPC service nobody serves: UNIMPLEMENTED naming it, not a hang.
    let missing = OrderServiceClient::new(channel.clone())
        .create(CreateRequest {
            username: "nobody".into(),
            item: "book".into(),
        })
        .await
        .expect_err("no order node");
    assert_eq!(missing.code(), tonic::Code::Unimplemented, "{missing:?}");
    assert!(
        missing.message().contains("order.v1.OrderService"),
        "{missing:?}"
    );

    // The gateway's own health service answers on the same port.
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(
        status.is_ok(),
        "the gateway's own health service answers: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn client_and_bidirectional_streams_pass_through_the_rpc_port() {
    use tests::probe::proto::Note;
    use tests::probe::proto::probe_service_client::ProbeServiceClient;

    let etcd = require!(Etcd::start().await);
    let (probe, gateway, client) =
        probe_behind_a_gateway(&etcd, &gateway_config("streams"), None).await;
    let mut probes = ProbeServiceClient::new(grpc_channel(&gateway.rpc).await);
    let note = |text: &str| Note { text: text.into() };

    // Client stream: every note reaches the node, the one reply comes back.
    let joined = probes
        .collect(futures::stream::iter([note("a"), note("b"), note("c")]))
        .await
        .expect("Collect through the gateway")
        .into_inner();
    assert_eq!(joined.text, "a b c");

    // Bidirectional: each reply arrives before the next note is even sent, so nothing
    // on the way waits for the end of the request.
    let (notes, outgoing) = tokio::sync::mpsc::channel(1);
    let mut replies = probes
        .chat(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("Chat through the gateway")
        .into_inner();
    for text in ["one", "two", "three"] {
        notes.send(note(text)).await.expect("the call is open");
        let reply = tokio::time::timeout(PATIENCE, replies.message())
            .await
            .expect("a reply before the next note")
            .expect("a message, not an error")
            .expect("the stream goes on");
        assert_eq!(reply.text, format!("re: {text}"));
    }
    drop(notes);
    assert!(
        replies.message().await.expect("a clean end").is_none(),
        "the reply stream ends when the request stream does"
    );

    // The same node over /api: unary works, streaming methods point to the rpc port.
    let base = format!("http://{}/api/probe", gateway.http);
    let echoed = client
        .post(&format!("{base}/Echo"), &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!((echoed.status, &echoed.body), (200, &json!({"text": "hi"})));
    let streaming = client
        .post(&format!("{base}/Collect"), &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(streaming.status, 501, "{}", streaming.text);
    probe.stop().await;
}
