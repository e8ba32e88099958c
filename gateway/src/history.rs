//! The dashboard's charts: each service's calls a second, error ratio, p99, and calls
//! shed or rate-limited, over the last 15 minutes in 10-second samples kept in the
//! gateway's memory (nothing outside it); and, while a canary runs, the calls of its
//! version and of the baseline side by side. Served at `/admin/history`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tonic::Code;

use crate::canary::Tally;

/// How long one sample covers.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How many are kept: 15 minutes.
pub const KEPT: usize = 90;

/// One stretch of time, every service the gateway called or refused in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When it ended, in Unix milliseconds.
    pub at_ms: u64,
    pub seconds: f64,
    pub services: BTreeMap<String, ServiceSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSample {
    pub calls_per_s: f64,
    /// Calls that ended in a server error, of all calls (shed ones included: the caller
    /// got UNAVAILABLE).
    pub error_ratio: f64,
    pub p99_ms: Option<f64>,
    pub shed_per_s: f64,
    pub rate_limited_per_s: f64,
    /// While a canary ran: its version's and the baseline's calls (by version).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, VersionSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionSample {
    pub calls_per_s: f64,
    pub error_ratio: f64,
    pub p99_ms: Option<f64>,
}

#[derive(Default)]
pub struct History {
    /// Each service's calls of the sample being filled, counted without a lock: every
    /// call through a door lands here.
    live: RwLock<HashMap<String, Arc<Live>>>,
    inner: Mutex<Inner>,
}

/// One service's calls since the last sample.
struct Live {
    calls: AtomicU64,
    errors: AtomicU64,
    /// By latency bucket (see [`crate::canary`]'s histogram).
    latency: Box<[AtomicU64]>,
}

impl Live {
    fn new() -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: (0..crate::canary::BUCKETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn add(&self, failed: bool, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(bucket) = self.latency.get(crate::canary::bucket_of(took)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What was counted since the last take, counting from zero again. A call counted
    /// while this runs lands in this sample or the next, never in neither.
    fn take(&self) -> Tally {
        Tally {
            calls: self.calls.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .enumerate()
                .filter_map(|(n, bucket)| {
                    let calls = bucket.swap(0, Ordering::Relaxed);
                    (calls > 0).then_some((n, calls))
                })
                .collect(),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// By service, the calls of each version of a running canary in the sample being
    /// filled (only while one runs: a lock is fine).
    open: HashMap<String, Open>,
    samples: VecDeque<Sample>,
    /// The refusal counters at the last sample, to count each sample's own.
    shed_seen: HashMap<String, u64>,
    limited_seen: HashMap<String, u64>,
}

#[derive(Default)]
struct Open {
    versions: BTreeMap<String, Tally>,
}

/// What a counter gained since it was last read; a counter made anew (a route changed)
/// starts from zero.
fn gained(now: u64, before: Option<u64>) -> u64 {
    match before {
        Some(before) if now >= before => now - before,
        Some(_) => now,
        // Its first reading: what it holds came before this sample.
        None => 0,
    }
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call of `service` through a door, ended with `code` after `took`.
    pub fn record_call(&self, service: &str, code: Code, took: Duration) {
        let failed = cluster::canary::is_server_error(code);
        let known = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned();
        let live = match known {
            Some(live) => live,
            None => self
                .live
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(service.to_owned())
                .or_insert_with(|| Arc::new(Live::new()))
                .clone(),
        };
        live.add(failed, took);
    }

    /// A call of `service` that a node of `version` answered, while a canary runs.
    pub fn record_version(&self, service: &str, version: &str, code: Code, took: Duration) {
        let failed = cluster::canary::is_server_error(code);
        let mut inner = self.lock();
        if let Some(tally) = inner
            .open
            .get_mut(service)
            .and_then(|open| open.versions.get_mut(version))
        {
            tally.add(failed, took);
            return;
        }
        let open = inner.open.entry(service.to_owned()).or_default();
        let tally = open.versions.entry(version.to_owned()).or_default();
        tally.add(failed, took);
    }

    /// Ends the sample: `seconds` long, ending at `at_ms`, with each service's refusal
    /// counters as they stand (shed, summed over its methods; rate-limited).
    pub fn close(
        &self,
        at_ms: u64,
        seconds: f64,
        shed: &[(String, u64)],
        limited: &[(String, u64)],
    ) {
        let calls: Vec<(String, Tally)> = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(service, live)| (service.clone(), live.take()))
            .collect();
        let mut inner = self.lock();
        let mut open = std::mem::take(&mut inner.open);
        let mut services: BTreeMap<String, ServiceSample> = BTreeMap::new();
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        // Versions seen of a service with no door call in the sample still count.
        let mut all = calls;
        for service in open.keys() {
            if !all.iter().any(|(s, _)| s == service) {
                all.push((service.clone(), Tally::default()));
            }
        }
        for (service, tally) in all {
            let versions = open.remove(&service).unwrap_or_default().versions;
            if tally.calls == 0 && versions.is_empty() {
                continue;
            }
            let figures = tally.figures();
            services.insert(
                service,
                ServiceSample {
                    calls_per_s: per_second(figures.calls),
                    error_ratio: figures.error_ratio(),
                    p99_ms: figures.p99_ms,
                    shed_per_s: 0.0,
                    rate_limited_per_s: 0.0,
                    versions: versions
                        .iter()
                        .map(|(version, tally)| {
                            let figures = tally.figures();
                            let sample = VersionSample {
                                calls_per_s: per_second(figures.calls),
                                error_ratio: figures.error_ratio(),
                                p99_ms: figures.p99_ms,
                            };
                            (version.clone(), sample)
                        })
                        .collect(),
                },
            );
        }
        let empty = || ServiceSample {
            calls_per_s: 0.0,
            error_ratio: 0.0,
            p99_ms: None,
            shed_per_s: 0.0,
            rate_limited_per_s: 0.0,
            versions: BTreeMap::new(),
        };
        for (service, total) in shed {
            let gain = gained(*total, inner.shed_seen.insert(service.clone(), *total));
            if gain > 0 {
                services
                    .entry(service.clone())
                    .or_insert_with(empty)
                    .shed_per_s = per_second(gain);
            }
        }
        for (service, total) in limited {
            let gain = gained(*total, inner.limited_seen.insert(service.clone(), *total));
            if gain > 0 {
                services
                    .entry(service.clone())
                    .or_insert_with(empty)
                    .rate_limited_per_s = per_second(gain);
            }
        }
        inner.samples.push_back(Sample {
            at_ms,
            seconds,
            services,
        });
        while inner.samples.len() > KEPT {
            inner.samples.pop_front();
        }
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_holds_each_services_rates_and_only_its_own_stretchs_refusals() {
        let history = History::default();
        let ms = Duration::from_millis(4);
        for _ in 0..18 {
            history.record_call("user", Code::Ok, ms);
        }
        history.record_call("user", Code::Internal, ms);
        history.record_call("user", Code::NotFound, ms);
        history.record_version("user", "1.3.0", Code::Internal, ms);
        // The counters held 100 shed calls before the first sample: not this sample's.
        history.close(1_000, 10.0, &[("user".into(), 100)], &[]);
        history.close(2_000, 10.0, &[("user".into(), 130)], &[("order".into(), 5)]);
        let samples = history.samples();
        let first = &samples[0].services["user"];
        assert_eq!(first.calls_per_s, 2.0);
        assert_eq!(first.error_ratio, 0.05, "one server error in twenty calls");
        assert_eq!(first.shed_per_s, 0.0);
        assert_eq!(first.versions["1.3.0"].error_ratio, 1.0);
        let second = &samples[1].services;
        assert_eq!(second["user"].shed_per_s, 3.0);
        assert_eq!(second["user"].calls_per_s, 0.0);
        assert!(
            !second.contains_key("order"),
            "a counter's first reading holds what came before: nothing of this sample"
        );
    }

    #[test]
    fn fifteen_minutes_are_kept_and_no_more() {
        let history = History::default();
        for n in 0..(KEPT as u64 + 10) {
            history.record_call("user", Code::Ok, Duration::from_millis(1));
            history.close(n * 10_000, 10.0, &[], &[]);
        }
        let samples = history.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].at_ms, 10 * 10_000, "the oldest ten are gone");
    }

    #[test]
    fn a_counter_made_anew_counts_from_zero() {
        assert_eq!(gained(7, Some(3)), 4);
        assert_eq!(gained(2, Some(50)), 2);
        assert_eq!(gained(50, None), 0);
    }
}
