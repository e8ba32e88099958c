//! JSON in and out of `/api`: the request body or query parameters decoded into the
//! method's input message by its descriptor, and the reply encoded as protobuf's
//! canonical JSON.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;
use tonic::Code;

use crate::failure::Failure;

/// How much of a refused body is read and dropped so that the client, still sending,
/// reads the 413 instead of a reset connection.
const DRAIN_AT_MOST: usize = 1 << 20;
const DRAIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// The reply message as JSON, every field present.
pub fn to_json(message: &DynamicMessage) -> Result<Value, Failure> {
    let options = SerializeOptions::new().skip_default_fields(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| Failure::new(Code::Internal, format!("encoding the reply as JSON: {e}")))
}

/// The call's input: query parameters on GET, else the JSON body (at most `max_body`
/// bytes; an empty body is an empty message).
pub async fn read_input(
    request: Request,
    input: &MessageDescriptor,
    max_body: usize,
) -> Result<DynamicMessage, Failure> {
    let json = if request.method() == Method::GET {
        query_to_json(request.uri().query().unwrap_or(""), input)?
    } else {
        read_json_body(request, max_body)
            .await?
            .unwrap_or_else(|| Value::Object(Default::default()))
    };
    to_message(json, input)
}

/// The request's JSON body (at most `max_body` bytes); `None` when it is empty.
pub async fn read_json_body(request: Request, max_body: usize) -> Result<Option<Value>, Failure> {
    let body = read_body(request, max_body).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Failure::new(Code::InvalidArgument, format!("malformed JSON body: {e}")))
}

/// The whole body, or 413 when it is larger than `max` (declared or sent), or 400 when
/// it cannot be read (a lying chunk size, fewer bytes than its `Content-Length`).
async fn read_body(request: Request, max: usize) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            Code::ResourceExhausted,
            format!("body larger than {max} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut body = request.into_body();
    if declared.is_some_and(|len| len > max) {
        drain(body).await;
        return Err(too_large());
    }
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unreadable(&e))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > max {
                drain(body).await;
                return Err(too_large());
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(collected))
}

/// 408 for a body that stalled past `http.body_read_timeout`, 400 for one that broke its
/// own framing.
fn unreadable(error: &axum::Error) -> Failure {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return Failure::new(Code::DeadlineExceeded, "the request body stalled")
                .with_status(StatusCode::REQUEST_TIMEOUT);
        }
        cause = error.source();
    }
    Failure::new(
        Code::InvalidArgument,
        format!("the request body could not be read: {error}"),
    )
}

/// Reads and drops what remains of a refused body, within bounds, like a server's
/// lingering close: a client that sends without `Expect: 100-continue` then reads the
/// reply instead of a broken pipe.
async fn drain(mut body: axum::body::Body) {
    let _ = tokio::time::timeout(DRAIN_PATIENCE, async {
        let mut drained = 0;
        while drained < DRAIN_AT_MOST {
            match body.frame().await {
                Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

/// Decodes JSON into the request message; on failure names the field at fault.
pub fn to_message(json: Value, input: &MessageDescriptor) -> Result<DynamicMessage, Failure> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    match DynamicMessage::deserialize_with_options(input.clone(), &json, &options) {
        Ok(message) => Ok(message),
        Err(error) => {
            let Value::Object(fields) = &json else {
                return Err(Failure::new(
                    Code::InvalidArgument,
                    format!("the body must be a JSON object: {error}"),
                ));
            };
            let fails = |object: serde_json::Map<String, Value>| {
                DynamicMessage::deserialize_with_options(
                    input.clone(),
                    &Value::Object(object),
                    &options,
                )
                .is_err()
            };
            // The field that does not fit on its own; else (two members of one oneof, one
            // field under both its names) the one whose addition breaks the others.
            let alone = fields.iter().find(|(name, value)| {
                fails([((*name).clone(), (*value).clone())].into_iter().collect())
            });
            let culprit = alone.or_else(|| {
                let mut so_far = serde_json::Map::new();
                fields.iter().find(|(name, value)| {
                    so_far.insert((*name).clone(), (*value).clone());
                    fails(so_far.clone())
                })
            });
            let message = match culprit {
                Some((name, _)) => format!("field {name:?}: {error}"),
                None => error.to_string(),
            };
            Err(Failure::new(Code::InvalidArgument, message))
        }
    }
}

/// Query parameters as JSON for a message of scalar fields, typed by the descriptor.
pub fn query_to_json(query: &str, input: &MessageDescriptor) -> Result<Value, Failure> {
    let mut object = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key);
        let value = percent_decode(raw_value);
        let field = input
            .get_field_by_json_name(&key)
            .or_else(|| input.get_field_by_name(&key))
            .ok_or_else(|| {
                Failure::new(
                    Code::InvalidArgument,
                    format!("field {key:?}: no such field in {}", input.full_name()),
                )
            })?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(Failure::new(
                Code::InvalidArgument,
                format!("field {key:?}: GET takes scalar fields only; use POST with a JSON body"),
            ));
        }
        let typed = match field.kind() {
            Kind::Bool => match value.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => {
                    return Err(Failure::new(
                        Code::InvalidArgument,
                        format!("field {key:?}: {value:?} is not true or false"),
                    ));
                }
            },
            Kind::String | Kind::Bytes | Kind::Enum(_) => Value::String(value),
            // Numbers travel as strings, which protobuf's JSON mapping accepts for every numeric type.
            _ => Value::String(value),
        };
        object.insert(key, typed);
    }
    Ok(Value::Object(object))
}

pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, other) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_plus_and_stray_percent() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
