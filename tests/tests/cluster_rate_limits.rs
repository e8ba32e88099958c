//! A route's rate limit held by a cluster of real gateways on etcd with no shared store:
//! three gateways, each offered twice its share, let 300 calls a second through between
//! them; after one is killed (`kill -9`) and its lease runs out, the other two split the
//! limit again and still let 300 a second through. Callers are told their bucket in the
//! `RateLimit-*` headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{Gateway, gateway_config_with, start_gateway_with, wait_for_nodes};
use tests::http::HttpClient;
use tests::require;
use tokio::time::{Instant, MissedTickBehavior};

/// The cluster's limit, in calls a second.
const LIMIT: f64 = 300.0;
/// How long each measured stretch lasts, after a second of warm-up that empties the
/// buckets of their burst.
const MEASURED: Duration = Duration::from_secs(6);
const WARM_UP: Duration = Duration::from_secs(1);

/// The route: 300/s for the whole cluster, a burst of 30 (10 a gateway, 15 with two).
const ROUTES: &str = "[routes.probe]\nrate_limit = { per_second = 300, burst = 30 }\n";

/// A gateway whose lease outlives a `kill -9` by at most two seconds.
async fn start_gateway(etcd: &Etcd, n: usize, config: &std::path::Path) -> Gateway {
    start_gateway_with(etcd, n, config, &[("MS_REGISTRY__TTL", "2s")]).await
}

/// What the gateways let through while each was offered `per_gateway` calls a second.
#[derive(Debug, Default)]
struct Offered {
    answered: AtomicUsize,
    limited: AtomicUsize,
    other: std::sync::Mutex<Vec<String>>,
}

/// Offers each of `gateways` `per_gateway` calls a second of `probe.Echo`, open loop, for
/// the warm-up and [`MEASURED`]; counts what came back for the calls sent after the
/// warm-up.
async fn offer(client: &HttpClient, gateways: &[&Gateway], per_gateway: u32) -> Arc<Offered> {
    let seen = Arc::new(Offered::default());
    let body = Bytes::from(json!({ "text": "hi" }).to_string());
    let started = Instant::now();
    let counted_from = started + WARM_UP;
    let ends = counted_from + MEASURED;
    let mut senders = Vec::new();
    for gateway in gateways {
        let url = format!("http://{}/api/probe/Echo", gateway.http);
        let (client, body, seen) = (client.clone(), body.clone(), seen.clone());
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_gateway);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let mut calls = tokio::task::JoinSet::new();
            loop {
                let at = tick.tick().await;
                if at >= ends {
                    break;
                }
                let (client, url, body, seen) =
                    (client.clone(), url.clone(), body.clone(), seen.clone());
                calls.spawn(async move {
                    let reply = client.send("POST", &url, &[], body).await;
                    if at < counted_from {
                        return;
                    }
                    match reply {
                        Ok(reply) if reply.status == 200 => {
                            seen.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(reply)
                            if reply.status == 429
                                && reply.header("retry-after").is_some()
                                && reply.header("ratelimit-remaining") == Some("0") =>
                        {
                            seen.limited.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(reply) => seen
                            .other
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", reply.status, reply.text)),
                        Err(error) => seen.other.lock().unwrap().push(error),
                    }
                });
            }
            while calls.join_next().await.is_some() {}
        }));
    }
    for sender in senders {
        sender.await.expect("a sender");
    }
    seen
}

/// Asserts the gateways let through the cluster's limit, ±10%, over [`MEASURED`].
fn assert_the_cluster_held_its_limit(seen: &Offered, what: &str) {
    let other = seen.other.lock().unwrap();
    assert!(other.is_empty(), "{what}: unexpected replies: {other:?}");
    let answered = seen.answered.load(Ordering::Relaxed) as f64;
    let per_second = answered / MEASURED.as_secs_f64();
    eprintln!(
        "{what}: {per_second:.1} calls/s let through, {} limited",
        seen.limited.load(Ordering::Relaxed)
    );
    assert!(
        (LIMIT * 0.9..=LIMIT * 1.1).contains(&per_second),
        "{what}: {per_second:.0} calls/s let through (limited {}), not {LIMIT} ±10%",
        seen.limited.load(Ordering::Relaxed)
    );
    assert!(
        seen.limited.load(Ordering::Relaxed) > 0,
        "{what}: offered twice the limit, nothing was refused"
    );
}

/// The probe's rate limit as `gateway`'s `/admin/cluster` shows it.
async fn rate_limit_on(client: &HttpClient, gateway: &Gateway) -> serde_json::Value {
    let admin = client
        .get(&format!("http://{}/admin/cluster", gateway.admin))
        .await
        .expect("/admin/cluster");
    admin.body["services"]["probe"]["rate_limit"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn three_gateways_hold_a_cluster_limit_and_the_two_left_after_a_kill_still_do() {
    let etcd = require!(Etcd::start().await);
    let registry: Arc<dyn registry::Registry> = Arc::new(etcd.registry("go-ms").await);
    let probe = tests::probe::start(registry, None).await;
    let config = gateway_config_with("cluster-limit", ROUTES);
    let mut gateways = Vec::new();
    for n in 1..=3 {
        gateways.push(start_gateway(&etcd, n, &config).await);
    }
    let client = HttpClient::default();
    let addresses: Vec<String> = gateways.iter().map(|g| g.rpc.clone()).collect();
    for gateway in &gateways {
        wait_for_nodes(
            &client,
            gateway,
            "probe",
            std::slice::from_ref(&probe.address),
        )
        .await;
        wait_for_nodes(&client, gateway, "gateway", &addresses).await;
    }

    // One call says what the caller's bucket holds: the cluster's burst, and this
    // gateway's room times the three gateways.
    let reply = client
        .post(
            &format!("http://{}/api/probe/Echo", gateways[0].http),
            &json!({ "text": "hi" }),
        )
        .await
        .expect("a reply");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("ratelimit-limit"), Some("30"));
    assert_eq!(reply.header("ratelimit-remaining"), Some("27"));
    let limit = rate_limit_on(&client, &gateways[0]).await;
    assert_eq!(limit["gateways"], 3, "{limit}");
    assert_eq!(limit["this_gateway_per_second"], 100.0, "{limit}");

    // Each gateway is offered 200/s, twice its share of 100.
    let all: Vec<&Gateway> = gateways.iter().collect();
    let seen = offer(&client, &all, 200).await;
    assert_the_cluster_held_its_limit(&seen, "three gateways");

    let mut killed = gateways.pop().expect("three gateways");
    killed.node.sigkill().await;
    let left: Vec<String> = gateways.iter().map(|g| g.rpc.clone()).collect();
    // Within the killed gateway's lease (2 s), both see it gone.
    for gateway in &gateways {
        wait_for_nodes(&client, gateway, "gateway", &left).await;
    }

    // Each of the two is offered 300/s, twice its new share of 150.
    let two: Vec<&Gateway> = gateways.iter().collect();
    let seen = offer(&client, &two, 300).await;
    assert_the_cluster_held_its_limit(&seen, "two gateways after one was killed");
    let limit = rate_limit_on(&client, &gateways[0]).await;
    assert_eq!(limit["gateways"], 2, "{limit}");
    assert_eq!(limit["this_gateway_per_second"], 150.0, "{limit}");
}
