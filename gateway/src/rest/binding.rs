//! A REST request as the method's input message: path variables, then the body as its
//! rule says, then the query string for every field neither of them bound; and the reply
//! as the response body.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage};
use serde_json::{Map, Value};
use tonic::Code;

use super::rule::{BodyRule, HttpRule};
use super::template::Bindings;
use crate::failure::Failure;
use crate::transcode::{percent_decode, to_json, to_message};

/// Well-known messages whose canonical JSON is a string, so that a path or query value
/// can fill them (`update_mask=title,author`, `at=2026-01-02T03:04:05Z`).
pub(crate) const STRING_SHAPED: &[&str] = &[
    "google.protobuf.FieldMask",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
];

/// The input message of a call matched to `rule`: `bindings` from the path, `body` (the
/// parsed JSON, when the rule takes one) and the raw `query`.
pub fn request_message(
    input: &MessageDescriptor,
    rule: &HttpRule,
    bindings: Bindings<'_>,
    query: &str,
    body: Option<Value>,
) -> Result<DynamicMessage, Failure> {
    let mut json = Map::new();
    // Fields the body fills, for the query to leave alone (top level, proto names).
    let mut from_body: Vec<String> = Vec::new();
    let mut mask = None;
    match (&rule.body, body) {
        (BodyRule::None, _) | (_, None) => {}
        (BodyRule::Whole, Some(Value::Object(object))) => {
            from_body.extend(object.keys().cloned());
            json = object;
        }
        (BodyRule::Whole, Some(_)) => {
            return Err(invalid("the body must be a JSON object".to_owned()));
        }
        (BodyRule::Field(name), Some(value)) => {
            mask = implied_mask(input, rule, name, &value);
            from_body.push(name.clone());
            json.insert(name.clone(), value);
        }
    }
    let mut from_path: Vec<&[String]> = Vec::new();
    for (path, value) in bindings {
        let leaf = leaf_field(input, path)
            .ok_or_else(|| invalid(format!("path variable {}: no such field", path.join("."))))?;
        set(&mut json, path, typed(&leaf, &path.join("."), value)?);
        from_path.push(path);
    }
    // `body: "*"` leaves nothing to the query string.
    if rule.body != BodyRule::Whole {
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(raw_key);
            let path: Vec<String> = key.split('.').map(|part| snake(input, part)).collect();
            let taken = from_path.iter().any(|bound| overlaps(bound, &path))
                || from_body
                    .first()
                    .is_some_and(|name| path.first() == Some(name));
            if taken {
                return Err(invalid(format!(
                    "query parameter {key:?}: the field is bound by the path or the body"
                )));
            }
            let leaf = leaf_field(input, &path)
                .ok_or_else(|| invalid(format!("query parameter {key:?}: no such field")))?;
            let value = typed(&leaf, &key, percent_decode(raw_value))?;
            // Kept as the caller wrote it, so that an error names the key it sent.
            let written: Vec<String> = key.split('.').map(str::to_owned).collect();
            if leaf.is_list() {
                push(&mut json, &written, value);
            } else {
                set(&mut json, &written, value);
            }
        }
    }
    if let Some((field, paths)) = mask {
        // A mask the caller sent in the query is the caller's.
        if !json.contains_key(field.name()) && !json.contains_key(field.json_name()) {
            json.insert(field.name().to_owned(), Value::String(paths));
        }
    }
    to_message(Value::Object(json), input)
}

/// The reply as the response body: the whole message, or its `response_body` field.
pub fn response_json(reply: &DynamicMessage, rule: &HttpRule) -> Result<Value, Failure> {
    let json = to_json(reply)?;
    let Some(field) = &rule.response_body else {
        return Ok(json);
    };
    let json_name = reply
        .descriptor()
        .get_field_by_name(field)
        .map(|field| field.json_name().to_owned())
        .unwrap_or_else(|| field.clone());
    Ok(match json {
        Value::Object(mut object) => object.remove(&json_name).unwrap_or(Value::Null),
        other => other,
    })
}

/// PATCH with a body field and a `google.protobuf.FieldMask update_mask`: the mask that
/// names what the body holds (its field and paths), for when the caller sent none, so
/// that an update changes only what was sent.
fn implied_mask(
    input: &MessageDescriptor,
    rule: &HttpRule,
    body_field: &str,
    body: &Value,
) -> Option<(FieldDescriptor, String)> {
    if rule.method != http::Method::PATCH {
        return None;
    }
    let mask = input.get_field_by_name("update_mask")?;
    let Kind::Message(mask_type) = mask.kind() else {
        return None;
    };
    let Kind::Message(target) = input.get_field_by_name(body_field)?.kind() else {
        return None;
    };
    let Value::Object(object) = body else {
        return None;
    };
    if mask_type.full_name() != "google.protobuf.FieldMask" || mask.is_list() {
        return None;
    }
    let mut paths = Vec::new();
    mask_paths(&target, object, "", &mut paths);
    Some((mask, paths.join(",")))
}

/// The field paths (camelCase, as FieldMask's JSON writes them, in the order of the
/// body's keys by name) of every leaf of `object`; a nested message is descended into, a map or well-known type is a leaf.
fn mask_paths(
    message: &MessageDescriptor,
    object: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (key, value) in object {
        let field = message
            .get_field_by_json_name(key)
            .or_else(|| message.get_field_by_name(key));
        let Some(field) = field else {
            // Unknown keys fail when the message is decoded; the mask need not say more.
            continue;
        };
        let path = format!("{prefix}{}", field.json_name());
        match (field.kind(), value) {
            (Kind::Message(nested), Value::Object(inner))
                if !field.is_map()
                    && !field.is_list()
                    && !nested.full_name().starts_with("google.protobuf.")
                    && !inner.is_empty() =>
            {
                mask_paths(&nested, inner, &format!("{path}."), out)
            }
            _ => out.push(path),
        }
    }
}

fn invalid(message: String) -> Failure {
    Failure::new(Code::InvalidArgument, message)
}

/// A query key part as the field's proto name (a client may write `pageSize`).
fn snake(message: &MessageDescriptor, part: &str) -> String {
    message
        .get_field_by_json_name(part)
        .map(|field| field.name().to_owned())
        .unwrap_or_else(|| part.to_owned())
}

/// Whether two field paths name the same field or one lies inside the other.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// The field at `path` through singular messages (the last part may be repeated).
fn leaf_field(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for part in parents {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))?;
        match field.kind() {
            Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
            _ => return None,
        }
    }
    current
        .get_field_by_name(last)
        .or_else(|| current.get_field_by_json_name(last))
}

/// A text value as the JSON the field's canonical mapping reads.
fn typed(field: &FieldDescriptor, name: &str, value: String) -> Result<Value, Failure> {
    if field.is_map() {
        return Err(invalid(format!(
            "{name}: a map field cannot come from the path or query; send it in the body"
        )));
    }
    match field.kind() {
        Kind::Bool => match value.as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(invalid(format!("{name}: {value:?} is not true or false"))),
        },
        Kind::Message(message) if !STRING_SHAPED.contains(&message.full_name()) => {
            Err(invalid(format!(
                "{name}: a message field cannot come from the path or query; send it in the body"
            )))
        }
        // Numbers travel as strings, which protobuf's JSON mapping reads for every numeric
        // type; enums by name; bytes as base64.
        _ => Ok(Value::String(value)),
    }
}

/// Sets `value` at `path` in `object`, making the nested objects on the way.
fn set(object: &mut Map<String, Value>, path: &[String], value: Value) {
    if let Some((last, parents)) = path.split_last() {
        descend(object, parents).insert(last.clone(), value);
    }
}

/// Appends `value` to the list at `path` (`tags=a&tags=b`).
fn push(object: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let list = descend(object, parents)
        .entry(last.clone())
        .or_insert_with(|| Value::Array(Vec::new()));
    match list {
        Value::Array(items) => items.push(value),
        other => *other = Value::Array(vec![value]),
    }
}

/// The object at `parents` under `object`, made (or made an object) where missing.
fn descend<'a>(
    object: &'a mut Map<String, Value>,
    parents: &[String],
) -> &'a mut Map<String, Value> {
    let mut current = object;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        current = match entry {
            Value::Object(next) => next,
            _ => unreachable!("made an object just above"),
        };
    }
    current
}
