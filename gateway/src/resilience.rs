//! Per-service protections applied before and after a call: the route's cluster-wide rate
//! limit (see [`crate::rate_limit`]), and a circuit breaker that stops calling a failing
//! service for a while and then lets single probes through.
//!
//! tower's breakers make callers wait or drive a single service; here a request must be
//! refused at once with a status, so the breaker is small and local.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::rate_limit::{ClusterLimit, RateLimit};

/// `circuit_breaker = { error_rate = 0.5, min_calls = 20, window = "10s", open_for = "5s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Share of failed calls in a window that opens the circuit.
    pub error_rate: f64,
    /// Fewer calls than this in a window never open it.
    pub min_calls: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl BreakerConfig {
    /// Opens at half the calls failing once `min_calls` were seen in a minute, and stays
    /// open a minute: what tests of the breaker's layer and doors use.
    #[cfg(test)]
    pub fn for_tests(min_calls: u32) -> Self {
        Self {
            error_rate: 0.5,
            min_calls,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(60),
        }
    }
}

/// A lock on a guard's state; a panic elsewhere while it was held left nothing half-done
/// (each guard's update is one assignment), so a poisoned lock is taken as it is.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is out; everything else is refused until it comes back, or until
    /// `open_for` has passed without its answer (a probe whose caller went away never
    /// reports), when the next call probes instead.
    HalfOpen {
        probe_sent: Instant,
    },
}

impl BreakerState {
    /// How `/admin/cluster` names it.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

/// How a call was let through; its outcome is recorded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted in the window while the circuit is closed.
    Normal,
    /// The one call whose outcome closes or reopens a half-open circuit.
    Probe,
}

pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    window_started: Instant,
    calls: u32,
    failures: u32,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            window_started: Instant::now(),
            calls: 0,
            failures: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go out now, and as what; how long to wait if not.
    pub fn admit(&mut self) -> Result<Admission, Duration> {
        let now = Instant::now();
        match self.state {
            BreakerState::Closed => Ok(Admission::Normal),
            BreakerState::Open { until } if now < until => Err(until - now),
            BreakerState::HalfOpen { probe_sent }
                if now.duration_since(probe_sent) < self.config.open_for =>
            {
                Err(self.config.open_for - now.duration_since(probe_sent))
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { probe_sent: now };
                Ok(Admission::Probe)
            }
        }
    }

    /// Records how an admitted call ended. Only the probe decides a half-open circuit;
    /// calls let through before the circuit opened no longer count.
    pub fn record(&mut self, admission: Admission, failed: bool) {
        let now = Instant::now();
        match (self.state, admission) {
            (BreakerState::HalfOpen { .. }, Admission::Probe) => {
                self.state = if failed {
                    BreakerState::Open {
                        until: now + self.config.open_for,
                    }
                } else {
                    self.reset_window(now);
                    BreakerState::Closed
                };
            }
            (BreakerState::HalfOpen { .. } | BreakerState::Open { .. }, _)
            | (BreakerState::Closed, Admission::Probe) => {}
            (BreakerState::Closed, Admission::Normal) => {
                if now.duration_since(self.window_started) > self.config.window {
                    self.reset_window(now);
                }
                self.calls += 1;
                self.failures += u32::from(failed);
                let rate = f64::from(self.failures) / f64::from(self.calls);
                if self.calls >= self.config.min_calls && rate >= self.config.error_rate {
                    tracing::warn!(
                        calls = self.calls,
                        failures = self.failures,
                        "circuit opened"
                    );
                    self.state = BreakerState::Open {
                        until: now + self.config.open_for,
                    };
                }
            }
        }
    }

    fn reset_window(&mut self, now: Instant) {
        self.window_started = now;
        self.calls = 0;
        self.failures = 0;
    }
}

/// The guards of one service, rebuilt when its route's settings change.
pub struct Guards {
    pub limit: Option<ClusterLimit>,
    pub breaker: Option<(BreakerConfig, Mutex<CircuitBreaker>)>,
}

/// Every service's guards, and where the gateway counts the gateways that share a
/// cluster-wide rate limit.
#[derive(Default)]
pub struct GuardsByService {
    all: Mutex<HashMap<String, Arc<Guards>>>,
    /// The registry's view, whose `gateway` nodes split each limit; none (in unit tests):
    /// this gateway is alone.
    view: Option<cluster::ClusterView>,
}

impl GuardsByService {
    /// Guards whose rate limits are split over the gateways in `view`.
    pub fn splitting_over(view: cluster::ClusterView) -> Self {
        Self {
            all: Mutex::default(),
            view: Some(view),
        }
    }

    /// The gateways live in the registry now, this one included (at least one).
    pub fn gateways(&self) -> usize {
        self.view
            .as_ref()
            .map_or(1, |view| view.nodes_of("gateway").len())
            .max(1)
    }

    /// The state of `service`'s circuit breaker, when its route has one and a call has
    /// met it.
    pub fn breaker_state(&self, service: &str) -> Option<BreakerState> {
        let all = lock(&self.all);
        let (_, breaker) = all.get(service)?.breaker.as_ref()?;
        Some(lock(breaker).state())
    }

    /// `service`'s rate limit as it is enforced here, when its route has one and a call
    /// has met it.
    pub fn rate_limit_of(&self, service: &str) -> Option<serde_json::Value> {
        let all = lock(&self.all);
        all.get(service)?.limit.as_ref().map(ClusterLimit::describe)
    }

    /// Each limited service's calls refused so far (since its limit was last made).
    pub fn rate_limited(&self) -> Vec<(String, u64)> {
        let all = lock(&self.all);
        all.iter()
            .filter_map(|(service, guards)| {
                Some((service.clone(), guards.limit.as_ref()?.refused()))
            })
            .collect()
    }

    pub fn of(
        &self,
        service: &str,
        limit: Option<&RateLimit>,
        breaker: Option<BreakerConfig>,
    ) -> Arc<Guards> {
        let mut all = lock(&self.all);
        if let Some(existing) = all.get(service)
            && existing.limit.as_ref().map(ClusterLimit::config) == limit
            && existing.breaker.as_ref().map(|(c, _)| *c) == breaker
        {
            return existing.clone();
        }
        let guards = Arc::new(Guards {
            limit: limit.map(|c| ClusterLimit::new(c.clone())),
            breaker: breaker.map(|c| (c, Mutex::new(CircuitBreaker::new(c)))),
        });
        if guards.breaker.is_some() {
            // A new breaker starts closed; the admit stage reports each change after.
            metrics::gauge!(
                telemetry::prometheus::names::GATEWAY_CIRCUIT_OPEN,
                "service" => service.to_owned()
            )
            .set(0.0);
        }
        all.insert(service.to_owned(), guards.clone());
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_on_errors_then_probes_once_and_closes_on_success() {
        let config = BreakerConfig {
            error_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        };
        let mut breaker = CircuitBreaker::new(config);
        let late = breaker.admit().unwrap();
        for failed in [false, true, true, true] {
            let admission = breaker.admit().unwrap();
            breaker.record(admission, failed);
        }
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        assert!(breaker.admit().is_err(), "refused while open");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            breaker.admit(),
            Ok(Admission::Probe),
            "one probe after open_for"
        );
        assert!(breaker.admit().is_err(), "only one probe at a time");
        // A call let through before the circuit opened ends now: it decides nothing.
        breaker.record(late, false);
        assert!(matches!(breaker.state(), BreakerState::HalfOpen { .. }));
        breaker.record(Admission::Probe, false);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_does_not_keep_the_circuit_half_open() {
        let mut breaker = CircuitBreaker::new(BreakerConfig {
            error_rate: 0.5,
            min_calls: 1,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        });
        let admission = breaker.admit().unwrap();
        breaker.record(admission, true);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(breaker.admit(), Ok(Admission::Probe));
        // Its caller went away: no outcome. After open_for, another call probes.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(breaker.admit().is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.admit(), Ok(Admission::Probe));
        breaker.record(Admission::Probe, false);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_circuit_again() {
        let config = BreakerConfig {
            error_rate: 0.5,
            min_calls: 1,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        };
        let mut breaker = CircuitBreaker::new(config);
        let admission = breaker.admit().unwrap();
        breaker.record(admission, true);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = breaker.admit().unwrap();
        breaker.record(probe, true);
        assert!(breaker.admit().is_err());
    }

    #[test]
    fn few_calls_never_open_the_circuit() {
        let mut breaker = CircuitBreaker::new(BreakerConfig {
            error_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        });
        for _ in 0..5 {
            let admission = breaker.admit().unwrap();
            breaker.record(admission, true);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
