//! A server stream as an HTTP reply: Server-Sent Events for a client that accepts
//! `text/event-stream` (a browser's `EventSource`), newline-delimited JSON otherwise.
//! Each message is sent as it comes; a status that ends the stream in failure is the last
//! event; an SSE stream idle for a while carries a comment so that proxies keep it open.
//! The caller going away drops the body, and with it the call to the node.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use prost_reflect::DynamicMessage;
use serde_json::Value;
use tonic::codec::Streaming;

use crate::failure::{REQUEST_ID, SERVED_BY};
use crate::status::error_body;
use crate::transcode::to_json;

/// How long an SSE stream may stay silent before a heartbeat comment.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// How the messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/event-stream`: `data: {json}` events, `event: error` for a failure.
    Sse,
    /// `application/x-ndjson`: one JSON object a line, `{"error": ..}` for a failure.
    NdJson,
}

impl Format {
    /// SSE when the client accepts it, NDJSON otherwise.
    pub fn asked_by(headers: &HeaderMap) -> Self {
        let accepts_sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("text/event-stream"));
        if accepts_sse { Self::Sse } else { Self::NdJson }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Sse => "text/event-stream",
            Self::NdJson => "application/x-ndjson",
        }
    }

    fn message(self, json: &Value) -> Bytes {
        match self {
            Self::Sse => Bytes::from(format!("data: {json}\n\n")),
            Self::NdJson => Bytes::from(format!("{json}\n")),
        }
    }

    fn failure(self, status: &tonic::Status) -> Bytes {
        let details = crate::status::details_json(status.details());
        let body = error_body(status.code(), status.message(), details);
        match self {
            Self::Sse => Bytes::from(format!("event: error\ndata: {body}\n\n")),
            Self::NdJson => Bytes::from(format!("{}\n", serde_json::json!({ "error": body }))),
        }
    }
}

/// The 200 reply carrying `messages` in `format`, from the node at `served_by`.
pub fn reply(
    messages: Streaming<DynamicMessage>,
    format: Format,
    request_id: &str,
    served_by: &str,
) -> Response {
    let events = futures::stream::unfold(Some(messages), move |state| async move {
        let mut messages = state?;
        let next = match format {
            Format::Sse => {
                tokio::select! {
                    next = messages.message() => next,
                    _ = tokio::time::sleep(HEARTBEAT) => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), Some(messages)));
                    }
                }
            }
            Format::NdJson => messages.message().await,
        };
        let chunk = match next {
            Ok(Some(message)) => match to_json(&message) {
                Ok(json) => (format.message(&json), Some(messages)),
                Err(failure) => {
                    let status = tonic::Status::new(failure.code, failure.message);
                    (format.failure(&status), None)
                }
            },
            Ok(None) => return None,
            Err(status) => (format.failure(&status), None),
        };
        Some((Ok::<_, std::convert::Infallible>(chunk.0), chunk.1))
    });
    let mut response = Response::new(Body::from_stream(events));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and the like would hold the events back to fill a buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    for (name, value) in [(REQUEST_ID, request_id), (SERVED_BY, served_by)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}
