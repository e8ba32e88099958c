//! Choosing a node for a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::node::Node;
use crate::view::ClusterView;

/// How a call picks among the nodes that may take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Power of two choices on in-flight requests, latency breaking ties.
    #[default]
    P2c,
    RoundRobin,
    /// At random, in proportion to each node's `weight` metadata (default 1).
    Weighted,
}

/// The nodes that may take the next attempt of a call: not tried for it yet, with a
/// weight above 0, passing their health checks and not set aside after transport
/// failures. When no such node is left, the set-aside ones, then those failing their
/// checks: a node in trouble answers with its own words (a service whose store is down
/// says so), which serves a caller better than "no healthy node".
pub fn candidates(view: &ClusterView, nodes: &[Arc<Node>], tried: &[String]) -> Vec<Arc<Node>> {
    let open = nodes
        .iter()
        .filter(|n| !tried.contains(&n.instance.id) && n.meta.weight > 0)
        .cloned();
    let (healthy, failing): (Vec<_>, Vec<_>) = open.partition(|n| n.is_healthy());
    let (rested, set_aside): (Vec<_>, Vec<_>) =
        healthy.into_iter().partition(|n| !view.is_ejected(n));
    [rested, set_aside, failing]
        .into_iter()
        .find(|nodes| !nodes.is_empty())
        .unwrap_or_default()
}

/// Picks among [`candidates`] for a call of `method`, or `None` if there are none.
pub fn pick(
    candidates: &[Arc<Node>],
    balance: Balance,
    round_robin: &AtomicUsize,
    method: &str,
) -> Option<Arc<Node>> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0].clone()),
        len => match balance {
            Balance::RoundRobin => {
                let n = round_robin.fetch_add(1, Ordering::Relaxed);
                Some(candidates[n % len].clone())
            }
            Balance::Weighted => {
                let weights: Vec<u64> = candidates.iter().map(|n| n.meta.weight).collect();
                let total: u64 = weights.iter().sum();
                let mut ticket = rand::rng().random_range(0..total.max(1));
                for (node, weight) in candidates.iter().zip(&weights) {
                    if ticket < *weight {
                        return Some(node.clone());
                    }
                    ticket -= weight;
                }
                candidates.last().cloned()
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
fn less_loaded<'a>(a: &'a Arc<Node>, b: &'a Arc<Node>, method: &str) -> &'a Arc<Node> {
    let in_flight = |n: &Node| n.stats.in_flight.load(Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use registry::Instance;

    async fn node(id: &str, weight: Option<&str>) -> Arc<Node> {
        let mut instance = Instance::new("user", "127.0.0.1:9").with_id(id);
        if let Some(weight) = weight {
            instance.metadata.insert("weight".into(), weight.into());
        }
        Arc::new(Node::for_tests(instance).expect("a valid test address"))
    }

    #[tokio::test]
    async fn weight_zero_drains_a_node_even_when_it_is_the_only_one() {
        let view = ClusterView::for_tests(crate::view::ViewOptions::for_tests());
        let alone = vec![node("a", Some("0")).await];
        assert!(candidates(&view, &alone, &[]).is_empty());
        let all_zero = vec![node("a", Some("0")).await, node("b", Some("0")).await];
        assert!(candidates(&view, &all_zero, &[]).is_empty());
        let one_left = vec![node("a", Some("0")).await, node("b", None).await];
        let picked = candidates(&view, &one_left, &[]);
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].instance.id, "b");
    }

    #[tokio::test]
    async fn nodes_already_tried_for_a_call_are_not_candidates() {
        let view = ClusterView::for_tests(crate::view::ViewOptions::for_tests());
        let nodes = vec![node("a", None).await, node("b", None).await];
        let left = candidates(&view, &nodes, &["a".to_owned()]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].instance.id, "b");
    }

    #[tokio::test]
    async fn weighted_picks_follow_the_weights() {
        let nodes = vec![node("a", Some("3")), node("b", None), node("c", Some("0"))];
        let nodes: Vec<_> = futures::future::join_all(nodes).await;
        let mut counts = std::collections::HashMap::new();
        let rr = AtomicUsize::new(0);
        for _ in 0..4000 {
            let picked = pick(&nodes, Balance::Weighted, &rr, "Exists").unwrap();
            *counts.entry(picked.instance.id.clone()).or_insert(0) += 1;
        }
        let a = counts.get("a").copied().unwrap_or(0);
        let b = counts.get("b").copied().unwrap_or(0);
        assert_eq!(counts.get("c"), None, "weight 0 gets nothing");
        assert!(
            (2700..=3300).contains(&a) && (700..=1300).contains(&b),
            "{counts:?}"
        );
    }

    #[tokio::test]
    async fn round_robin_takes_turns_and_p2c_prefers_fewer_in_flight() {
        let nodes: Vec<_> = futures::future::join_all([node("a", None), node("b", None)]).await;
        let rr = AtomicUsize::new(0);
        let turns: Vec<String> = (0..4)
            .map(|_| {
                pick(&nodes, Balance::RoundRobin, &rr, "m")
                    .unwrap()
                    .instance
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(turns, ["a", "b", "a", "b"]);
        let busy: Vec<_> = (0..5)
            .map(|_| crate::stats::InFlight::start(&nodes[0]))
            .collect();
        for _ in 0..50 {
            assert_eq!(
                pick(&nodes, Balance::P2c, &rr, "m").unwrap().instance.id,
                "b"
            );
        }
        // Calls count only while they last.
        drop(busy);
        assert_eq!(nodes[0].stats.in_flight.load(Ordering::Relaxed), 0);
    }
}
