//! The innermost service: sends the attempt on the picked node's channel, and classifies
//! a failure by the types of its causes (never their text).

use std::task::{Context, Poll};

use tower::{Service, ServiceExt};

use super::{BoxFuture, CallError, CallRequest, CallResponse, picked_of};
use crate::classify::Attempt;

/// Sends each attempt to the node in its [`Picked`](super::Picked) extension.
#[derive(Clone, Copy, Default)]
pub struct NodeCall;

impl Service<CallRequest> for NodeCall {
    type Response = CallResponse;
    type Error = CallError;
    type Future = BoxFuture<Result<CallResponse, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        // Every node's channel is made ready in the call: this one takes any attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        Box::pin(async move {
            let node = picked_of(&request)?;
            let (parts, body) = request.into_parts();
            let sent = body.clone();
            let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
            match node.channel.clone().oneshot(request).await {
                Ok(response) => Ok(response),
                Err(error) => {
                    let mut attempt = Attempt::of_error(&error);
                    // A stream an attempt began to read cannot be handed on whole.
                    if attempt == Attempt::NotSent && !sent.can_be_sent_again() {
                        attempt = Attempt::Lost;
                    }
                    Err(CallError::Attempt {
                        attempt,
                        node,
                        source: Box::new(error),
                    })
                }
            }
        })
    }
}
