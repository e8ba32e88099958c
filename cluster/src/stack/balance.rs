//! The balance layer: picks the node for each attempt, the call's way (p2c, round robin,
//! weighted), among the service's nodes in the view now (joins and leaves count between
//! attempts) that serve its gRPC service at one of its versions, within the subset a
//! traffic rule chose for it while the subset has a node that can take it, leaving out
//! those the call already tried.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::{Around, Below, CallError, CallRequest, Picked, Step, Tried, info_of};
use crate::balance::{candidates, pick};
use crate::node::Node;
use crate::view::ClusterView;

#[derive(Clone)]
pub struct BalanceLayer {
    view: ClusterView,
    round_robin: Arc<AtomicUsize>,
}

impl BalanceLayer {
    pub fn new(view: ClusterView) -> Self {
        Self {
            view,
            round_robin: Arc::default(),
        }
    }
}

crate::around_layer!(BalanceLayer);

impl Around for BalanceLayer {
    type Future<S: Below> = Step<S::Future>;

    fn around<S: Below>(&self, mut request: CallRequest, below: &mut S) -> Step<S::Future> {
        match self.pick(&request) {
            Ok(node) => {
                request.extensions_mut().insert(Picked(node));
                Step::below(below.call(request))
            }
            Err(error) => Step::decided(Err(error)),
        }
    }
}

impl BalanceLayer {
    fn pick(&self, request: &CallRequest) -> Result<Arc<Node>, CallError> {
        let info = info_of(request)?;
        let nodes = self.view.nodes_of(&info.service);
        if nodes.is_empty() {
            return Err(CallError::NoNode {
                service: info.service.clone(),
            });
        }
        let may_take = |node: &Arc<Node>| {
            node.serves(&info.grpc_service)
                && info
                    .versions
                    .as_ref()
                    .is_none_or(|versions| versions.contains(&node.instance.version))
        };
        // Most calls: every node of the service may take it; nothing is copied then.
        let serving: Cow<'_, [Arc<Node>]> = if nodes.iter().all(may_take) {
            Cow::Borrowed(&nodes[..])
        } else {
            Cow::Owned(nodes.iter().filter(|n| may_take(n)).cloned().collect())
        };
        let tried = request
            .extensions()
            .get::<Tried>()
            .map(|tried| tried.0.as_slice())
            .unwrap_or_default();
        let rested = |node: &Arc<Node>| {
            !tried.contains(&node.instance.id)
                && node.meta.weight > 0
                && node.is_healthy()
                && !self.view.is_ejected(node)
        };
        // A traffic rule's subset, while one of its nodes can take the call; past that
        // the rest of the service, unless the rule says not to.
        let serving = match &info.steer {
            None => serving,
            Some(steer) => {
                let subset: Vec<Arc<Node>> = serving
                    .iter()
                    .filter(|node| steer.subset.holds(&node.instance))
                    .cloned()
                    .collect();
                if subset.iter().any(rested) {
                    Cow::Owned(subset)
                } else if steer.fallback {
                    serving
                } else if subset.is_empty() {
                    return Err(CallError::NoneInSubset {
                        service: info.service.clone(),
                        subset: steer.subset.to_string(),
                    });
                } else {
                    Cow::Owned(subset)
                }
            }
        };
        let open: Cow<'_, [Arc<Node>]> = if serving.iter().all(rested) {
            serving
        } else {
            Cow::Owned(candidates(&self.view, &serving, tried))
        };
        let picked = match info.affinity {
            Some(key) => crate::affinity::pick(&open, key),
            None => pick(&open, info.balance, &self.round_robin, &info.method),
        };
        picked.ok_or_else(|| CallError::NoneLeft {
            service: info.service.clone(),
            tried: tried.len(),
        })
    }
}
