//! A call the gateway could not complete, and how it is told: as JSON with the HTTP status
//! grpc-gateway gives its gRPC code on `/api`, as a gRPC status on the rpc port.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use tonic::Code;

use cluster::Attempt;
use cluster::stack::CallError;

use crate::status::{details_json, error_body, http_status};

/// Set on every reply: the request's id, and the node that answered.
pub const REQUEST_ID: &str = node::REQUEST_ID_HEADER;
pub const SERVED_BY: &str = "x-served-by";

/// A reply the gateway could not get from a service: status, gRPC code, message.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    /// The service's `grpc-status-details-bin` (an encoded `google.rpc.Status`), empty
    /// when it sent none or the failure is the gateway's.
    pub details: Bytes,
    pub status: StatusCode,
    /// The node whose answer this is; `None` when the gateway itself refused the call.
    pub served_by: Option<String>,
    pub retry_after: Option<Duration>,
    /// HTTP methods the resource takes, for a 405.
    pub allow: Option<Box<str>>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: http_status(code),
            code,
            message: message.into(),
            details: Bytes::new(),
            served_by: None,
            retry_after: None,
            allow: None,
        }
    }

    /// A service's status, with the details it carries.
    pub fn of_status(status: &tonic::Status) -> Self {
        Self {
            details: Bytes::copy_from_slice(status.details()),
            ..Self::new(status.code(), status.message())
        }
    }

    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn served_by(mut self, address: impl Into<String>) -> Self {
        self.served_by = Some(address.into());
        self
    }

    /// What the caller is told of a call the stack could not complete. `call` names it
    /// (`user/Exists`); `timeout` is the route's, when the gateway set the deadline.
    pub fn of_call(error: CallError, call: &str, timeout: Option<Duration>) -> Self {
        let (attempt, node, source) = match error {
            CallError::NoNode { service } => {
                return Self::new(
                    Code::Unavailable,
                    format!("no node of {service:?} is registered now"),
                );
            }
            CallError::NoneLeft { service, tried: 0 } => {
                return Self::new(Code::Unavailable, format!("no healthy node of {service:?}"));
            }
            CallError::NoneLeft { service, tried } => {
                return Self::new(
                    Code::Unavailable,
                    format!("no healthy node of {service:?} left to try ({tried} tried)"),
                );
            }
            error @ CallError::NoneInSubset { .. } => {
                return Self::new(Code::Unavailable, error.to_string());
            }
            CallError::Denied {
                code,
                reason,
                retry_after,
            } => {
                let failure = Self::new(code, reason);
                return match retry_after {
                    Some(wait) => failure.retry_after(wait),
                    None => failure,
                };
            }
            CallError::Misassembled(bug) => return Self::new(Code::Internal, bug),
            CallError::Attempt {
                attempt,
                node,
                source,
            } => (attempt, node, source),
        };
        let address = node.instance.address.clone();
        let failure = match (attempt, timeout) {
            (Attempt::TimedOut, Some(timeout)) => Self::new(
                Code::DeadlineExceeded,
                format!("{call} took longer than {timeout:?}"),
            ),
            (Attempt::TimedOut, None) => {
                Self::new(Code::DeadlineExceeded, format!("{call}: {source}"))
            }
            (Attempt::Refused, _) => Self::new(
                Code::Internal,
                format!("the reply of {address} could not be read by the gateway: {source}"),
            )
            .with_status(StatusCode::BAD_GATEWAY),
            (Attempt::NotSent | Attempt::Lost | Attempt::Answered, _) => Self::new(
                Code::Unavailable,
                format!("node {address} failed: {source}"),
            ),
        };
        failure.served_by(address)
    }

    /// 405 naming what the resource takes.
    pub fn method_not_allowed(allow: impl Into<Box<str>>, message: impl Into<String>) -> Self {
        let mut failure = Self::new(Code::Unimplemented, message);
        failure.status = StatusCode::METHOD_NOT_ALLOWED;
        failure.allow = Some(allow.into());
        failure
    }

    /// The `/api` reply: `{"code", "message"}`, and `"details"` when there are any, with
    /// the mapped HTTP status.
    pub fn into_http(self, request_id: &str) -> Response {
        let served_by = self.served_by.as_deref().unwrap_or("gateway");
        let body = self.body();
        let mut response = json_reply(self.status, &body, request_id, served_by);
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
        }
        if let Some(allow) = self
            .allow
            .and_then(|allow| HeaderValue::from_str(&allow).ok())
        {
            headers.insert(header::ALLOW, allow);
        }
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT
        ) {
            // The body may not have been read to its end: the connection cannot carry
            // another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// The rpc port's reply: a gRPC status (trailers-only), the wait in its message and
    /// in a `RetryInfo` detail.
    pub fn into_grpc(self) -> Response {
        let message = match self.retry_after {
            Some(wait) => format!("{}; retry in {} ms", self.message, wait.as_millis().max(1)),
            None => self.message.clone(),
        };
        let details = self.details_bin(&message);
        let status = if details.is_empty() {
            tonic::Status::new(self.code, message)
        } else {
            tonic::Status::with_details(self.code, message, details)
        };
        let mut response = status.into_http::<Body>().into_response();
        if let Some(address) = self.served_by.and_then(|a| a.parse().ok()) {
            response.headers_mut().insert(SERVED_BY, address);
        }
        response
    }

    /// What the caller is told, as JSON: `{"code", "message"}`, and `"details"` when
    /// there are any.
    pub fn body(&self) -> serde_json::Value {
        let details = details_json(&self.details_bin(&self.message));
        error_body(self.code, &self.message, details)
    }

    /// The details the failure is told with: the service's own, else, when the gateway
    /// asks the caller to wait, a `RetryInfo` with the exact wait (`Retry-After` has only
    /// whole seconds).
    fn details_bin(&self, message: &str) -> Bytes {
        match self.retry_after {
            Some(wait) if self.details.is_empty() => {
                let details = tonic_types::ErrorDetails::with_retry_info(Some(wait));
                let status = <tonic::Status as tonic_types::StatusExt>::with_error_details(
                    self.code, message, details,
                );
                Bytes::copy_from_slice(status.details())
            }
            _ => self.details.clone(),
        }
    }
}

/// Whole seconds, rounded up: never tell a client to come back too early.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A JSON reply carrying the request id and the node that answered.
pub fn json_reply(status: StatusCode, body: &Value, request_id: &str, served_by: &str) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [(REQUEST_ID, request_id), (SERVED_BY, served_by)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn a_services_status_is_told_with_its_details() {
        use tonic_types::{ErrorDetails, StatusExt};
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "bad name",
            ErrorDetails::with_bad_request_violation("name", "empty"),
        );
        let response = Failure::of_status(&status).into_http("id");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_of(response).await;
        assert_eq!(body["code"], 3);
        assert_eq!(body["message"], "bad name");
        assert_eq!(
            body["details"][0]["fieldViolations"][0]["field"], "name",
            "{body}"
        );
        // Without details, the body is what it always was.
        let plain = Failure::of_status(&tonic::Status::not_found("no user")).into_http("id");
        assert_eq!(
            body_of(plain).await,
            serde_json::json!({"code": 5, "message": "no user"})
        );
    }

    #[tokio::test]
    async fn a_wait_the_gateway_asks_for_is_a_retry_info_at_both_doors() {
        let limited = || {
            Failure::new(Code::ResourceExhausted, "rate limit")
                .retry_after(Duration::from_millis(1500))
        };
        let response = limited().into_http("id");
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            body_of(response).await,
            serde_json::json!({
                "code": 8,
                "message": "rate limit",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": "1.500s",
                }],
            })
        );
        let grpc = limited().into_grpc();
        let status = tonic::Status::from_header_map(grpc.headers()).expect("a status");
        let retry = tonic_types::StatusExt::get_details_retry_info(&status).expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn a_405_names_what_the_resource_allows() {
        let response = Failure::method_not_allowed("POST", "no").into_http("id");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }
}
