//! The innermost service: sends the attempt on the picked node's channel, and classifies
//! a failure by the types of its causes (never their text). A reply the call wants whole
//! is read to its end here, so that a connection lost mid-reply is the attempt's failure
//! and its status is known inside the stack. The reply carries the node that gave it
//! ([`Picked`] in its extensions).

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::Code;
use tower::{Service, ServiceExt};

use super::{
    BoxFuture, CallError, CallRequest, CallResponse, Picked, TimedOut, info_of, picked_of,
};
use crate::classify::Attempt;
use crate::node::Node;

/// Sends each attempt to the node in its [`Picked`] extension.
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
        let facts = info_of(&request)
            .map(|info| (info.whole_reply, info.deadline))
            .and_then(|whole| Ok((whole, picked_of(&request)?)));
        let started = tokio::time::Instant::now();
        Box::pin(async move {
            let ((whole_reply, deadline), node) = facts?;
            let (parts, body) = request.into_parts();
            let sent = body.clone();
            let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
            let failed = |attempt, source| CallError::Attempt {
                attempt,
                node: node.clone(),
                source,
            };
            let mut response = match node.channel.clone().oneshot(request).await {
                Ok(response) => response,
                Err(error) => {
                    let mut attempt = Attempt::of_error(&error);
                    // A stream an attempt began to read cannot be handed on whole.
                    if attempt == Attempt::NotSent && !sent.can_be_sent_again() {
                        attempt = Attempt::Lost;
                    }
                    return Err(failed(attempt, Box::new(error)));
                }
            };
            if whole_reply {
                response = read_whole(response, deadline, &node, started).await?;
            }
            response.extensions_mut().insert(Picked(node));
            Ok(response)
        })
    }
}

/// The reply read to its end and handed on as one piece, with its trailers.
async fn read_whole(
    response: CallResponse,
    deadline: Option<tokio::time::Instant>,
    node: &std::sync::Arc<Node>,
    started: tokio::time::Instant,
) -> Result<CallResponse, CallError> {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|status| {
        // Broken mid-reply: the node may have run the call.
        let attempt = match Attempt::of_status(&status) {
            Attempt::Answered => Attempt::Lost,
            other => other,
        };
        CallError::Attempt {
            attempt,
            node: node.clone(),
            source: Box::new(status),
        }
    })?;
    let trailers = collected.trailers().cloned();
    let status = trailers
        .as_ref()
        .and_then(telemetry::grpc::status_of)
        .or_else(|| telemetry::grpc::status_of(&parts.headers));
    // The node enforces the deadline it was told (`grpc-timeout`), and tonic answers
    // CANCELLED when it runs out there first: that is this call's deadline passing, not
    // a caller going away.
    let past_deadline = deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
    if status == Some(Code::Cancelled) && past_deadline {
        return Err(CallError::Attempt {
            attempt: Attempt::TimedOut,
            node: node.clone(),
            source: Box::new(TimedOut(started.elapsed())),
        });
    }
    let body = Whole {
        data: Some(collected.to_bytes()).filter(|data| !data.is_empty()),
        trailers,
    };
    Ok(http::Response::from_parts(
        parts,
        tonic::body::Body::new(body),
    ))
}

/// A reply read whole: its data, then its trailers.
struct Whole {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for Whole {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
