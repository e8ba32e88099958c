use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;

fn limits() -> Limits {
    Limits::new(ShedMetrics::GATEWAY)
}

fn user_login(limits: &Limits) -> Arc<Limiter> {
    limits.of(&Arc::from("user"), &Arc::from("Login"))
}

/// Nodes with `slots` calls served at once, each for `service` (a pool of workers, a
/// database's connections), and a queue in front: what `callers` that each call again as
/// soon as they are answered (or refused, after a millisecond) meet. Runs `for_how_long`
/// in steps of a millisecond and says what the calls let through took.
struct Nodes {
    slots: usize,
    service: Duration,
    queue: VecDeque<(Admitted, Instant)>,
    serving: Vec<(Admitted, Instant, Instant)>,
}

#[derive(Default)]
struct Seen {
    answered: usize,
    refused: usize,
    latencies: Vec<Duration>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered, {} refused", self.answered, self.refused)
    }
}

impl Seen {
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let at = ((self.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        self.latencies[at.min(self.latencies.len() - 1)]
    }
}

impl Nodes {
    fn new(slots: usize, service: Duration) -> Self {
        Self {
            slots,
            service,
            queue: VecDeque::new(),
            serving: Vec::new(),
        }
    }

    async fn run(
        &mut self,
        limiter: &Arc<Limiter>,
        callers: usize,
        for_how_long: Duration,
    ) -> Seen {
        let mut seen = Seen::default();
        // Callers of an earlier run whose calls are still out call again when answered.
        let mut waiting_callers = callers.saturating_sub(self.queue.len() + self.serving.len());
        let mut refused_until: Vec<Instant> = Vec::new();
        let end = Instant::now() + for_how_long;
        while Instant::now() < end {
            let now = Instant::now();
            // Calls done.
            let (done, still): (Vec<_>, Vec<_>) = self
                .serving
                .drain(..)
                .partition(|(_, _, ends)| *ends <= now);
            self.serving = still;
            for (admitted, arrived, _) in done {
                let took = now.duration_since(arrived);
                admitted.finish(Some(took));
                seen.answered += 1;
                seen.latencies.push(took);
                waiting_callers += 1;
            }
            // Refused callers come back after a millisecond.
            let before = refused_until.len();
            refused_until.retain(|at| *at > now);
            waiting_callers += before - refused_until.len();
            // Every caller not waiting for an answer calls.
            for _ in 0..waiting_callers {
                match limiter.admit() {
                    Ok(admitted) => self.queue.push_back((admitted, now)),
                    Err(_) => {
                        seen.refused += 1;
                        refused_until.push(now + Duration::from_millis(1));
                    }
                }
            }
            waiting_callers = 0;
            // Free slots take the oldest queued calls.
            while self.serving.len() < self.slots {
                let Some((admitted, arrived)) = self.queue.pop_front() else {
                    break;
                };
                self.serving.push((admitted, arrived, now + self.service));
            }
            advance(Duration::from_millis(1)).await;
        }
        seen
    }
}

#[tokio::test(start_paused = true)]
async fn a_method_that_keeps_its_latency_is_never_refused() {
    let limits = limits();
    let limiter = user_login(&limits);
    // 200 callers, 400 slots: nobody queues.
    let seen = Nodes::new(400, Duration::from_millis(5))
        .run(&limiter, 200, Duration::from_secs(3))
        .await;
    assert_eq!(seen.refused, 0, "{seen:?}");
    assert!(seen.answered > 100_000, "{}", seen.answered);
}

#[tokio::test(start_paused = true)]
async fn under_overload_the_limit_keeps_admitted_calls_near_their_unloaded_latency() {
    let limits = limits();
    let limiter = user_login(&limits);
    // 48 callers against 8 slots of 35 ms (a password hash, say): capacity 228 calls/s.
    // Without a limit every call would wait for 5 others: 210 ms.
    let mut nodes = Nodes::new(8, Duration::from_millis(35));
    let _warm = nodes.run(&limiter, 48, Duration::from_secs(2)).await;
    let mut seen = nodes.run(&limiter, 48, Duration::from_secs(5)).await;
    let goodput = seen.answered as f64 / 5.0;
    assert!(goodput >= 0.9 * 228.0, "goodput {goodput}/s, {seen:?}");
    assert!(seen.refused > 0);
    let p99 = seen.percentile(0.99);
    let state = limits.snapshot().remove(0);
    assert!(p99 <= Duration::from_millis(70), "p99 {p99:?}, {state:?}");
    assert!((8..=16).contains(&state.limit), "{state:?}");
}

#[tokio::test(start_paused = true)]
async fn a_method_that_became_slower_for_good_is_measured_again_and_let_through() {
    let limits = limits();
    let limiter = user_login(&limits);
    Nodes::new(64, Duration::from_millis(10))
        .run(&limiter, 16, Duration::from_secs(2))
        .await;
    // A new version takes four times as long, and there are as many slots: the calls
    // are slower but nothing queues. After the figure went stale it is measured again,
    // and the limit opens up to the 16 callers.
    let mut slower = Nodes::new(64, Duration::from_millis(40));
    slower
        .run(&limiter, 16, STALE_AFTER + Duration::from_secs(5))
        .await;
    let seen = slower.run(&limiter, 16, Duration::from_secs(5)).await;
    let state = limits.snapshot().remove(0);
    assert_eq!(seen.refused, 0, "{seen:?}, {state:?}");
    let unloaded = state.unloaded_ms.unwrap_or_default();
    assert!((35.0..50.0).contains(&unloaded), "{state:?}");
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_caller_went_away_leaves_the_count() {
    let limits = limits();
    let limiter = user_login(&limits);
    let calls: Vec<_> = (0..10).map(|_| limiter.admit()).collect();
    assert_eq!(limits.snapshot()[0].in_flight, 10);
    drop(calls);
    assert_eq!(limits.snapshot()[0].in_flight, 0);
}

#[test]
fn made_up_method_names_share_one_limit_past_the_bound() {
    let limits = limits();
    let service: Arc<str> = Arc::from("user");
    for n in 0..MAX_METHODS + 50 {
        limits.of(&service, &Arc::from(format!("M{n}")));
    }
    let snapshot = limits.snapshot();
    assert_eq!(snapshot.len(), MAX_METHODS + 1);
    assert!(snapshot.iter().any(|state| state.method == "(other)"));
}

#[tokio::test(start_paused = true)]
async fn a_long_overload_measures_the_unloaded_time_again_and_keeps_its_goodput() {
    let limits = limits();
    let limiter = user_login(&limits);
    let mut nodes = Nodes::new(8, Duration::from_millis(35));
    // Past STALE_AFTER of overload the limit is held low for a few calls to measure
    // again; what follows keeps the nodes as busy as before.
    nodes
        .run(&limiter, 48, STALE_AFTER + Duration::from_secs(5))
        .await;
    let mut seen = nodes.run(&limiter, 48, Duration::from_secs(5)).await;
    let goodput = seen.answered as f64 / 5.0;
    assert!(goodput >= 0.9 * 228.0, "goodput {goodput}/s, {seen:?}");
    let p99 = seen.percentile(0.99);
    let state = limits.snapshot().remove(0);
    assert!(p99 <= Duration::from_millis(70), "p99 {p99:?}, {state:?}");
    let unloaded = state.unloaded_ms.unwrap_or_default();
    assert!((30.0..50.0).contains(&unloaded), "{state:?}");
}
