//! A route's mirror through a real gateway on etcd: every call to the stable version is
//! also copied to the canary, whose answers are dropped and counted; a canary that takes
//! seconds to answer adds nothing to the callers' time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tests::etcd::Etcd;
use tests::gateway::{gateway_config_with, gateway_routing_to};
use tests::require;
use tokio::time::Instant;

/// Callers reach 1.0.0 only; each call is copied to 2.0.0, which is slow.
const ROUTES: &str = r#"
[[routes.probe.traffic]]
to = { version = "1.0.0" }

[routes.probe.mirror]
to = { version = "2.0.0" }
percent = 100
"#;

/// How long the mirrored version takes to answer.
const SLOW: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn every_call_is_copied_to_the_mirror_whose_slowness_never_reaches_the_caller() {
    let etcd = require!(Etcd::start().await);
    let registry: Arc<dyn registry::Registry> = Arc::new(etcd.registry("go-ms").await);
    let (stable, stable_calls) =
        tests::probe::start_slow(registry.clone(), "1.0.0", Duration::ZERO).await;
    let (canary, canary_calls) = tests::probe::start_slow(registry.clone(), "2.0.0", SLOW).await;
    let (gateway, client) = gateway_routing_to(
        &etcd,
        1,
        &gateway_config_with("mirror", ROUTES),
        "probe",
        &[stable.address.clone(), canary.address.clone()],
    )
    .await;

    let echo = format!("http://{}/api/probe/Echo", gateway.http);
    const CALLS: usize = 20;
    let started = Instant::now();
    for n in 0..CALLS {
        let reply = client
            .post(&echo, &json!({ "text": format!("call {n}") }))
            .await
            .expect("a reply");
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["text"], format!("call {n}"));
        assert_eq!(reply.header("x-served-by"), Some(stable.address.as_str()));
    }
    // Twenty calls one after another, each copied to a version that takes 3 s: had any
    // caller waited for its copy, this would have taken a minute.
    let took = started.elapsed();
    assert!(took < SLOW * 3, "the callers took {took:?}");
    assert_eq!(stable_calls.load(Ordering::SeqCst), CALLS);

    // Every copy reached the canary, and was counted once answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = client
            .get(&format!("http://{}/metrics", gateway.admin))
            .await
            .expect("/metrics")
            .text;
        let answered: f64 = metrics
            .lines()
            .find(|line| {
                line.starts_with("rustms_gateway_mirrored_total")
                    && line.contains("service=\"probe\"")
                    && line.contains("outcome=\"ok\"")
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        if answered >= CALLS as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copies answered: {answered} of {CALLS}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(canary_calls.load(Ordering::SeqCst), CALLS);
}
