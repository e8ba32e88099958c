//! gRPC status codes as HTTP statuses, the way grpc-gateway maps them, and the JSON error
//! body every failed reply carries: `google.rpc.Status` in canonical JSON, its details
//! (`grpc-status-details-bin`) each with its `@type`.

use std::sync::LazyLock;

use axum::http::StatusCode;
use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;
use tonic::Code;

pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// `{"code": <grpc code>, "message": "...", "details": [...]}`, `details` as
/// [`details_json`] renders a status's. The key is left out when there are none: a body
/// without details is the same as before they were shown.
pub fn error_body(code: Code, message: &str, details: Vec<Value>) -> Value {
    let mut body = serde_json::json!({ "code": code as i32, "message": message });
    if !details.is_empty() {
        body["details"] = Value::Array(details);
    }
    body
}

/// What a detail's `@type` may name: google/rpc/error_details.proto (as tonic-types ships
/// it) over the well-known types. `None` only if that set cannot be read, and then every
/// detail is shown as bytes.
static DETAIL_TYPES: LazyLock<Option<DescriptorPool>> = LazyLock::new(|| {
    let mut pool = DescriptorPool::global();
    match pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET) {
        Ok(()) => Some(pool),
        Err(error) => {
            tracing::error!(%error, "the google.rpc descriptors do not load; status details are shown as bytes");
            None
        }
    }
});

/// The details of a status, `details_bin` being its `grpc-status-details-bin` (an encoded
/// `google.rpc.Status`), in canonical JSON: each `{"@type": url, ...its fields}`, a type
/// not known here `{"@type": url, "value": "<base64>"}`. What does not decode is left out:
/// a detail never fails the reply it rides on.
pub fn details_json(details_bin: &[u8]) -> Vec<Value> {
    if details_bin.is_empty() {
        return Vec::new();
    }
    match tonic_types::pb::Status::decode(details_bin) {
        Ok(status) => status.details.iter().filter_map(detail_json).collect(),
        Err(error) => {
            tracing::debug!(%error, "status details that do not decode, left out");
            Vec::new()
        }
    }
}

fn detail_json(detail: &prost_reflect::prost_types::Any) -> Option<Value> {
    let pool = DETAIL_TYPES.as_ref();
    // Any's JSON form names its type by what follows the URL's last slash.
    let name = detail.type_url.rsplit('/').next().unwrap_or_default();
    let known = pool.filter(|pool| pool.get_message_by_name(name).is_some());
    let Some(any) = known.and_then(|pool| pool.get_message_by_name("google.protobuf.Any")) else {
        let value = base64::engine::general_purpose::STANDARD.encode(&detail.value);
        return Some(serde_json::json!({ "@type": detail.type_url, "value": value }));
    };
    // prost-reflect writes an Any as the proto3 JSON mapping does: `@type` first, then
    // the fields of the message it holds (or `value` for a well-known type of its own
    // form), and fails when that message does not decode.
    let message = DynamicMessage::decode(any, detail.encode_to_vec().as_slice()).ok()?;
    // As transcode::to_json writes replies: every field present.
    let options = SerializeOptions::new().skip_default_fields(false);
    match message.serialize_with_options(serde_json::value::Serializer, &options) {
        Ok(json) => Some(json),
        Err(error) => {
            tracing::debug!(%error, type_url = %detail.type_url, "a status detail that does not decode, left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tonic_types::{
        BadRequest, DebugInfo, ErrorDetail, ErrorInfo, Help, LocalizedMessage, PreconditionFailure,
        QuotaFailure, RequestInfo, ResourceInfo, RetryInfo, StatusExt,
    };

    use super::*;

    const RPC: &str = "type.googleapis.com/google.rpc.";

    /// The `grpc-status-details-bin` a service sends for `details`.
    fn sent(details: Vec<ErrorDetail>) -> Vec<u8> {
        tonic::Status::with_error_details_vec(Code::Internal, "failed", details)
            .details()
            .to_vec()
    }

    fn one(detail: impl Into<ErrorDetail>) -> Value {
        let rendered = details_json(&sent(vec![detail.into()]));
        assert_eq!(rendered.len(), 1, "{rendered:?}");
        rendered[0].clone()
    }

    #[test]
    fn every_detail_of_error_details_proto_renders_as_canonical_json() {
        let metadata = [("username".to_owned(), "bob".to_owned())];
        assert_eq!(
            one(ErrorInfo::new("USER_NOT_FOUND", "user", metadata)),
            json!({
                "@type": format!("{RPC}ErrorInfo"),
                "reason": "USER_NOT_FOUND",
                "domain": "user",
                "metadata": {"username": "bob"},
            })
        );
        assert_eq!(
            one(RetryInfo::new(Some(Duration::from_millis(1500)))),
            json!({"@type": format!("{RPC}RetryInfo"), "retryDelay": "1.500s"})
        );
        assert_eq!(
            one(DebugInfo::new(["main.rs:1".to_owned()], "panicked")),
            json!({
                "@type": format!("{RPC}DebugInfo"),
                "stackEntries": ["main.rs:1"],
                "detail": "panicked",
            })
        );
        assert_eq!(
            one(QuotaFailure::with_violation("project:7", "daily limit")),
            json!({
                "@type": format!("{RPC}QuotaFailure"),
                "violations": [{
                    "subject": "project:7",
                    "description": "daily limit",
                    "apiService": "",
                    "quotaMetric": "",
                    "quotaId": "",
                    "quotaDimensions": {},
                    "quotaValue": "0",
                }],
            })
        );
        assert_eq!(
            one(PreconditionFailure::with_violation(
                "TOS",
                "user:bob",
                "terms not accepted"
            )),
            json!({
                "@type": format!("{RPC}PreconditionFailure"),
                "violations": [{
                    "type": "TOS",
                    "subject": "user:bob",
                    "description": "terms not accepted",
                }],
            })
        );
        assert_eq!(
            one(BadRequest::with_violation("email", "not an address")),
            json!({
                "@type": format!("{RPC}BadRequest"),
                "fieldViolations": [
                    {"field": "email", "description": "not an address", "reason": ""},
                ],
            })
        );
        assert_eq!(
            one(RequestInfo::new("r-1", "node 3")),
            json!({
                "@type": format!("{RPC}RequestInfo"),
                "requestId": "r-1",
                "servingData": "node 3",
            })
        );
        assert_eq!(
            one(ResourceInfo::new("user", "bob", "team-a", "no such user")),
            json!({
                "@type": format!("{RPC}ResourceInfo"),
                "resourceType": "user",
                "resourceName": "bob",
                "owner": "team-a",
                "description": "no such user",
            })
        );
        assert_eq!(
            one(Help::with_link("sign-up", "https://example.com/signup")),
            json!({
                "@type": format!("{RPC}Help"),
                "links": [{"description": "sign-up", "url": "https://example.com/signup"}],
            })
        );
        assert_eq!(
            one(LocalizedMessage::new("fr-FR", "pas d'utilisateur")),
            json!({
                "@type": format!("{RPC}LocalizedMessage"),
                "locale": "fr-FR",
                "message": "pas d'utilisateur",
            })
        );
    }

    #[test]
    fn several_details_keep_the_order_they_were_sent_in() {
        let rendered = details_json(&sent(vec![
            BadRequest::with_violation("a", "b").into(),
            RetryInfo::new(Some(Duration::from_secs(2))).into(),
        ]));
        let types: Vec<&str> = rendered
            .iter()
            .filter_map(|d| d["@type"].as_str())
            .collect();
        assert_eq!(
            types,
            [format!("{RPC}BadRequest"), format!("{RPC}RetryInfo")]
        );
        assert_eq!(rendered[1]["retryDelay"], "2s");
    }

    /// A `google.rpc.Status` holding these `(type_url, value)` details.
    fn encoded(details: &[(&str, &[u8])]) -> Vec<u8> {
        tonic_types::pb::Status {
            code: Code::Internal as i32,
            message: "failed".into(),
            details: details
                .iter()
                .map(|(type_url, value)| prost_reflect::prost_types::Any {
                    type_url: (*type_url).into(),
                    value: value.to_vec(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_detail_of_a_type_not_known_here_is_its_bytes_in_base64() {
        let rendered = details_json(&encoded(&[("type.example.com/acme.v1.Quirk", b"hi")]));
        assert_eq!(
            rendered,
            [json!({"@type": "type.example.com/acme.v1.Quirk", "value": "aGk="})]
        );
    }

    #[test]
    fn a_detail_that_does_not_decode_is_left_out_and_the_others_kept() {
        let info = ErrorInfo::new("R", "d", std::collections::HashMap::new());
        let good = sent(vec![info.into()]);
        let good = tonic_types::pb::Status::decode(good.as_slice()).expect("a status");
        let rendered = details_json(&encoded(&[
            // Field 1 as a varint: ErrorInfo's reason is a string.
            (&format!("{RPC}ErrorInfo"), &[0x08, 0x01]),
            (&good.details[0].type_url, &good.details[0].value),
        ]));
        assert_eq!(rendered.len(), 1, "{rendered:?}");
        assert_eq!(rendered[0]["reason"], "R");
        assert_eq!(rendered[0]["metadata"], json!({}));
    }

    #[test]
    fn details_that_are_not_a_status_are_none() {
        assert!(details_json(b"\xff\xff\xff").is_empty());
        assert!(details_json(b"").is_empty());
    }

    #[test]
    fn a_body_without_details_has_no_details_key() {
        assert_eq!(
            error_body(Code::NotFound, "no user", Vec::new()),
            json!({"code": 5, "message": "no user"})
        );
        let with = error_body(Code::NotFound, "no user", vec![json!({"@type": "t"})]);
        assert_eq!(with["details"], json!([{"@type": "t"}]));
    }

    #[test]
    fn codes_map_like_grpc_gateway() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }
}
