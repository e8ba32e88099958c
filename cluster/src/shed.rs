//! Adaptive load shedding: for each method of a called service, a limit on the calls in
//! flight that follows the latency the caller measures. While calls come back in about
//! their unloaded time the limit grows as far as the traffic presses on it; when they
//! slow down (a queue is forming on the nodes) it shrinks to the concurrency that keeps
//! them near that time. A call past the limit is refused at once, to be tried again later,
//! instead of joining the queue: the calls admitted keep their latency, and an overloaded
//! method holds no more than its share of the caller's connections and tasks.
//!
//! The unloaded time is learnt from calls that started with almost nothing else of their
//! method in flight. Under a long overload there are none; when the last is older than
//! [`STALE_AFTER`] and calls are slow, the limit is held at [`MEASURE_LIMIT`] for a moment
//! (a few calls), so that the unloaded time is measured again: a method that became
//! slower for good (a new version, more data) is not squeezed for ever by an old figure.
//!
//! The design follows Envoy's adaptive concurrency filter (gradient of the unloaded time
//! over the time measured, limit × gradient), with the unloaded time taken from the
//! traffic itself rather than from a regular pause of all but a few calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

/// The lowest the limit goes: calls of a method are never refused while fewer are out,
/// so that a few callers are never turned away for a slow moment of the machine.
pub const MIN_LIMIT: usize = 8;
/// The limit while the unloaded time is measured again, and how many calls in flight at
/// most a call may start with to count as unloaded.
pub const MEASURE_LIMIT: usize = 2;
/// The highest it goes, and where it starts: a method nobody has seen slow down is not
/// limited in practice.
pub const MAX_LIMIT: usize = 1000;
/// How much slower than unloaded calls may come back before the limit shrinks: a quarter
/// as long again, plus [`SLACK`] so that a method of a millisecond does not react to the
/// scheduler's noise.
pub const TOLERANCE: f64 = 1.25;
pub const SLACK: Duration = Duration::from_millis(10);
/// How old the last unloaded measurement may be, when calls are slow, before it is taken
/// again.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// Calls within this much of their unloaded time meet no queue worth the name.
const QUEUE_FREE: f64 = 1.1;
/// How long a refused caller is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A window of samples closes after this many calls and this long, or after
/// [`WINDOW_MAX`] with at least one.
const WINDOW_CALLS: usize = 10;
const WINDOW_MIN: Duration = Duration::from_millis(50);
const WINDOW_MAX: Duration = Duration::from_secs(1);
/// How many unloaded calls a new measurement of the unloaded time takes, at most for
/// [`WINDOW_MAX`].
const MEASURE_CALLS: usize = 5;
/// The weight of an unloaded call in the running figure: a faster one counts more than a
/// slower, since a call that started alone may still have met a queue on the node that
/// earlier calls left, never the other way round.
const FASTER_WEIGHT: f64 = 0.5;
const SLOWER_WEIGHT: f64 = 0.1;
/// How many methods of one service have a limit of their own; more (a caller sending
/// made-up names) share one.
const MAX_METHODS: usize = 256;

/// Where the limits' figures are published.
#[derive(Debug, Clone, Copy)]
pub struct ShedMetrics {
    /// Calls refused, by `service` and `method`.
    pub shed: &'static str,
    /// The limit now, by `service` and `method`.
    pub limit: &'static str,
}

impl ShedMetrics {
    pub const GATEWAY: ShedMetrics = ShedMetrics {
        shed: telemetry::prometheus::names::GATEWAY_SHED,
        limit: telemetry::prometheus::names::GATEWAY_CONCURRENCY_LIMIT,
    };
    pub const CLIENT: ShedMetrics = ShedMetrics {
        shed: telemetry::prometheus::names::CLIENT_SHED,
        limit: telemetry::prometheus::names::CLIENT_CONCURRENCY_LIMIT,
    };
}

/// The limits of every method a caller calls.
pub struct Limits {
    metrics: ShedMetrics,
    by_method: RwLock<ByMethod>,
}

/// A called service and one of its methods.
type MethodKey = (Arc<str>, Arc<str>);

/// The limiters, and how many methods of each service have one of their own.
#[derive(Default)]
struct ByMethod {
    limiters: HashMap<MethodKey, Arc<Limiter>>,
    methods_of: HashMap<Arc<str>, usize>,
}

impl ByMethod {
    /// Where `key`'s calls are counted: its own limiter, or the shared one of its service
    /// once [`MAX_METHODS`] have their own.
    fn find(&self, key: &MethodKey) -> Result<&Arc<Limiter>, MethodKey> {
        if let Some(limiter) = self.limiters.get(key) {
            return Ok(limiter);
        }
        if self.methods_of.get(&key.0).copied().unwrap_or(0) < MAX_METHODS {
            return Err(key.clone());
        }
        let shared = (key.0.clone(), Arc::from(OTHER_METHODS));
        self.limiters.get(&shared).ok_or(shared)
    }
}

/// The name of the limit that methods past [`MAX_METHODS`] share.
const OTHER_METHODS: &str = "(other)";

impl Limits {
    pub fn new(metrics: ShedMetrics) -> Self {
        Self {
            metrics,
            by_method: RwLock::default(),
        }
    }

    /// The limiter of `service`'s `method`, made on its first call. Made-up names past
    /// the bound are found under the read lock, like any known method.
    pub fn of(&self, service: &Arc<str>, method: &Arc<str>) -> Arc<Limiter> {
        let key = (service.clone(), method.clone());
        let missing = {
            let by_method = self.by_method.read().unwrap_or_else(|p| p.into_inner());
            match by_method.find(&key) {
                Ok(limiter) => return limiter.clone(),
                Err(missing) => missing,
            }
        };
        let mut by_method = self.by_method.write().unwrap_or_else(|p| p.into_inner());
        // Another caller may have made it while this one waited for the lock.
        let key = match by_method.find(&missing) {
            Ok(limiter) => return limiter.clone(),
            Err(key) => key,
        };
        if &*key.1 != OTHER_METHODS {
            *by_method.methods_of.entry(key.0.clone()).or_default() += 1;
        }
        let limiter = Arc::new(Limiter::new(self.metrics, key.0.clone(), key.1.clone()));
        by_method.limiters.insert(key, limiter.clone());
        limiter
    }

    /// Each method's limit and calls in flight, for `/admin/cluster`.
    pub fn snapshot(&self) -> Vec<LimitState> {
        let by_method = self.by_method.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<LimitState> = by_method.limiters.values().map(|l| l.state()).collect();
        all.sort_by(|a, b| (&a.service, &a.method).cmp(&(&b.service, &b.method)));
        all
    }
}

/// One method's limit, as `/admin/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct LimitState {
    pub service: String,
    pub method: String,
    pub limit: usize,
    pub in_flight: usize,
    /// The unloaded latency learnt, in milliseconds; `None` before the first.
    pub unloaded_ms: Option<f64>,
    /// Whether the limit is held low while the unloaded latency is measured again.
    pub measuring: bool,
    /// Calls refused since the limit was made.
    pub shed: u64,
}

/// One method's limit and what it learnt.
pub struct Limiter {
    metrics: ShedMetrics,
    service: Arc<str>,
    method: Arc<str>,
    state: Mutex<State>,
    /// Calls refused, for `/admin/cluster` and the dashboard's charts.
    shed: std::sync::atomic::AtomicU64,
}

struct State {
    limit: f64,
    in_flight: usize,
    /// The unloaded latency, in seconds, and when a call last measured it.
    unloaded: Option<(f64, Instant)>,
    window: Window,
    /// Held at [`MEASURE_LIMIT`] until this many unloaded calls came back, or the time passed.
    measuring: Option<(usize, Instant)>,
}

#[derive(Default)]
struct Window {
    opened: Option<Instant>,
    calls: usize,
    total: f64,
    /// The most calls in flight at once while it was open.
    peak: usize,
}

/// A call let through: it counts in flight until it is [`Admitted::finish`]ed or dropped.
pub struct Admitted {
    limiter: Arc<Limiter>,
    started: Instant,
    /// Whether the call started with almost nothing else of its method in flight.
    unloaded: bool,
    done: bool,
}

/// What the caller is told when the call is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Shed {
    pub limit: usize,
}

impl Limiter {
    fn new(metrics: ShedMetrics, service: Arc<str>, method: Arc<str>) -> Self {
        Self {
            metrics,
            service,
            method,
            state: Mutex::new(State {
                limit: MAX_LIMIT as f64,
                in_flight: 0,
                unloaded: None,
                window: Window::default(),
                measuring: None,
            }),
            shed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Each update leaves the state whole; a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The service and method this limit is for (`(other)` for the shared one).
    pub fn names(&self) -> (&str, &str) {
        (&self.service, &self.method)
    }

    /// Lets the call through, or refuses it when its method has as many in flight as
    /// the limit allows.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, Shed> {
        let mut state = self.lock();
        let limit = state.effective_limit();
        if state.in_flight >= limit {
            drop(state);
            self.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(self.metrics.shed,
                "service" => self.service.to_string(), "method" => self.method.to_string())
            .increment(1);
            return Err(Shed { limit });
        }
        state.in_flight += 1;
        state.window.peak = state.window.peak.max(state.in_flight);
        let unloaded = state.in_flight <= MEASURE_LIMIT;
        drop(state);
        Ok(Admitted {
            limiter: self.clone(),
            started: Instant::now(),
            unloaded,
            done: false,
        })
    }

    fn state(&self) -> LimitState {
        let state = self.lock();
        LimitState {
            service: self.service.to_string(),
            method: self.method.to_string(),
            limit: state.effective_limit(),
            in_flight: state.in_flight,
            unloaded_ms: state.unloaded.map(|(seconds, _)| seconds * 1000.0),
            measuring: state.measuring.is_some(),
            shed: self.shed.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The call is over: `took` is its latency, when it says something of the nodes' load
    /// (`None`: it failed before a node answered, and only leaves the count).
    fn finish(&self, took: Option<Duration>, unloaded: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        let Some(took) = took else { return };
        let seconds = took.as_secs_f64();
        if unloaded {
            state.learn_unloaded(seconds, now);
        }
        let window = &mut state.window;
        let opened = *window.opened.get_or_insert(now);
        window.calls += 1;
        window.total += seconds;
        let open_for = now.duration_since(opened);
        if (window.calls >= WINDOW_CALLS && open_for >= WINDOW_MIN) || open_for >= WINDOW_MAX {
            let closed = std::mem::take(&mut state.window);
            state.adapt(&closed, now);
            let limit = state.effective_limit();
            drop(state);
            metrics::gauge!(self.metrics.limit,
                "service" => self.service.to_string(), "method" => self.method.to_string())
            .set(limit as f64);
        }
    }
}

impl State {
    fn effective_limit(&self) -> usize {
        if self.measuring.is_some() {
            MEASURE_LIMIT
        } else {
            // The limit is kept between its bounds; rounding up lets a limit that just
            // grew past a whole number take one call more.
            (self.limit.ceil() as usize).clamp(MIN_LIMIT, MAX_LIMIT)
        }
    }

    fn learn_unloaded(&mut self, seconds: f64, now: Instant) {
        let figure = match (self.unloaded, self.measuring) {
            // A measurement made again replaces the old figure whole: the mean of its
            // calls so far.
            (Some((old, _)), Some((left, _))) => {
                let nth = (MEASURE_CALLS - left + 1) as f64;
                if nth <= 1.0 {
                    seconds
                } else {
                    old + (seconds - old) / nth
                }
            }
            (Some((old, _)), None) => {
                let weight = if seconds < old {
                    FASTER_WEIGHT
                } else {
                    SLOWER_WEIGHT
                };
                old + weight * (seconds - old)
            }
            (None, _) => seconds,
        };
        self.unloaded = Some((figure, now));
        if let Some((left, _)) = &mut self.measuring {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.end_measuring();
            }
        }
    }

    /// Back to the limit as it was: what was seen while it was held low says nothing of
    /// the concurrency the nodes take.
    fn end_measuring(&mut self) {
        self.measuring = None;
        self.window = Window::default();
    }

    /// A window closed: the limit follows how its calls' mean latency compares with the
    /// unloaded one.
    fn adapt(&mut self, window: &Window, now: Instant) {
        if let Some((_, until)) = self.measuring {
            if now < until {
                return;
            }
            // Too few calls came to measure with; try again when the figure is stale.
            self.end_measuring();
            return;
        }
        let Some((unloaded, measured_at)) = self.unloaded else {
            return;
        };
        if window.calls == 0 {
            return;
        }
        let mean = window.total / window.calls as f64;
        let allowed = unloaded * TOLERANCE + SLACK.as_secs_f64();
        if mean > allowed {
            if now.duration_since(measured_at) >= STALE_AFTER && self.measuring.is_none() {
                self.measuring = Some((MEASURE_CALLS, now + WINDOW_MAX));
                return;
            }
            // The concurrency that gave this latency, brought down in proportion; never
            // by more than half at once, so one slow window does not empty the pipe.
            let gradient = (allowed / mean).max(0.5);
            let base = self.limit.min(window.peak as f64);
            self.limit = (base * gradient).max(MIN_LIMIT as f64);
        } else if window.peak as f64 >= self.limit.floor() * 0.9 {
            // The traffic presses on the limit and latency is fine: room for more, by
            // leaps while calls take their unloaded time, one at a time once they wait a
            // little (a queue is near).
            let step = if mean <= unloaded * QUEUE_FREE {
                self.limit.sqrt()
            } else {
                1.0
            };
            self.limit = (self.limit + step.max(1.0)).min(MAX_LIMIT as f64);
        }
    }
}

impl Admitted {
    /// The call is over, having taken `took` on the nodes (`None`: it says nothing of
    /// their load).
    pub fn finish(mut self, took: Option<Duration>) {
        self.done = true;
        self.limiter.finish(took, self.unloaded);
    }

    /// When the call was let through.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // A caller that went away: out of the count, its time unknown.
        if !self.done {
            self.limiter.finish(None, false);
        }
    }
}

#[cfg(test)]
mod tests;
