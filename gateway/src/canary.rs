//! The gateway's half of a self-driving canary (the route's `canary`, see
//! [`cluster::canary`]): each gateway counts, per step, the calls its canary's version and
//! the baseline answered, their server errors and a latency histogram; on etcd it
//! publishes them, and the gateway elected leader sums every gateway's figures and writes
//! each decision into the stored route table ([`lead`]).

// Judging and publishing need a shared store: without etcd only the counting is used.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
mod decide;
#[cfg(feature = "etcd")]
pub mod lead;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use cluster::canary::{Canary, Comparison, Figures, Outcome};
use serde::{Deserialize, Serialize};

#[cfg_attr(not(feature = "etcd"), allow(unused_imports))]
pub use decide::{Decision, decide};

/// Buckets of the latency histogram: each 10% wider than the one before, from 0.1 ms,
/// so that a p99 read from it is within 10% of the true one; the last takes everything
/// from about 90 s.
pub(crate) const BUCKETS: usize = 144;
const FIRST_BUCKET_MS: f64 = 0.1;
const GROWTH: f64 = 1.1;

pub(crate) fn bucket_of(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms <= FIRST_BUCKET_MS {
        return 0;
    }
    let n = ((ms / FIRST_BUCKET_MS).ln() / GROWTH.ln()).ceil();
    (n as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `n`, in milliseconds.
fn bucket_bound_ms(n: usize) -> f64 {
    FIRST_BUCKET_MS * GROWTH.powi(n as i32)
}

/// One side's calls in a step: how many, how many failed, how long they took. Kept
/// sparse (bucket → calls) so that a report is small.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub calls: u64,
    pub errors: u64,
    pub latency: BTreeMap<usize, u64>,
}

impl Tally {
    pub(crate) fn add(&mut self, failed: bool, took: Duration) {
        self.calls += 1;
        self.errors += u64::from(failed);
        *self.latency.entry(bucket_of(took)).or_default() += 1;
    }

    /// Adds another gateway's tally of the same step.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.errors += other.errors;
        for (bucket, calls) in &other.latency {
            *self.latency.entry(*bucket).or_default() += calls;
        }
    }

    /// The 99th percentile's bucket bound, in milliseconds; `None` without calls.
    fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.latency.values().sum();
        if total == 0 {
            return None;
        }
        // The smallest latency at or above 99% of the calls.
        let wanted = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (bucket, calls) in &self.latency {
            seen += calls;
            if seen >= wanted {
                return Some(bucket_bound_ms(*bucket));
            }
        }
        None
    }

    pub fn figures(&self) -> Figures {
        Figures {
            calls: self.calls,
            errors: self.errors,
            p99_ms: self.p99_ms(),
        }
    }
}

/// Which step of which canary figures belong to: a step is judged only on its own calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepId {
    pub version: String,
    pub step: usize,
    /// When the leader began the step; `None` before it has said.
    pub since_ms: Option<u64>,
}

impl StepId {
    /// Whether it is `canary`'s step in force.
    fn is(&self, canary: &Canary) -> bool {
        self.step == canary.step()
            && self.since_ms == canary.state.as_ref().map(|state| state.since_ms)
            && self.version == canary.version
    }

    pub fn of(canary: &Canary) -> Self {
        Self {
            version: canary.version.clone(),
            step: canary.step(),
            since_ms: canary.state.as_ref().map(|state| state.since_ms),
        }
    }
}

/// What one gateway saw of one canary's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub step: StepId,
    pub canary: Tally,
    pub baseline: Tally,
}

impl Report {
    fn new(step: StepId) -> Self {
        Self {
            step,
            canary: Tally::default(),
            baseline: Tally::default(),
        }
    }

    pub fn comparison(&self) -> Comparison {
        Comparison {
            canary: self.canary.figures(),
            baseline: self.baseline.figures(),
        }
    }
}

/// This gateway's figures of every running canary, by service.
#[derive(Default)]
pub struct CanaryMeter {
    by_service: Mutex<HashMap<String, Report>>,
}

impl CanaryMeter {
    /// Counts a call of `service` that a node of `version` answered with `code` after
    /// `took`, while `canary` runs: a step begun anew starts from nothing.
    pub fn record(
        &self,
        service: &str,
        canary: &Canary,
        version: &str,
        code: tonic::Code,
        took: Duration,
    ) {
        // A caller that went away says nothing of either version.
        if canary.outcome() != Outcome::Running || code == tonic::Code::Cancelled {
            return;
        }
        let mut all = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before anything is made: most calls find their step's report.
        let report = match all.get_mut(service) {
            Some(report) if report.step.is(canary) => report,
            Some(report) => {
                *report = Report::new(StepId::of(canary));
                report
            }
            None => all
                .entry(service.to_owned())
                .or_insert_with(|| Report::new(StepId::of(canary))),
        };
        let side = if version == canary.version {
            &mut report.canary
        } else {
            &mut report.baseline
        };
        side.add(cluster::canary::is_server_error(code), took);
    }

    /// What this gateway saw of `service`'s canary in `step`, if it saw a call of it.
    pub fn report(&self, service: &str, step: &StepId) -> Option<Report> {
        let all = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        all.get(service)
            .filter(|report| report.step == *step)
            .cloned()
    }

    /// Every report, for publishing.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn reports(&self) -> Vec<(String, Report)> {
        let all = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(service, report)| (service.clone(), report.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        Canary {
            version: "2.0.0".into(),
            steps: vec![10, 100],
            interval: Duration::from_secs(60),
            max_error_ratio: 0.01,
            max_p99_ratio: 1.5,
            min_calls: 20,
            state: None,
        }
    }

    #[test]
    fn a_p99_read_from_the_histogram_is_within_ten_percent() {
        for true_ms in [0.3, 1.0, 7.0, 35.0, 250.0, 4000.0] {
            let mut tally = Tally::default();
            for _ in 0..99 {
                tally.add(false, Duration::from_secs_f64(true_ms / 10_000.0));
            }
            tally.add(false, Duration::from_secs_f64(true_ms / 1000.0));
            // 99 fast calls and one at `true_ms`: the p99 is among the fast ones.
            let p99 = tally.p99_ms().unwrap();
            assert!(
                p99 >= true_ms / 10.0 && p99 <= true_ms / 10.0 * 1.1 + FIRST_BUCKET_MS,
                "{true_ms}: {p99}"
            );
        }
    }

    #[test]
    fn calls_are_counted_by_side_and_a_new_step_starts_from_nothing() {
        let meter = CanaryMeter::default();
        let mut canary = canary();
        let ms = Duration::from_millis(5);
        meter.record("user", &canary, "2.0.0", tonic::Code::Internal, ms);
        meter.record("user", &canary, "1.0.0", tonic::Code::Ok, ms);
        meter.record("user", &canary, "1.0.0", tonic::Code::NotFound, ms);
        meter.record("user", &canary, "1.0.0", tonic::Code::Cancelled, ms);
        let report = meter.report("user", &StepId::of(&canary)).unwrap();
        assert_eq!((report.canary.calls, report.canary.errors), (1, 1));
        assert_eq!(
            (report.baseline.calls, report.baseline.errors),
            (2, 0),
            "a caller's mistake is not a server error; a cancelled call is not counted"
        );
        canary.state = Some(cluster::canary::State {
            step: 0,
            since_ms: 1,
            outcome: Outcome::Running,
            reason: None,
            last: None,
        });
        meter.record("user", &canary, "2.0.0", tonic::Code::Ok, ms);
        let report = meter.report("user", &StepId::of(&canary)).unwrap();
        assert_eq!((report.canary.calls, report.baseline.calls), (1, 0));
    }

    #[test]
    fn tallies_of_several_gateways_merge_into_one() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for _ in 0..50 {
            a.add(false, Duration::from_millis(2));
            b.add(true, Duration::from_millis(40));
        }
        a.merge(&b);
        let figures = a.figures();
        assert_eq!((figures.calls, figures.errors), (100, 50));
        let p99 = figures.p99_ms.unwrap();
        assert!((40.0..=44.0).contains(&p99), "{p99}");
    }
}
