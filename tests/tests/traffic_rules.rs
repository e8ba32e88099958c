//! Traffic rules in the route table: calls steered to a version or a label by a header, a
//! cookie or a query value, a weighted split between versions, and what a subset with no
//! node does, through a real gateway on etcd, on `/api`, a REST route and the rpc port.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{
    gateway_config_with, gateway_routing_to, node_on, start_gateway, wait_for_nodes,
};
use tests::http::HttpClient;
use tests::require;

/// Version 2.0.0 is the canary; its node also carries the label `color = blue`.
///
/// Sixteen callers as fast as they can go saturate a small machine, and load shedding
/// would (rightly) refuse some of them; this test counts where calls land, so it is off.
const RULES: &str = r#"
[gateway]
load_shedding = false

[[routes.probe.traffic]]
when = { header = "x-canary", equals = "1" }
to = { version = "2.0.0" }

[[routes.probe.traffic]]
when = { cookie = "color", equals = "blue" }
to = { labels = { color = "blue" } }

[[routes.probe.traffic]]
when = { query = "version", equals = "3" }
to = { version = "3.0.0" }
fallback = false

[[routes.probe.traffic]]
when = { header = "x-version", equals = "3" }
to = { version = "3.0.0" }

[[routes.probe.traffic]]
split = [{ version = "1.0.0", weight = 90 }, { version = "2.0.0", weight = 10 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn calls_go_to_the_version_or_label_their_header_cookie_or_query_names_and_the_rest_split_by_weight()
 {
    use tests::probe::proto::Note;
    use tests::probe::proto::probe_service_client::ProbeServiceClient;

    let etcd = require!(Etcd::start().await);
    let registry: std::sync::Arc<dyn registry::Registry> =
        std::sync::Arc::new(etcd.registry("go-ms").await);
    let stable = tests::probe::start_labelled(registry.clone(), "1.0.0", &[]).await;
    let canary =
        tests::probe::start_labelled(registry.clone(), "2.0.0", &[("color", "blue")]).await;
    let (gateway, client) = gateway_routing_to(
        &etcd,
        1,
        &gateway_config_with("traffic", RULES),
        "probe",
        &[stable.address.clone(), canary.address.clone()],
    )
    .await;
    let echo = format!("http://{}/api/probe/Echo", gateway.http);
    let note = Bytes::from(json!({ "text": "hi" }).to_string());
    let served_by = async |url: &str, headers: &[(&str, &str)]| {
        let reply = client
            .send("POST", url, headers, note.clone())
            .await
            .expect("a reply");
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.header("x-served-by").unwrap_or_default().to_owned()
    };

    // A header rule: every call that carries it reaches the canary, on /api and REST.
    let rest = format!("http://{}/v1/probe:echo", gateway.http);
    // The REST table follows the services within about a second of their joining.
    client
        .post_until(
            &rest,
            &json!({ "text": "hi" }),
            200,
            Duration::from_secs(60),
        )
        .await;
    for url in [&echo, &rest] {
        for _ in 0..20 {
            assert_eq!(served_by(url, &[("x-canary", "1")]).await, canary.address);
        }
    }
    // A cookie rule choosing by label.
    for _ in 0..20 {
        let cookie = [("cookie", "session=abc; color=blue")];
        assert_eq!(served_by(&echo, &cookie).await, canary.address);
    }

    // The rpc port: the header is gRPC metadata.
    let mut probes = ProbeServiceClient::new(tests::grpc::channel(&gateway.rpc).await);
    for _ in 0..20 {
        let mut request = tonic::Request::new(Note { text: "hi".into() });
        request
            .metadata_mut()
            .insert("x-canary", "1".parse().expect("metadata"));
        let reply = probes
            .echo(request)
            .await
            .expect("Echo through the rpc port");
        let by = reply
            .metadata()
            .get("x-served-by")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        assert_eq!(by.as_deref(), Some(canary.address.as_str()));
    }

    // A subset no node is in: UNAVAILABLE when its rule says no fallback, saying why...
    let refused = client
        .send("POST", &format!("{echo}?version=3"), &[], note.clone())
        .await
        .expect("a reply");
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.body["code"], 14);
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("version 3.0.0") && m.contains("fallback = false")),
        "{}",
        refused.text
    );
    // ...and the rest of the service takes the call when it may fall back.
    let fallen_back = served_by(&echo, &[("x-version", "3")]).await;
    assert!(
        [&stable.address, &canary.address].contains(&&fallen_back),
        "{fallen_back}"
    );

    // The rest are split 90/10 by weight: 10,000 calls, 16 at a time.
    let calls = 10_000;
    let workers: Vec<_> = (0..16)
        .map(|worker| {
            let (client, echo, note) = (client.clone(), echo.clone(), note.clone());
            let share = calls / 16 + usize::from(worker < calls % 16);
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(share);
                for _ in 0..share {
                    let reply = client
                        .send("POST", &echo, &[], note.clone())
                        .await
                        .expect("a reply");
                    assert_eq!(reply.status, 200, "{}", reply.text);
                    seen.push(reply.header("x-served-by").unwrap_or_default().to_owned());
                }
                seen
            })
        })
        .collect();
    let mut to_canary = 0;
    for worker in workers {
        let seen = worker.await.expect("the worker");
        to_canary += seen.iter().filter(|by| **by == canary.address).count();
    }
    // 10% of 10,000: 1,000, standard deviation 30; the bounds are five of them.
    assert!(
        (850..=1150).contains(&to_canary),
        "{to_canary} of {calls} calls reached the canary"
    );

    // The canary leaves: its header's calls fall back to the stable version.
    canary.stop().await;
    wait_for_nodes(
        &client,
        &gateway,
        "probe",
        std::slice::from_ref(&stable.address),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served_by(&echo, &[("x-canary", "1")]).await, stable.address);

    // The rules are in the route table the operator reads.
    let routes = client
        .get(&format!("http://{}/admin/routes", gateway.admin))
        .await
        .expect("the routes view");
    let shown = routes.text;
    assert!(
        shown.contains("x-canary") && shown.contains("2.0.0"),
        "{shown}"
    );

    gateway.node.sigterm().await;
    stable.stop().await;
}

#[tokio::test]
async fn a_route_table_with_a_rule_that_cannot_work_is_refused_naming_it() {
    let config = gateway_config_with(
        "traffic-refused",
        "[[routes.probe.traffic]]\nwhen = { header = \"X-Canary\" }\nto = { version = \"2.0.0\" }\n",
    );
    let node = tests::process::Node::start(
        "gateway",
        "gateway-refused",
        &["--config", config.to_str().expect("a path")],
        &[],
    );
    let line = node
        .wait_for("routes.probe.traffic[0].when", Duration::from_secs(60))
        .await;
    assert!(line.contains("lower case"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_sticky_header_keeps_each_caller_on_one_node_and_a_leaving_node_moves_only_its_own() {
    let etcd = require!(Etcd::start().await);
    let registry: std::sync::Arc<dyn registry::Registry> =
        std::sync::Arc::new(etcd.registry("go-ms").await);
    let mut probes = Vec::new();
    for _ in 0..3 {
        probes.push(tests::probe::start_labelled(registry.clone(), "1.0.0", &[]).await);
    }
    let config = gateway_config_with(
        "sticky",
        "[routes.probe]\nsticky = { header = \"x-user\" }\n",
    );
    let addresses: Vec<String> = probes.iter().map(|p| p.address.clone()).collect();
    let (gateway, client) = gateway_routing_to(&etcd, 1, &config, "probe", &addresses).await;
    let echo = format!("http://{}/api/probe/Echo", gateway.http);
    let note = Bytes::from(json!({ "text": "hi" }).to_string());
    let owners = async |users: usize| {
        let mut owners = Vec::new();
        for user in 0..users {
            let name = format!("user-{user}");
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..5 {
                let reply = client
                    .send("POST", &echo, &[("x-user", &name)], note.clone())
                    .await
                    .expect("a reply");
                assert_eq!(reply.status, 200, "{}", reply.text);
                seen.insert(reply.header("x-served-by").unwrap_or_default().to_owned());
            }
            assert_eq!(seen.len(), 1, "{name} reached {seen:?}");
            owners.extend(seen);
        }
        owners
    };

    let before = owners(60).await;
    let used: std::collections::BTreeSet<_> = before.iter().collect();
    assert_eq!(used.len(), 3, "60 callers all on {used:?}");

    // One node leaves: its callers move, every other caller stays where it was.
    let leaving = probes.remove(0);
    let gone = leaving.address.clone();
    leaving.stop().await;
    let left: Vec<String> = probes.iter().map(|p| p.address.clone()).collect();
    wait_for_nodes(&client, &gateway, "probe", &left).await;
    let after = owners(60).await;
    for (was, is) in before.iter().zip(&after) {
        if *was != gone {
            assert_eq!(was, is, "a caller of a node that stayed moved");
        }
        assert_ne!(*is, gone);
    }

    gateway.node.sigterm().await;
    for probe in probes {
        probe.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn labels_a_node_is_configured_with_are_in_its_registration_and_rules_choose_by_them() {
    let etcd = require!(Etcd::start().await);
    let plain = node_on(&etcd, "user", 1, &[]);
    let blue = node_on(&etcd, "user", 2, &[("MS_LABELS__COLOR", "blue")]);
    let (plain_address, blue_address) = (plain.listening("rpc").await, blue.listening("rpc").await);
    let config = gateway_config_with(
        "labels",
        "[[routes.user.traffic]]\nwhen = { header = \"x-color\", equals = \"blue\" }\n\
         to = { labels = { color = \"blue\" } }\n",
    );
    let (gateway, client) = gateway_routing_to(
        &etcd,
        1,
        &config,
        "user",
        &[plain_address.clone(), blue_address.clone()],
    )
    .await;

    let cluster = client
        .get(&format!("http://{}/admin/cluster", gateway.admin))
        .await
        .expect("the cluster view");
    let nodes = cluster.body["services"]["user"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let blue_node = nodes
        .iter()
        .find(|node| node["address"] == blue_address.as_str())
        .expect("the blue node");
    assert_eq!(blue_node["metadata"]["color"], "blue", "{blue_node}");

    let exists = format!("http://{}/api/user/Exists", gateway.http);
    let body = Bytes::from(json!({ "username": "nobody" }).to_string());
    for _ in 0..20 {
        let reply = client
            .send("POST", &exists, &[("x-color", "blue")], body.clone())
            .await
            .expect("a reply");
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("x-served-by"), Some(blue_address.as_str()));
    }

    gateway.node.sigterm().await;
    plain.sigterm().await;
    blue.sigterm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_header_that_steers_calls_goes_on_with_the_calls_a_service_makes_so_its_rules_apply_there_too()
 {
    let etcd = require!(Etcd::start().await);
    // The stored route table: order's own calls to user follow it as the gateway does.
    let table = "[[routes.user.traffic]]\nwhen = { header = \"x-color\", equals = \"blue\" }\n\
                 to = { labels = { color = \"blue\" } }\nfallback = false\n";
    etcd.client()
        .await
        .put("go-ms/config/gateway/routes", table, None)
        .await
        .expect("the route table stored");
    let plain = node_on(&etcd, "user", 1, &[]);
    let order = node_on(&etcd, "order", 1, &[]);
    let (plain_address, order_address) =
        (plain.listening("rpc").await, order.listening("rpc").await);
    let gateway = start_gateway(&etcd, 1, &gateway_config_with("carried", "")).await;
    let client = HttpClient::default();
    for (service, address) in [("user", &plain_address), ("order", &order_address)] {
        wait_for_nodes(&client, &gateway, service, std::slice::from_ref(address)).await;
    }
    let account = json!({ "username": "cora", "password": "carried-pass" });
    client
        .post_until(
            &format!("http://{}/api/user/Register", gateway.http),
            &account,
            200,
            Duration::from_secs(60),
        )
        .await;
    let create = format!("http://{}/api/order/Create", gateway.http);
    let order_body = Bytes::from(json!({ "username": "cora", "item": "tea" }).to_string());

    // Without the header, order's call to user goes to any user node.
    let plain_call = client
        .send("POST", &create, &[], order_body.clone())
        .await
        .expect("a reply");
    assert_eq!(plain_call.status, 200, "{}", plain_call.text);

    // With it, order's call to user must go to a blue node, and there is none: the
    // header reached order, and order's client applied user's rule.
    let steered = client
        .send("POST", &create, &[("x-color", "blue")], order_body.clone())
        .await
        .expect("a reply");
    assert_ne!(steered.status, 200, "{}", steered.text);
    assert!(steered.text.contains("color=blue"), "{}", steered.text);

    // A blue user node joins: the steered orders go through, to it.
    let blue = node_on(&etcd, "user", 2, &[("MS_LABELS__COLOR", "blue")]);
    let _ = blue.listening("rpc").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = client
            .send("POST", &create, &[("x-color", "blue")], order_body.clone())
            .await
            .expect("a reply");
        if reply.status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never reached the blue user node: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    gateway.node.sigterm().await;
    order.sigterm().await;
    plain.sigterm().await;
    blue.sigterm().await;
}
