//! Per-service routes, on the real binaries and a real etcd: a route table pushed to etcd
//! reaches every running gateway (a bad one is refused), and the routes' JWT, call
//! credential, rate limit and CORS settings guard the services.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{
    Gateway, PATIENCE, api, gateway_config, gateway_config_with, start_gateway, start_user,
    wait_for_nodes,
};
use tests::grpc::channel as grpc_channel;
use tests::http::HttpClient;
use tests::process::Node;
use tests::process::run_to_end;
use tests::require;
use tokio::time::Instant;

async fn route_timeout(client: &HttpClient, gateway: &Gateway) -> Option<String> {
    let reply = client
        .get(&format!("http://{}/admin/routes", gateway.admin))
        .await
        .ok()?;
    reply.body["routes"]["user"]["timeout"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_route_pushed_to_etcd_reaches_three_running_gateways_and_a_bad_one_is_refused() {
    let etcd = require!(Etcd::start().await);
    let config = gateway_config("routes");
    let (_user, address) = start_user(&etcd, 1).await;
    let mut gateways = Vec::new();
    for n in 1..=3 {
        gateways.push(start_gateway(&etcd, n, &config).await);
    }
    let client = HttpClient::default();
    for gateway in &gateways {
        wait_for_nodes(&client, gateway, "user", std::slice::from_ref(&address)).await;
        assert_eq!(route_timeout(&client, gateway).await.as_deref(), Some("5s"));
    }
    let dir = config.parent().unwrap();
    let push = |text: &'static str, name: &'static str| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let etcd_addr = etcd.etcd_addr();
        async move {
            run_to_end(
                "gateway",
                &[
                    "--etcd-addr",
                    &etcd_addr,
                    "routes",
                    "push",
                    file.to_str().unwrap(),
                ],
                &[],
                PATIENCE,
            )
            .await
        }
    };

    let pushed = push(
        "[routes.user]\ntimeout = \"1ns\"\nidempotent = [\"Exists\"]\n",
        "tight.toml",
    )
    .await;
    assert_eq!(pushed.code, Some(0), "{}", pushed.stderr);
    // How fast is the benchmark's business; here a loaded CI machine gets all its patience.
    let after_push = Instant::now();
    for gateway in &gateways {
        while route_timeout(&client, gateway).await.as_deref() != Some("1ns") {
            assert!(
                after_push.elapsed() < PATIENCE,
                "gateway never applied the route"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "measured: three gateways applied the pushed route in {:?}",
        after_push.elapsed()
    );
    // The new timeout is really in force: a 1 ns deadline ends in 504, whether the
    // gateway's timer or the node (told by grpc-timeout) notices first.
    for gateway in &gateways {
        for _ in 0..10 {
            let reply = client
                .post(&api(gateway, "Exists"), &json!({"username": "x"}))
                .await
                .unwrap();
            assert_eq!(reply.status, 504, "{}", reply.text);
            assert_eq!(reply.body["code"], json!(4));
        }
    }

    // An invalid table is refused whole; the gateways keep the last good one.
    let refused = push("[routes.user]\ntimeout = \"0s\"\n", "bad.toml").await;
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("routes.user.timeout"),
        "{}",
        refused.stderr
    );
    let shown = run_to_end(
        "gateway",
        &["--etcd-addr", &etcd.etcd_addr(), "routes", "show"],
        &[],
        PATIENCE,
    )
    .await;
    assert!(
        shown.stdout.contains("timeout = \"1ns\""),
        "{}",
        shown.stdout
    );
    for gateway in &gateways {
        assert_eq!(
            route_timeout(&client, gateway).await.as_deref(),
            Some("1ns")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn jwt_routes_call_credentials_rate_limits_and_cors_guard_the_services() {
    use services::proto::order::v1::CreateRequest;
    use services::proto::order::v1::order_service_client::OrderServiceClient;
    use services::proto::user::v1::ExistsRequest;
    use services::proto::user::v1::user_service_client::UserServiceClient;

    let etcd = require!(Etcd::start().await);
    let config = gateway_config_with(
        "guards",
        "[gateway]\ncors_allow_origins = [\"https://app.example\"]\n\
         [gateway.jwt]\nhs256_secret = \"gateway-test-secret\"\nissuer = \"rust-ms/user\"\n\
         [routes.user]\njwt = true\nforward_claims = [\"sub\"]\n\
         rate_limit = { per_second = 0.1, burst = 4, per = \"client_ip\" }\n\
         [routes.user.methods.Register]\njwt = false\n\
         [routes.user.methods.Login]\njwt = false\n\
         [routes.order]\njwt = true\nforward_claims = [\"sub\"]\n",
    );
    let key = ("MS_SECURITY__CALL_KEY", "cluster-call-key");
    let order = Node::start(
        "order",
        "order-1",
        &[
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd.etcd_addr(),
            "--advertise-host",
            "127.0.0.1",
        ],
        &[key],
    );
    let order_address = order.listening("rpc").await;
    let user = Node::start(
        "user",
        "user-1",
        &[
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd.etcd_addr(),
            "--advertise-host",
            "127.0.0.1",
        ],
        &[("MS_USER__TOKEN_SECRET", "gateway-test-secret"), key],
    );
    let address = user.listening("rpc").await;
    let gateway_node = Node::start(
        "gateway",
        "gateway-1",
        &[
            "--config",
            config.to_str().unwrap(),
            "--etcd-addr",
            &etcd.etcd_addr(),
        ],
        &[key],
    );
    let gateway = Gateway {
        http: gateway_node.listening("http").await,
        rpc: gateway_node.listening("rpc").await,
        admin: gateway_node.listening("admin").await,
        node: gateway_node,
    };
    let client = HttpClient::default();
    wait_for_nodes(&client, &gateway, "user", std::slice::from_ref(&address)).await;
    wait_for_nodes(
        &client,
        &gateway,
        "order",
        std::slice::from_ref(&order_address),
    )
    .await;

    // Public methods pass without a token; the gateway's signed calls are accepted.
    let body = json!({"username": "erin", "password": "erin-pass"});
    let registered = client
        .post(&api(&gateway, "Register"), &body)
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{}", registered.text);
    let login = client.post(&api(&gateway, "Login"), &body).await.unwrap();
    let token = login.body["token"].as_str().expect("token").to_owned();

    // A protected method: 401 without a token, 200 with the one Login issued.
    let exists = json!({"username": "erin"});
    let refused = client
        .post(&api(&gateway, "Exists"), &exists)
        .await
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (401, json!(16)),
        "{}",
        refused.text
    );
    let bearer = format!("Bearer {token}");
    let allowed = client
        .post_authorized(&api(&gateway, "Exists"), &bearer, &exists)
        .await
        .unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    let forged = client
        .post_authorized(&api(&gateway, "Exists"), "Bearer a.b.c", &exists)
        .await
        .unwrap();
    assert_eq!(forged.status, 401, "{}", forged.text);

    // The verified subject reaches the order service, which lets one order only as
    // oneself; order's own call to user carries the cluster's credential.
    let create = |username: &str| json!({"username": username, "item": "book"});
    let orders = format!("http://{}/api/order/Create", gateway.http);
    let own = client
        .post_authorized(&orders, &bearer, &create("erin"))
        .await
        .unwrap();
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.body["order"]["username"], json!("erin"));
    let others = client
        .post_authorized(&orders, &bearer, &create("frank"))
        .await
        .unwrap();
    assert_eq!(
        (others.status, others.body["code"].clone()),
        (403, json!(7)),
        "{}",
        others.text
    );

    // The burst of 4 is spent (Register, Login, one Exists passed; refused calls spent none
    // or one): within a few calls the limit answers 429 with Retry-After.
    let mut limited = None;
    for _ in 0..6 {
        let reply = client
            .post_authorized(&api(&gateway, "Exists"), &bearer, &exists)
            .await
            .unwrap();
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("the rate limit answered 429");
    assert_eq!(limited.body["code"], json!(8));
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    // The caller is told its bucket: one gateway, so the cluster's figures are its own.
    assert_eq!(limited.header("ratelimit-limit"), Some("4"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert!(limited.header("ratelimit-reset").is_some());

    // Native gRPC on the rpc port passes the same route: no token, no call; and the
    // same rate limit.
    let through = grpc_channel(&gateway.rpc).await;
    let exists_with = |authorization: Option<&str>| {
        let mut request = tonic::Request::new(ExistsRequest {
            username: "erin".into(),
        });
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    };
    let no_token = UserServiceClient::new(through.clone())
        .exists(exists_with(None))
        .await
        .expect_err("a JWT route over the rpc port without a token");
    assert_eq!(
        no_token.code(),
        tonic::Code::Unauthenticated,
        "{no_token:?}"
    );
    // The limit keys by the client's address, and this client spent its bucket on
    // `/api` (a call's room comes back in 10 s): its first call here is refused too.
    let limited = UserServiceClient::new(through.clone())
        .exists(exists_with(Some(&bearer)))
        .await
        .expect_err("the rate limit refused an rpc port call from the same address");
    assert_eq!(
        limited.code(),
        tonic::Code::ResourceExhausted,
        "{limited:?}"
    );
    assert!(limited.message().contains("retry in"), "{limited:?}");

    // CORS preflight for an allowed origin.
    let preflight = client
        .send(
            "OPTIONS",
            &api(&gateway, "Exists"),
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    // A direct call without the cluster's credential is refused; health stays open.
    let channel = grpc_channel(&address).await;
    let direct = UserServiceClient::new(channel.clone())
        .exists(ExistsRequest {
            username: "erin".into(),
        })
        .await
        .expect_err("unsigned direct call");
    assert_eq!(direct.code(), tonic::Code::Unauthenticated, "{direct:?}");
    // The refusal is one of the node's calls, counted where an operator looks.
    let user_metrics = format!("http://{}/metrics", user.listening("admin").await);
    let served = client
        .get(&user_metrics)
        .await
        .expect("the user node's metrics");
    let refused = tests::metrics::sum(
        &served.text,
        "rustms_server_requests_total",
        &[
            ("method", "/user.v1.UserService/Exists"),
            ("grpc_code", "UNAUTHENTICATED"),
        ],
    );
    assert_eq!(refused, 1.0, "{}", served.text);
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health checks need no credential");

    // Through the gateway's rpc port the call is signed on the way and answered, with
    // the token's subject forwarded. A caller cannot pose as another subject: its own
    // x-jwt-* metadata is dropped, the verified one put in its place.
    let create_as = |username: &str, posed_subject: &str| {
        let mut request = tonic::Request::new(CreateRequest {
            username: username.into(),
            item: "book".into(),
        });
        let metadata = request.metadata_mut();
        metadata.insert("authorization", bearer.parse().unwrap());
        metadata.insert("x-jwt-sub", posed_subject.parse().unwrap());
        request
    };
    let mut orders = OrderServiceClient::new(through);
    orders
        .create(create_as("erin", "frank"))
        .await
        .expect("signed by the gateway, erin orders as erin");
    let denied = orders
        .create(create_as("frank", "frank"))
        .await
        .expect_err("erin's token cannot order for frank");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
}
