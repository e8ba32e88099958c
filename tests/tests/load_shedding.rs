//! Adaptive load shedding through a real gateway on etcd: a flood of a method with a
//! fixed capacity (the probe's `Busy`: two workers of 50 ms per node) is refused at once
//! past the limit the gateway learnt, with 503 and `Retry-After`, while the calls it lets
//! through keep near their unloaded time and another service's calls keep being answered;
//! the same flood through a gateway with `load_shedding = false` queues instead.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{Gateway, gateway_config_with, start_gateway, start_user, wait_for_nodes};
use tests::http::HttpClient;
use tests::probe::{BUSY_CALLS, BUSY_FOR, BUSY_WORKERS};
use tests::require;
use tokio::time::Instant;

/// Callers of `Busy` at once: ten times what two nodes' four workers take.
const CALLERS: usize = 10 * 2 * BUSY_WORKERS;
/// How long each flood lasts.
const FLOOD: Duration = Duration::from_secs(4);

#[derive(Default, Debug)]
struct Flood {
    /// How long each answered call took.
    answered: Vec<Duration>,
    /// Refusals that said when to come back: 503, `Retry-After: 1`, UNAVAILABLE (14).
    shed: usize,
    /// Anything else: the test fails on it.
    other: Vec<String>,
}

impl Flood {
    fn median(&mut self) -> Duration {
        self.answered.sort();
        self.answered
            .get(self.answered.len() / 2)
            .copied()
            .unwrap_or_default()
    }
}

/// [`CALLERS`] callers of `Busy` on `gateway`, each calling again once answered (or
/// 20 ms after a refusal, as a client told to come back later would), for [`FLOOD`].
async fn flood(client: &HttpClient, gateway: &Gateway) -> Flood {
    let url = format!("http://{}/api/probe/Busy", gateway.http);
    let body = Bytes::from(json!({ "text": "work" }).to_string());
    let seen = Arc::new(std::sync::Mutex::new(Flood::default()));
    let ends = Instant::now() + FLOOD;
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, url, body, seen) =
                (client.clone(), url.clone(), body.clone(), seen.clone());
            tokio::spawn(async move {
                while Instant::now() < ends {
                    let started = Instant::now();
                    let reply = client.send("POST", &url, &[], body.clone()).await;
                    let took = started.elapsed();
                    let refused = {
                        let mut seen = seen.lock().unwrap();
                        match reply {
                            Ok(reply) if reply.status == 200 => {
                                seen.answered.push(took);
                                false
                            }
                            Ok(reply)
                                if reply.status == 503
                                    && reply.header("retry-after") == Some("1")
                                    && reply.body["code"] == 14 =>
                            {
                                seen.shed += 1;
                                true
                            }
                            Ok(reply) => {
                                seen.other.push(format!("{} {}", reply.status, reply.text));
                                false
                            }
                            Err(error) => {
                                seen.other.push(error);
                                false
                            }
                        }
                    };
                    if refused {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("a caller");
    }
    std::mem::take(&mut *seen.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_flood_of_one_method_is_shed_at_once_past_its_learnt_limit_and_the_rest_keep_their_latency()
 {
    let etcd = require!(Etcd::start().await);
    let registry: Arc<dyn registry::Registry> = Arc::new(etcd.registry("go-ms").await);
    let probes = [
        tests::probe::start(registry.clone(), None).await,
        tests::probe::start(registry.clone(), None).await,
    ];
    let probe_addresses: Vec<String> = probes.iter().map(|p| p.address.clone()).collect();
    let (_user, user_address) = start_user(&etcd, 1).await;
    let shedding = start_gateway(&etcd, 1, &gateway_config_with("shed-on", "")).await;
    let queueing = start_gateway(
        &etcd,
        2,
        &gateway_config_with("shed-off", "[gateway]\nload_shedding = false\n"),
    )
    .await;
    let client = HttpClient::default();
    for gateway in [&shedding, &queueing] {
        wait_for_nodes(&client, gateway, "probe", &probe_addresses).await;
        wait_for_nodes(
            &client,
            gateway,
            "user",
            std::slice::from_ref(&user_address),
        )
        .await;
    }

    // Another service's calls, one after another through the flood.
    let exists = format!("http://{}/api/user/Exists", shedding.http);
    let beside = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let ends = Instant::now() + FLOOD;
            let mut calls = 0;
            while Instant::now() < ends {
                calls += 1;
                match client.post(&exists, &json!({ "username": "ada" })).await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => failures.push(format!("{} {}", reply.status, reply.text)),
                    Err(error) => failures.push(error),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (calls, failures)
        })
    };
    let reached_before = BUSY_CALLS.load(Ordering::SeqCst);
    let mut shed = flood(&client, &shedding).await;
    let reached = BUSY_CALLS.load(Ordering::SeqCst) - reached_before;
    let (beside_calls, beside_failures) = beside.await.expect("the other service's caller");

    assert!(shed.other.is_empty(), "{:?}", shed.other);
    assert!(shed.shed > 0, "nothing was shed: {shed:?}");
    // A refused call reached no node: the nodes saw exactly the calls answered.
    assert_eq!(reached, shed.answered.len());
    // Unloaded, a call takes 50 ms; ten callers per worker queueing would take 500 ms.
    let median = shed.median();
    eprintln!(
        "with shedding: {} answered (median {median:?}), {} shed; the other service: {beside_calls} calls",
        shed.answered.len(),
        shed.shed
    );
    assert!(
        median < BUSY_FOR * 5,
        "admitted calls took {median:?} (of {} answered)",
        shed.answered.len()
    );
    assert!(
        beside_calls > 10 && beside_failures.is_empty(),
        "{beside_failures:?}"
    );

    // What the gateway learnt, and what it counted.
    let cluster = client
        .get(&format!("http://{}/admin/cluster", shedding.admin))
        .await
        .expect("/admin/cluster");
    let busy = &cluster.body["services"]["probe"]["concurrency_limits"]["Busy"];
    let limit = busy["limit"].as_u64().unwrap_or(u64::MAX);
    assert!(limit < 100, "{busy}");
    assert!(
        busy["unloaded_ms"].as_f64().unwrap_or_default() >= 50.0,
        "{busy}"
    );
    let metrics = client
        .get(&format!("http://{}/metrics", shedding.admin))
        .await
        .expect("/metrics")
        .text;
    let line = metrics
        .lines()
        .find(|line| {
            line.starts_with("rustms_gateway_shed_total")
                && line.contains("service=\"probe\"")
                && line.contains("method=\"Busy\"")
        })
        .unwrap_or_default();
    let counted: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        counted >= shed.shed as f64,
        "{line:?} for {} shed",
        shed.shed
    );

    // The same flood without shedding: nothing is refused, everything waits its turn.
    let mut queued = flood(&client, &queueing).await;
    assert!(queued.other.is_empty(), "{:?}", queued.other);
    assert_eq!(queued.shed, 0);
    let median = queued.median();
    eprintln!(
        "without: {} answered (median {median:?})",
        queued.answered.len()
    );
    assert!(
        median >= BUSY_FOR * 4,
        "without shedding, calls took {median:?}: they should have queued"
    );
}
