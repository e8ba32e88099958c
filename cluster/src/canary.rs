//! A canary that drives itself: a route names a new version and the steps of its share
//! of the calls (`steps = [1, 5, 25, 50, 100]`); the gateways compare its server errors
//! and p99 with the other versions' step by step, and the one that leads writes each
//! decision (the next step, or back to 0 and why) into the stored route table. Here is
//! what the table holds and the split it implies; the gateway measures and decides.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::traffic::{Rule, Share, Subset};

/// `canary = { version = "1.3.0", steps = [1, 5, 25, 50, 100], interval = "1m",
/// max_error_ratio = 0.01, max_p99_ratio = 1.5 }` in a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The version under trial; every other version of the service is the baseline.
    pub version: String,
    /// Its share of the calls at each step, in percent, rising; the last is usually 100.
    pub steps: Vec<u32>,
    /// How long each step lasts before it is judged.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The most of its calls that may fail with a server error (0.01: one in a hundred).
    pub max_error_ratio: f64,
    /// How much slower than the baseline its p99 may be (1.5: half as slow again).
    pub max_p99_ratio: f64,
    /// The fewest calls a step must give the canary (and the baseline, for its p99) to
    /// be judged: a quiet step waits for them.
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
    /// Where it stands, written by the leading gateway; absent when a table is pushed, so
    /// pushing a canary starts it at its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
}

fn default_min_calls() -> u64 {
    20
}

/// Where a canary stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The step in force (an index into `steps`).
    pub step: usize,
    /// When the step began, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    pub outcome: Outcome,
    /// Why it stands where it does (the last decision's figures in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The figures the last decision was made on, from every gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Comparison>,
}

/// How a canary ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Moving through its steps.
    Running,
    /// It passed every step: it takes the calls it was meant to (usually all).
    Promoted,
    /// It failed a step: it takes no calls until a new table is pushed.
    RolledBack,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

/// One side's figures in a step, summed over the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub calls: u64,
    /// Calls that ended in a server error (UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS,
    /// DEADLINE_EXCEEDED).
    pub errors: u64,
    /// `None` without calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

impl Figures {
    pub fn error_ratio(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

/// The canary beside the baseline in one step.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub canary: Figures,
    pub baseline: Figures,
}

impl Canary {
    /// Its share of the calls now, in percent.
    pub fn percent(&self) -> u32 {
        match &self.state {
            None => self.steps.first().copied().unwrap_or(0),
            Some(state) => match state.outcome {
                Outcome::Running => self.steps.get(state.step).copied().unwrap_or(0),
                Outcome::Promoted => self.steps.last().copied().unwrap_or(100),
                Outcome::RolledBack => 0,
            },
        }
    }

    /// How it stands: running at its first step until the leader says otherwise.
    pub fn outcome(&self) -> Outcome {
        self.state
            .as_ref()
            .map_or(Outcome::Running, |state| state.outcome)
    }

    /// The step in force.
    pub fn step(&self) -> usize {
        self.state.as_ref().map_or(0, |state| state.step)
    }

    /// The rule that splits the calls no other rule took: the canary's share to its
    /// version, the rest to every other version. Either side with no node gives way to
    /// the other, so a canary never fails a call that the service could answer.
    pub fn rule(&self) -> Rule {
        let canary = Arc::new(Subset::of_version(&self.version));
        let baseline = Arc::new(Subset::but_version(&self.version));
        match self.percent() {
            0 => Rule {
                to: Some(baseline),
                ..Rule::default()
            },
            100.. => Rule {
                to: Some(canary),
                ..Rule::default()
            },
            percent => Rule {
                split: vec![
                    Share {
                        subset: canary,
                        weight: percent,
                    },
                    Share {
                        subset: baseline,
                        weight: 100 - percent,
                    },
                ],
                ..Rule::default()
            },
        }
    }

    /// `Err((field, reason))` for a canary that cannot work, beside the route's own
    /// `traffic` rules.
    pub fn validate(&self, traffic: &[Rule]) -> Result<(), (&'static str, String)> {
        if self.version.is_empty() {
            return Err(("version", "name the version under trial".into()));
        }
        if self.steps.is_empty()
            || self.steps.iter().any(|&step| step == 0 || step > 100)
            || self.steps.windows(2).any(|pair| pair[0] >= pair[1])
        {
            return Err((
                "steps",
                "give rising percentages from 1 to 100 (steps = [1, 5, 25, 50, 100])".into(),
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(("interval", "must be at least 1s".into()));
        }
        if !(self.max_error_ratio >= 0.0 && self.max_error_ratio < 1.0) {
            return Err(("max_error_ratio", "must be from 0 to below 1".into()));
        }
        if !(self.max_p99_ratio.is_finite() && self.max_p99_ratio >= 1.0) {
            return Err(("max_p99_ratio", "must be a number of at least 1".into()));
        }
        if self.min_calls == 0 {
            return Err(("min_calls", "must be at least 1".into()));
        }
        if traffic.iter().any(|rule| rule.when.is_none()) {
            return Err((
                "version",
                "a canary splits the calls no rule with `when` took; a traffic rule without \
                 `when` would take them all first"
                    .into(),
            ));
        }
        if let Some(state) = &self.state
            && state.step >= self.steps.len()
        {
            return Err((
                "state.step",
                format!("{} is past the last step", state.step),
            ));
        }
        Ok(())
    }
}

/// A route's rules as they apply: its own, then its canary's split.
pub fn rules_of(traffic: &[Rule], canary: Option<&Canary>) -> Vec<Rule> {
    let mut rules = traffic.to_vec();
    rules.extend(canary.map(Canary::rule));
    rules
}

/// The server errors a canary is judged by: what a node that is broken or overloaded
/// answers, not what a caller's bad request earns.
pub fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
            | tonic::Code::DeadlineExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Facts, steer};
    use registry::Instance;

    fn canary(steps: &[u32], state: Option<State>) -> Canary {
        Canary {
            version: "2.0.0".into(),
            steps: steps.to_vec(),
            interval: Duration::from_secs(60),
            max_error_ratio: 0.01,
            max_p99_ratio: 1.5,
            min_calls: 20,
            state,
        }
    }

    fn at(step: usize, outcome: Outcome) -> Option<State> {
        Some(State {
            step,
            since_ms: 0,
            outcome,
            reason: None,
            last: None,
        })
    }

    /// Of `calls` calls, how many the rule sends to the canary's nodes.
    fn to_the_canary(rule: &Rule, calls: usize) -> usize {
        let mut node = Instance::new("user", "127.0.0.1:1");
        node.version = "2.0.0".into();
        let headers = http::HeaderMap::new();
        let facts = Facts {
            headers: &headers,
            query: None,
        };
        (0..calls)
            .filter(|_| {
                steer(std::slice::from_ref(rule), &facts)
                    .is_some_and(|steer| steer.subset.holds(&node))
            })
            .count()
    }

    #[test]
    fn a_pushed_canary_takes_its_first_steps_share_and_the_leaders_word_after() {
        let steps = [5, 50, 100];
        assert_eq!(canary(&steps, None).percent(), 5);
        assert_eq!(canary(&steps, at(1, Outcome::Running)).percent(), 50);
        assert_eq!(canary(&steps, at(1, Outcome::Promoted)).percent(), 100);
        assert_eq!(canary(&steps, at(1, Outcome::RolledBack)).percent(), 0);
        // 5% of 20,000 is 1,000, give or take six standard deviations of 31.
        let share = to_the_canary(&canary(&steps, None).rule(), 20_000);
        assert!((812..=1188).contains(&share), "{share}");
        assert_eq!(
            to_the_canary(&canary(&steps, at(1, Outcome::RolledBack)).rule(), 1000),
            0
        );
        assert_eq!(
            to_the_canary(&canary(&steps, at(0, Outcome::Promoted)).rule(), 1000),
            1000
        );
    }

    #[test]
    fn the_baseline_is_every_version_but_the_canarys() {
        let rule = canary(&[50], None).rule();
        let baseline = &rule.split[1].subset;
        for (version, held) in [("1.0.0", true), ("1.9.0", true), ("2.0.0", false)] {
            let mut node = Instance::new("user", "127.0.0.1:1");
            node.version = version.into();
            assert_eq!(baseline.holds(&node), held, "{version}");
        }
    }

    #[test]
    fn canaries_that_cannot_work_are_refused_naming_the_field() {
        let unconditional = vec![Rule {
            to: Some(Arc::new(Subset::of_version("1.0.0"))),
            ..Rule::default()
        }];
        for (canary, traffic, field) in [
            (canary(&[], None), vec![], "steps"),
            (canary(&[5, 5], None), vec![], "steps"),
            (canary(&[50, 10], None), vec![], "steps"),
            (canary(&[0, 10], None), vec![], "steps"),
            (canary(&[10, 101], None), vec![], "steps"),
            (
                Canary {
                    interval: Duration::from_millis(10),
                    ..canary(&[10], None)
                },
                vec![],
                "interval",
            ),
            (
                Canary {
                    max_error_ratio: f64::NAN,
                    ..canary(&[10], None)
                },
                vec![],
                "max_error_ratio",
            ),
            (
                Canary {
                    max_p99_ratio: 0.5,
                    ..canary(&[10], None)
                },
                vec![],
                "max_p99_ratio",
            ),
            (canary(&[10], at(1, Outcome::Running)), vec![], "state.step"),
            (canary(&[10], None), unconditional, "version"),
        ] {
            assert_eq!(
                canary.validate(&traffic).map_err(|(field, _)| field),
                Err(field),
                "{canary:?}"
            );
        }
        assert!(canary(&[1, 5, 25, 50, 100], None).validate(&[]).is_ok());
    }
}
