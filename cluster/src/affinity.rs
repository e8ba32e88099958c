//! Sticky routing: calls that carry the same key (a header, a cookie, or a claim of the
//! caller's verified token) go to the same node while it lives. The node is chosen by
//! rendezvous hashing: each node scores `hash(key, node id)` and the highest score takes
//! the call. A node that joins takes over only the keys it now scores highest for (about
//! 1/N of them), a node that leaves hands on only its own, and every gateway agrees
//! without sharing any state, since the score depends on nothing but the key and the id.
//! A retry goes to the next highest scorer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::node::Node;
use crate::traffic::{Facts, check_source, cookie};

/// Where a route's sticky key comes from: one of a header, a cookie or a claim.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sticky {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// A claim of the JWT the route verifies (`sub`): only a route that checks tokens can
    /// trust one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

impl Sticky {
    /// The key of a call that carries `facts`, from its header or cookie; `None` when it
    /// carries none (it is balanced as any call) or the key is a claim.
    pub fn key(&self, facts: &Facts<'_>) -> Option<u64> {
        if let Some(name) = &self.header {
            return facts
                .headers
                .get(name.as_str())
                .map(|value| key_of(value.as_bytes()));
        }
        let name = self.cookie.as_ref()?;
        cookie(facts.headers, name).map(|value| key_of(value.as_bytes()))
    }

    /// Checks the source; `Err(reason)` when it names none or more than one.
    pub fn validate(&self) -> Result<(), String> {
        check_source(
            [&self.header, &self.cookie, &self.claim],
            "header, cookie or claim",
            self.header.as_deref(),
        )
    }
}

/// A key's hash: FNV-1a, finished by a mix so that close keys land far apart. Written
/// out rather than taken from `std`, whose hasher may change between Rust releases:
/// gateways of different builds must agree.
pub fn key_of(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix(hash)
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn score(key: u64, node: &Node) -> u64 {
    mix(key ^ key_of(node.instance.id.as_bytes()))
}

/// The node of `nodes` that `key` belongs to.
pub fn pick(nodes: &[Arc<Node>], key: u64) -> Option<Arc<Node>> {
    nodes
        .iter()
        .max_by_key(|node| (score(key, node), node.instance.id.as_str()))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::{Change, Instance};

    use crate::view::{ClusterView, ViewOptions};

    fn nodes(count: usize) -> Vec<Arc<Node>> {
        let view = ClusterView::for_tests(ViewOptions::for_tests());
        for n in 0..count {
            let instance = Instance::new("user", "127.0.0.1:9").with_id(format!("node-{n}"));
            view.apply_for_tests(Change::Joined(instance));
        }
        view.nodes_of("user").to_vec()
    }

    fn owners(nodes: &[Arc<Node>], keys: usize) -> Vec<String> {
        (0..keys)
            .map(|k| {
                let key = key_of(format!("user-{k}").as_bytes());
                pick(nodes, key).expect("a node").instance.id.clone()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_key_always_reaches_the_same_node_and_keys_spread_evenly() {
        let four = nodes(4);
        let keys = 10_000;
        let first = owners(&four, keys);
        assert_eq!(first, owners(&four, keys), "the same key, the same node");
        for node in &four {
            let share = first.iter().filter(|id| **id == node.instance.id).count();
            // 2,500 each, standard deviation 43: the bounds are seven of them.
            assert!(
                (2200..=2800).contains(&share),
                "{}: {share}",
                node.instance.id
            );
        }
    }

    #[tokio::test]
    async fn a_join_moves_about_one_key_in_n_and_only_to_the_new_node() {
        let five = nodes(5);
        let four: Vec<_> = five
            .iter()
            .filter(|n| n.instance.id != "node-4")
            .cloned()
            .collect();
        let keys = 10_000;
        let before = owners(&four, keys);
        let after = owners(&five, keys);
        let moved: Vec<_> = before
            .iter()
            .zip(&after)
            .filter(|(was, is)| was != is)
            .collect();
        assert!(
            moved.iter().all(|(_, is)| *is == "node-4"),
            "keys moved between old nodes"
        );
        // 1/5 of 10,000 is 2,000, standard deviation 40.
        assert!(
            (1760..=2240).contains(&moved.len()),
            "{} of {keys} moved",
            moved.len()
        );
        // And the node leaving again hands back exactly its own keys.
        assert_eq!(owners(&four, keys), before);
    }

    #[test]
    fn a_sticky_key_comes_from_its_header_or_cookie() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "ada".parse().expect("a value"));
        headers.insert("cookie", "a=1; session=s-42".parse().expect("a value"));
        let facts = Facts {
            headers: &headers,
            query: None,
        };
        let by_header = Sticky {
            header: Some("x-user".into()),
            ..Sticky::default()
        };
        assert_eq!(by_header.key(&facts), Some(key_of(b"ada")));
        let by_cookie = Sticky {
            cookie: Some("session".into()),
            ..Sticky::default()
        };
        assert_eq!(by_cookie.key(&facts), Some(key_of(b"s-42")));
        let absent = Sticky {
            header: Some("x-other".into()),
            ..Sticky::default()
        };
        assert_eq!(absent.key(&facts), None);
        assert!(Sticky::default().validate().is_err());
        assert!(
            Sticky {
                header: Some("X-User".into()),
                ..Sticky::default()
            }
            .validate()
            .is_err()
        );
    }
}
