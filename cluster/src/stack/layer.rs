//! What every layer of the stack shares, written once: a layer is a value that is handed
//! each request and the rest of the stack below it ([`Around::around`]); [`Layered`] is
//! the tower service that does the handing (readiness passed down, the service made
//! ready taking the call, a clone of it left for the next).

use std::task::{Context, Poll};

use tower::Service;

use super::{BoxFuture, CallError, CallRequest, CallResponse};

/// The rest of the stack, as a layer sees it.
pub trait Below:
    Service<CallRequest, Response = CallResponse, Error = CallError, Future: Send + 'static>
    + Send
    + 'static
{
}

impl<S> Below for S where
    S: Service<CallRequest, Response = CallResponse, Error = CallError, Future: Send + 'static>
        + Send
        + 'static
{
}

/// How a call through a layer ends.
pub type CallFuture = BoxFuture<Result<CallResponse, CallError>>;

/// One layer's work around the rest of the stack.
pub trait Around: Clone + Send + Sync + 'static {
    /// Handles `request`, calling `below` (already ready) when the call goes on.
    fn around<S: Below>(&self, request: CallRequest, below: S) -> CallFuture;
}

/// A layer over the rest of the stack.
#[derive(Clone)]
pub struct Layered<A, S> {
    around: A,
    below: S,
}

impl<A, S> Layered<A, S> {
    pub fn new(around: A, below: S) -> Self {
        Self { around, below }
    }
}

impl<A, S> Service<CallRequest> for Layered<A, S>
where
    A: Around,
    S: Service<CallRequest, Response = CallResponse, Error = CallError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = CallResponse;
    type Error = CallError;
    type Future = BoxFuture<Result<CallResponse, CallError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.below.poll_ready(cx)
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        // The service polled ready takes the call; a clone waits for the next one.
        let clone = self.below.clone();
        let below = std::mem::replace(&mut self.below, clone);
        self.around.around(request, below)
    }
}

/// `impl Layer for` a type that is [`Around`]: it wraps what is below it in [`Layered`].
#[macro_export]
macro_rules! around_layer {
    ($layer:ty) => {
        impl<S> ::tower::Layer<S> for $layer {
            type Service = $crate::stack::Layered<$layer, S>;

            fn layer(&self, below: S) -> Self::Service {
                $crate::stack::Layered::new(self.clone(), below)
            }
        }
    };
}
