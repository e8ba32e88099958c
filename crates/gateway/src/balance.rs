//! Choosing a node for a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use crate::cluster::NodeHandle;
use crate::settings::Balance;

/// Picks among `candidates` (healthy, not yet tried for this call) for a call of
/// `method`, or `None` if there are none.
pub fn pick(
    candidates: &[Arc<NodeHandle>],
    balance: Balance,
    round_robin: &AtomicUsize,
    method: &str,
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
                Some(less_loaded(&candidates[a], &candidates[b], method).clone())
            }
        },
    }
}

/// Fewer calls in flight wins. On a tie, latency decides by chance: the faster node wins
/// in proportion to how much faster it is (a node 3x faster wins 3 times in 4), and
/// latencies within noise of each other count as equal, `a` (already a random pick) then
/// winning. A node with one unlucky slow call thus still gets calls and recovers, instead
/// of being starved by a deterministic comparison.
fn less_loaded<'a>(
    a: &'a Arc<NodeHandle>,
    b: &'a Arc<NodeHandle>,
    method: &str,
) -> &'a Arc<NodeHandle> {
    let in_flight = |n: &NodeHandle| n.stats.in_flight.load(Ordering::Relaxed);
    match in_flight(a).cmp(&in_flight(b)) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal => {
            let (la, lb) = (a.stats.latency_us(method), b.stats.latency_us(method));
            // Differences under a quarter or a millisecond are noise on any network.
            let noise = (la.max(lb) / 4).max(1_000);
            if la.abs_diff(lb) <= noise {
                return a;
            }
            // P(a) = lb / (la + lb): the slower a is, the less often it wins.
            let a_wins = rand::rng().random_range(0..la + lb) < lb;
            if a_wins { a } else { b }
        }
    }
}
