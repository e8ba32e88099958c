//! What the leading gateway makes of a step's figures, summed over the gateways.

use std::time::Duration;

use cluster::canary::{Canary, Comparison};

/// What becomes of a running canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not yet: the step has time left, or too few calls to judge; why.
    Wait(String),
    /// It passed its step: on to step `next` (the last one: promoted).
    Promote { next: usize, reason: String },
    /// It passed its last step: it keeps the calls it has.
    Finish { reason: String },
    /// It failed: back to no calls, and why.
    RollBack { reason: String },
}

/// The decision on `canary`'s step after `elapsed` of it, from `seen`. Errors over the
/// budget roll back at once (at least `min_calls` canary calls seen); the p99 and the
/// promotion wait for the interval's end.
pub fn decide(canary: &Canary, seen: &Comparison, elapsed: Duration) -> Decision {
    let (ours, theirs) = (&seen.canary, &seen.baseline);
    if ours.calls >= canary.min_calls && ours.error_ratio() > canary.max_error_ratio {
        return Decision::RollBack {
            reason: format!(
                "error ratio {:.3} above {}: {} of {} calls to {} failed",
                ours.error_ratio(),
                canary.max_error_ratio,
                ours.errors,
                ours.calls,
                canary.version
            ),
        };
    }
    if elapsed < canary.interval {
        return Decision::Wait(format!(
            "step {} of {} ({}%) runs until {:?} have passed",
            canary.step() + 1,
            canary.steps.len(),
            canary.percent(),
            canary.interval
        ));
    }
    if ours.calls < canary.min_calls {
        return Decision::Wait(format!(
            "{} calls reached {} in this step; judging needs {}",
            ours.calls, canary.version, canary.min_calls
        ));
    }
    // The baseline's p99 is compared only when it had calls enough to have one.
    let p99 = match (ours.p99_ms, theirs.p99_ms) {
        (Some(ours_ms), Some(theirs_ms)) if theirs.calls >= canary.min_calls => {
            if ours_ms > theirs_ms * canary.max_p99_ratio {
                return Decision::RollBack {
                    reason: format!(
                        "p99 {ours_ms:.1} ms is more than {} × the baseline's {theirs_ms:.1} ms",
                        canary.max_p99_ratio
                    ),
                };
            }
            format!(", p99 {ours_ms:.1} ms against {theirs_ms:.1} ms")
        }
        _ => String::new(),
    };
    let reason = format!(
        "step {} passed: {} of {} calls failed{p99}",
        canary.step() + 1,
        ours.errors,
        ours.calls
    );
    let next = canary.step() + 1;
    if next + 1 >= canary.steps.len() {
        Decision::Finish { reason }
    } else {
        Decision::Promote { next, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::canary::Figures;

    fn canary(steps: &[u32], step: usize) -> Canary {
        Canary {
            version: "2.0.0".into(),
            steps: steps.to_vec(),
            interval: Duration::from_secs(10),
            max_error_ratio: 0.05,
            max_p99_ratio: 1.5,
            min_calls: 20,
            state: Some(cluster::canary::State {
                step,
                since_ms: 0,
                outcome: cluster::canary::Outcome::Running,
                reason: None,
                last: None,
            }),
        }
    }

    fn seen(calls: u64, errors: u64, p99: f64, baseline_p99: f64) -> Comparison {
        Comparison {
            canary: Figures {
                calls,
                errors,
                p99_ms: Some(p99),
            },
            baseline: Figures {
                calls: 1000,
                errors: 0,
                p99_ms: Some(baseline_p99),
            },
        }
    }

    const EARLY: Duration = Duration::from_secs(1);
    const DONE: Duration = Duration::from_secs(10);

    #[test]
    fn errors_over_the_budget_roll_back_at_once_but_not_before_enough_calls() {
        let canary = canary(&[10, 50, 100], 0);
        assert!(matches!(
            decide(&canary, &seen(19, 19, 1.0, 1.0), EARLY),
            Decision::Wait(_)
        ));
        let Decision::RollBack { reason } = decide(&canary, &seen(40, 4, 1.0, 1.0), EARLY) else {
            panic!("10% of errors against a budget of 5%");
        };
        assert!(reason.contains("4 of 40"), "{reason}");
    }

    #[test]
    fn a_step_is_promoted_only_once_its_interval_is_over_with_calls_enough() {
        let canary = canary(&[10, 50, 100], 0);
        let good = seen(100, 1, 10.0, 9.0);
        assert!(matches!(decide(&canary, &good, EARLY), Decision::Wait(_)));
        assert!(matches!(
            decide(&canary, &seen(5, 0, 1.0, 1.0), DONE),
            Decision::Wait(_)
        ));
        assert!(matches!(
            decide(&canary, &good, DONE),
            Decision::Promote { next: 1, .. }
        ));
        // Passing the step before the last one reaches the last: promoted.
        assert!(matches!(
            decide(&self::canary(&[10, 50, 100], 1), &good, DONE),
            Decision::Finish { .. }
        ));
    }

    #[test]
    fn a_p99_slower_than_the_baseline_allows_rolls_back() {
        let canary = canary(&[10, 100], 0);
        let Decision::RollBack { reason } = decide(&canary, &seen(100, 0, 16.0, 10.0), DONE) else {
            panic!("1.6 × the baseline's p99 against 1.5");
        };
        assert!(reason.contains("p99"), "{reason}");
        assert!(matches!(
            decide(&canary, &seen(100, 0, 14.0, 10.0), DONE),
            Decision::Finish { .. }
        ));
    }
}
