//! Choosing a node for a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use crate::cluster::NodeHandle;
use crate::settings::Balance;

/// Picks among `candidates` (healthy, not yet tried for this call), or `None` if empty.
pub fn pick(
    candidates: &[Arc<NodeHandle>],
    balance: Balance,
    round_robin: &AtomicUsize,
) -> Option<Arc<NodeHandle>> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0].clone()),
        len => match balance {
            Balance::RoundRobin => {
                let n = round_robin.fetch_add(1, Ordering::Relaxed);
                Some(candidates[n % len].clone())
            }
            Balance::P2c => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..len);
                let mut b = rng.random_range(0..len - 1);
                if b >= a {
                    b += 1;
                }
                Some(less_loaded(&candidates[a], &candidates[b]).clone())
            }
        },
    }
}

/// Fewer calls in flight wins; on a tie, a clearly lower latency average wins. Latencies
/// within noise of each other count as equal, and then `a` (already a random pick) wins,
/// so that equally good nodes share the load evenly.
fn less_loaded<'a>(a: &'a Arc<NodeHandle>, b: &'a Arc<NodeHandle>) -> &'a Arc<NodeHandle> {
    let in_flight = |n: &NodeHandle| n.stats.in_flight.load(Ordering::Relaxed);
    let latency = |n: &NodeHandle| n.stats.latency_ewma_us.load(Ordering::Relaxed);
    match in_flight(a).cmp(&in_flight(b)) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal => {
            let (la, lb) = (latency(a), latency(b));
            let noise = (la.max(lb) / 4).max(500);
            if lb + noise < la { b } else { a }
        }
    }
}
