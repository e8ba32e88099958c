//! What every layer of the stack shares, written once: a layer is a value that is handed
//! each request and the rest of the stack below it ([`Around::around`]); [`Layered`] is
//! the tower service that does the handing (readiness passed down, the service made
//! ready taking the call at once). A layer that only acts before
//! the call hands back the call below as it is ([`Step::below`]): no allocation and no
//! extra poll per layer on the hot path.

use std::pin::Pin;
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
    /// How a call through this layer ends, over `S` below it.
    type Future<S: Below>: Future<Output = Result<CallResponse, CallError>> + Send + 'static;

    /// Handles `request`, calling `below` (made ready) at once when the call goes on:
    /// what the layer does after, it does in the future it returns.
    fn around<S: Below>(&self, request: CallRequest, below: &mut S) -> Self::Future<S>;
}

pin_project_lite::pin_project! {
    /// What most layers hand back: an outcome decided at once (the call turned away),
    /// the call below as it is, or work of their own after it.
    #[project = StepProjection]
    pub enum Step<F> {
        Decided { outcome: Option<Result<CallResponse, CallError>> },
        Below { #[pin] call: F },
        Around { call: CallFuture },
    }
}

impl<F> Step<F> {
    /// The call ends here with `outcome`; nothing below runs.
    pub fn decided(outcome: Result<CallResponse, CallError>) -> Self {
        Step::Decided {
            outcome: Some(outcome),
        }
    }

    /// The call below, untouched.
    pub fn below(call: F) -> Self {
        Step::Below { call }
    }

    /// Work of the layer's own around the call below.
    pub fn around(call: CallFuture) -> Self {
        Step::Around { call }
    }
}

impl<F> Future for Step<F>
where
    F: Future<Output = Result<CallResponse, CallError>>,
{
    type Output = Result<CallResponse, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            StepProjection::Decided { outcome } => Poll::Ready(outcome.take().unwrap_or(Err(
                CallError::Misassembled("a decided call was polled after it ended"),
            ))),
            StepProjection::Below { call } => call.poll(cx),
            StepProjection::Around { call } => call.as_mut().poll(cx),
        }
    }
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
    type Future = A::Future<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.below.poll_ready(cx)
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        // The service polled ready takes the call, before this returns: nothing below is
        // cloned per call.
        self.around.around(request, &mut self.below)
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
