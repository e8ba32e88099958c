//! The balance layer: picks the node for each attempt, the call's way (p2c, round robin,
//! weighted), among the service's nodes in the view now (joins and leaves count between
//! attempts) that serve its gRPC service at one of its versions, leaving out those the
//! call already tried.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{BoxFuture, CallError, CallRequest, CallResponse, Picked, Tried, info_of};
use crate::balance::{candidates, pick};
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

impl<S> Layer<S> for BalanceLayer {
    type Service = PickNode<S>;

    fn layer(&self, inner: S) -> PickNode<S> {
        PickNode {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct PickNode<S> {
    layer: BalanceLayer,
    inner: S,
}

impl<S> Service<CallRequest> for PickNode<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = CallError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = CallResponse;
    type Error = CallError;
    type Future = BoxFuture<Result<CallResponse, CallError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: CallRequest) -> Self::Future {
        let picked = self.pick(&request);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            request.extensions_mut().insert(Picked(picked?));
            inner.call(request).await
        })
    }
}

impl<S> PickNode<S> {
    fn pick(&self, request: &CallRequest) -> Result<Arc<crate::node::Node>, CallError> {
        let info = info_of(request)?;
        let nodes = self.layer.view.nodes_of(&info.service);
        let serving: Vec<_> = nodes
            .iter()
            .filter(|node| node.serves(&info.grpc_service))
            .filter(|node| {
                info.versions
                    .as_ref()
                    .is_none_or(|versions| versions.contains(&node.instance.version))
            })
            .cloned()
            .collect();
        if nodes.is_empty() {
            return Err(CallError::NoNode {
                service: info.service.clone(),
            });
        }
        let tried = request
            .extensions()
            .get::<Tried>()
            .map(|tried| tried.0.as_slice())
            .unwrap_or_default();
        let open = candidates(&self.layer.view, &serving, tried);
        pick(&open, info.balance, &self.layer.round_robin, &info.method).ok_or_else(|| {
            CallError::NoneLeft {
                service: info.service.clone(),
                tried: tried.len(),
            }
        })
    }
}
