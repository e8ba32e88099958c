//! What the balancer knows of a node: calls in flight, consecutive transport failures,
//! when it is set aside until, and latency averages by method.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::node::Node;

/// One call counted in a node's in-flight requests until it is dropped, so that a call
/// that times out, fails or streams for a long time is counted for exactly as long as
/// it lasts.
pub struct InFlight(Arc<Node>);

impl InFlight {
    pub fn start(node: &Arc<Node>) -> Self {
        node.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(node))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the balancer knows of a node.
#[derive(Default)]
pub struct NodeStats {
    pub in_flight: AtomicUsize,
    pub consecutive_failures: AtomicU32,
    /// Set aside until this many milliseconds after the view started (0: not set aside).
    pub(crate) ejected_until_ms: AtomicU64,
    /// Latency averages by method: methods differ in cost, so only like is compared
    /// with like (a slow Login must not make a node look slow for Exists).
    latency: Mutex<HashMap<String, LatencySample>>,
}

struct LatencySample {
    ewma_us: u64,
    samples: u64,
    at_ms: u64,
}

/// Milliseconds since the first call, a clock shared by every node's statistics.
fn process_millis() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// After this long without a new sample a latency average counts as unknown, so a node
/// that lost a few comparisons is tried again instead of being starved for good.
const LATENCY_MEMORY_MS: u64 = 2_000;

impl NodeStats {
    /// The latency average of `method` in microseconds; 0 when unknown or stale. The first
    /// sample is left out: it paid for opening the connection.
    pub fn latency_us(&self, method: &str) -> u64 {
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        match latency.get(method) {
            Some(s)
                if s.samples > 1
                    && process_millis().saturating_sub(s.at_ms) <= LATENCY_MEMORY_MS =>
            {
                s.ewma_us
            }
            _ => 0,
        }
    }

    /// Every method's latency average in milliseconds, for the admin view (stale ones too:
    /// the operator sees the last known value).
    pub fn latencies_ms(&self) -> BTreeMap<String, f64> {
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        latency
            .iter()
            .map(|(method, sample)| (method.clone(), sample.ewma_us as f64 / 1000.0))
            .collect()
    }

    pub(crate) fn add_latency(&self, method: &str, latency: Duration) {
        let sample = latency.as_micros() as u64;
        let mut all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(method.to_owned()).or_insert(LatencySample {
            ewma_us: 0,
            samples: 0,
            at_ms: 0,
        });
        entry.ewma_us = match entry.samples {
            0 | 1 => sample,
            // One outlier (a pause, a busy core) moves the average at most 4x its value.
            _ => (entry.ewma_us * 7 + sample.min(entry.ewma_us.saturating_mul(4).max(1))) / 8,
        };
        entry.samples += 1;
        entry.at_ms = process_millis();
    }
}
