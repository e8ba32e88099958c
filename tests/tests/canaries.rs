//! Self-driving canaries on two real gateways and etcd. A route table pushed with a canary
//! starts it at its first step; the gateways count what each version answered, publish
//! it in etcd, and the one elected writes each decision into the stored table. A canary
//! whose calls fail past its error budget is rolled back within its step's interval; one
//! that holds up is promoted, step by step, to all the calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tests::etcd::Etcd;
use tests::gateway::{Gateway, PATIENCE, gateway_config_with, start_gateway_with, wait_for_nodes};
use tests::http::HttpClient;
use tests::process::run_to_end;
use tests::require;
use tokio::time::Instant;

/// Two gateways, each leasing two seconds: a stopped one's reports and leadership go fast.
async fn two_gateways(etcd: &Etcd, tag: &str, probes: &[String]) -> (Vec<Gateway>, HttpClient) {
    let config = gateway_config_with(tag, "");
    let mut gateways = Vec::new();
    for n in 1..=2 {
        gateways.push(start_gateway_with(etcd, n, &config, &[("MS_REGISTRY__TTL", "2s")]).await);
    }
    let client = HttpClient::default();
    for gateway in &gateways {
        wait_for_nodes(&client, gateway, "probe", probes).await;
    }
    (gateways, client)
}

/// A stable 1.0.0 probe beside `canary` (already registered), both behind two gateways
/// that callers keep calling: the stable node, the gateways, a client, and the callers.
async fn scene(
    etcd: &Etcd,
    registry: &Arc<dyn registry::Registry>,
    tag: &str,
    canary: &str,
) -> (
    tests::in_process::InProcessNode,
    Vec<Gateway>,
    HttpClient,
    Callers,
) {
    let (stable, _) = tests::probe::start_slow(registry.clone(), "1.0.0", Duration::ZERO).await;
    let probes = [stable.address.clone(), canary.to_owned()];
    let (gateways, client) = two_gateways(etcd, tag, &probes).await;
    let callers = Callers::start(&client, &gateways);
    (stable, gateways, client, callers)
}

/// Callers of `probe.Echo` on the gateways, until stopped.
struct Callers {
    stop: Arc<AtomicBool>,
    calls: tokio::task::JoinHandle<Vec<(u16, String)>>,
}

impl Callers {
    fn start(client: &HttpClient, gateways: &[Gateway]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = keep_calling(client, gateways, stop.clone());
        Self { stop, calls }
    }

    /// Stops them; each call's status and the node that answered.
    async fn stop(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.calls.await.expect("the callers")
    }
}

/// Stores `table` with `gateway routes push`, as an operator would.
async fn push(etcd: &Etcd, tag: &str, table: &str) {
    let file =
        std::env::temp_dir().join(format!("rust-ms-canary-{}-{tag}.toml", std::process::id()));
    std::fs::write(&file, table).unwrap();
    let pushed = run_to_end(
        "gateway",
        &[
            "--etcd-addr",
            &etcd.etcd_addr(),
            "routes",
            "push",
            file.to_str().unwrap(),
        ],
        &[],
        PATIENCE,
    )
    .await;
    assert_eq!(pushed.code, Some(0), "{}", pushed.stderr);
}

/// Calls `probe.Echo` on the gateways in turn, about 100 a second, until `stop`: the
/// traffic the canary is judged by. Each call's status and the node that answered.
fn keep_calling(
    client: &HttpClient,
    gateways: &[Gateway],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| format!("http://{}/api/probe/Echo", g.http))
        .collect();
    let client = client.clone();
    tokio::spawn(async move {
        let body = Bytes::from(json!({ "text": "hi" }).to_string());
        let ends = Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < ends {
            tick.tick().await;
            let url = &urls[n % urls.len()];
            n += 1;
            if let Ok(reply) = client.send("POST", url, &[], body.clone()).await {
                let node = reply.header("x-served-by").unwrap_or_default().to_owned();
                seen.push((reply.status, node));
            }
        }
        seen
    })
}

/// The canary of `probe` as `gateway`'s `/admin/routes` shows it.
async fn canary_on(client: &HttpClient, gateway: &Gateway) -> Value {
    let routes = client
        .get(&format!("http://{}/admin/routes", gateway.admin))
        .await
        .expect("/admin/routes");
    routes.body["canaries"]["probe"].clone()
}

/// Waits until every gateway shows the canary `outcome` (stamped by the leader: with the
/// time its step began); the canary as the first shows it.
async fn wait_for_outcome(client: &HttpClient, gateways: &[Gateway], outcome: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut all = Vec::new();
        for gateway in gateways {
            all.push(canary_on(client, gateway).await);
        }
        if all
            .iter()
            .all(|canary| canary["outcome"] == outcome && canary["since_ms"].is_u64())
        {
            return all.swap_remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "the canary never reached {outcome}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(client: &HttpClient, gateway: &Gateway, name: &str) -> Option<f64> {
    let text = client
        .get(&format!("http://{}/metrics", gateway.admin))
        .await
        .expect("/metrics")
        .text;
    text.lines()
        .find(|line| {
            line.starts_with(name)
                && line.contains("service=\"probe\"")
                && line.contains("version=\"2.0.0\"")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_canary_that_fails_its_error_budget_is_rolled_back_within_one_interval() {
    let etcd = require!(Etcd::start().await);
    let registry: Arc<dyn registry::Registry> = Arc::new(etcd.registry("go-ms").await);
    let (broken, broken_calls) = tests::probe::start_broken(registry.clone(), "2.0.0").await;
    let (stable, gateways, client, callers) =
        scene(&etcd, &registry, "canary-fails", &broken.address).await;

    const INTERVAL: Duration = Duration::from_secs(5);
    push(
        &etcd,
        "fails",
        "[routes.probe.canary]\nversion = \"2.0.0\"\nsteps = [20, 50, 100]\ninterval = \"5s\"\n\
         max_error_ratio = 0.05\nmax_p99_ratio = 3.0\nmin_calls = 10\n",
    )
    .await;
    let started = wait_for_outcome(&client, &gateways, "running").await;
    assert_eq!(started["percent"], 20, "{started}");
    let rolled_back = wait_for_outcome(&client, &gateways, "rolled_back").await;
    let seen = callers.stop().await;

    assert_eq!(rolled_back["percent"], 0, "{rolled_back}");
    let reason = rolled_back["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error ratio"), "{reason}");
    // Judged on both gateways' calls, and within the step's interval of its start.
    let last = &rolled_back["last_decision"]["canary"];
    assert!(last["calls"].as_u64() >= Some(10), "{rolled_back}");
    assert_eq!(last["errors"], last["calls"], "every call to 2.0.0 failed");
    let ran_for = rolled_back["since_ms"].as_u64().unwrap() - started["since_ms"].as_u64().unwrap();
    assert!(
        Duration::from_millis(ran_for) < INTERVAL,
        "rolled back after {ran_for} ms"
    );
    for gateway in &gateways {
        assert_eq!(
            metric(&client, gateway, "rustms_gateway_canary_rolled_back").await,
            Some(1.0)
        );
    }

    // Rolled back, the canary takes nothing: every call reaches 1.0.0 and succeeds.
    let before = broken_calls.load(Ordering::SeqCst);
    let echo = format!("http://{}/api/probe/Echo", gateways[1].http);
    for _ in 0..50 {
        let reply = client.post(&echo, &json!({ "text": "hi" })).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("x-served-by"), Some(stable.address.as_str()));
    }
    assert_eq!(broken_calls.load(Ordering::SeqCst), before);
    assert!(
        seen.iter().any(|(status, _)| *status == 500),
        "the canary's failures reached the callers while it ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_canary_that_holds_up_is_promoted_step_by_step_to_all_the_calls() {
    let etcd = require!(Etcd::start().await);
    let registry: Arc<dyn registry::Registry> = Arc::new(etcd.registry("go-ms").await);
    let (canary, _) = tests::probe::start_slow(registry.clone(), "2.0.0", Duration::ZERO).await;
    let (_stable, gateways, client, callers) =
        scene(&etcd, &registry, "canary-passes", &canary.address).await;

    // The p99 bar is loose: both versions are the same code, and a loaded machine's
    // sub-millisecond p99s differ by more than any real bar would allow.
    push(
        &etcd,
        "passes",
        "[routes.probe.canary]\nversion = \"2.0.0\"\nsteps = [20, 50, 100]\ninterval = \"2s\"\n\
         max_error_ratio = 0.05\nmax_p99_ratio = 50.0\nmin_calls = 10\n",
    )
    .await;
    let mut steps_seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + PATIENCE;
    let promoted = loop {
        let canary = canary_on(&client, &gateways[0]).await;
        if canary["outcome"] == "running" {
            steps_seen.insert(canary["percent"].as_u64().unwrap_or_default());
        }
        if canary["outcome"] == "promoted" {
            break canary;
        }
        assert_ne!(canary["outcome"], "rolled_back", "{canary}");
        assert!(Instant::now() < deadline, "never promoted: {canary}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_for_outcome(&client, &gateways, "promoted").await;
    let seen = callers.stop().await;

    assert_eq!(promoted["percent"], 100, "{promoted}");
    assert!(
        steps_seen.contains(&20) && steps_seen.contains(&50),
        "it went through its steps: {steps_seen:?}"
    );
    assert!(
        promoted["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("step 2 passed"),
        "{promoted}"
    );
    assert!(
        seen.iter().all(|(status, _)| *status == 200),
        "no call failed while the canary moved"
    );
    for gateway in &gateways {
        assert_eq!(
            metric(&client, gateway, "rustms_gateway_canary_percent").await,
            Some(100.0)
        );
        let echo = format!("http://{}/api/probe/Echo", gateway.http);
        for _ in 0..20 {
            let reply = client.post(&echo, &json!({ "text": "hi" })).await.unwrap();
            assert_eq!(reply.header("x-served-by"), Some(canary.address.as_str()));
        }
    }
}

fn artifacts() -> std::path::PathBuf {
    std::env::var_os("MS_ARTIFACTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
#[cfg_attr(no_chromium, ignore = "needs chromium (apt-get install chromium)")]
async fn the_dashboard_shows_a_canarys_steps_and_charts_both_versions_side_by_side() {
    let etcd = require!(Etcd::start().await);
    let registry: Arc<dyn registry::Registry> = Arc::new(etcd.registry("go-ms").await);
    let slower = Duration::from_millis(3);
    let (canary, _) = tests::probe::start_slow(registry.clone(), "1.1.0", slower).await;
    let (_stable, gateways, _client, callers) =
        scene(&etcd, &registry, "canary-dashboard", &canary.address).await;
    push(
        &etcd,
        "dashboard",
        "[routes.probe.canary]\nversion = \"1.1.0\"\nsteps = [5, 25, 50, 100]\ninterval = \"12s\"\n\
         max_error_ratio = 0.01\nmax_p99_ratio = 50.0\nmin_calls = 5\n",
    )
    .await;

    let mut browser = tests::browser::Browser::launch(&format!("http://{}/", gateways[0].admin))
        .await
        .expect("chromium opens the dashboard");
    let strip = "document.querySelector('[data-canary=\"1.1.0\"]')";
    // Past its first step: the page shows the step done, the one in force, and both
    // versions' figures of the leader's decision.
    browser
        .wait_for(
            &format!(
                "({strip}?.querySelectorAll('.steps span.done').length ?? 0) >= 1 \
                 && /step 1 passed/.test({strip}?.innerText ?? '')"
            ),
            PATIENCE,
        )
        .await
        .expect("the canary's strip shows its first step passed");
    // The card's charts of the last 15 minutes (10 s samples kept by the gateway): the
    // p99 and errors of both versions, once two samples make a line.
    let p99_chart = "document.querySelector('[data-service-card=\"probe\"] [data-chart=\"p99\"]')";
    browser
        .wait_for(
            &format!(
                "({p99_chart}?.querySelectorAll('.key').length ?? 0) === 2 \
                 && [...({p99_chart}?.querySelectorAll('path') ?? [])].every((p) => /L/.test(p.getAttribute('d')))"
            ),
            PATIENCE,
        )
        .await
        .expect("the p99 chart draws both versions");
    let text = browser
        .eval(&format!("{strip}.innerText"))
        .await
        .expect("the strip's text");
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("canary 1.1.0") && text.contains("baseline"),
        "{text}"
    );
    let shot = artifacts().join("canary-dashboard.png");
    browser.screenshot(&shot).await.expect("a screenshot");
    eprintln!("canary dashboard screenshot: {}", shot.display());
    callers.stop().await;
}
