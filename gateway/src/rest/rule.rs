//! A method's `google.api.http` option, read dynamically from its descriptor: prost's
//! generated `MethodOptions` would drop the extension, prost-reflect keeps it when the
//! pool holds `google/api/annotations.proto` (which a service's reflection sends along
//! with any file that imports it).

use http::Method;
use prost_reflect::{DynamicMessage, MethodDescriptor, ReflectMessage, Value};

use super::template::{Template, TemplateError};

/// The extension's full name.
const HTTP_OPTION: &str = "google.api.http";

/// Where the request message comes from besides the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body: every field not in the path comes from the query string.
    None,
    /// `body: "*"`: every field not in the path comes from the body.
    Whole,
    /// `body: "book"`: that field is the body; the rest not in the path from the query.
    Field(String),
}

/// One REST route of a method.
#[derive(Debug, Clone)]
pub struct HttpRule {
    pub method: Method,
    pub template: Template,
    pub body: BodyRule,
    /// `response_body: "books"`: that field of the reply is the response body.
    pub response_body: Option<String>,
}

/// Why a method's rule cannot be served; the method stays reachable over `/api`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleError {
    #[error("{method}: {source}")]
    Template {
        method: String,
        #[source]
        source: TemplateError,
    },
    #[error("{method}: a rule without a verb and a path")]
    NoPattern { method: String },
    #[error("{method}: {verb:?} is not an HTTP method")]
    BadVerb { method: String, verb: String },
    #[error("{method}: body {field:?} is not a field of {message}")]
    NoSuchBodyField {
        method: String,
        field: String,
        message: String,
    },
    #[error("{method}: response_body {field:?} is not a field of {message}")]
    NoSuchResponseField {
        method: String,
        field: String,
        message: String,
    },
    #[error("{method}: path variable {path} is not a field of {message}")]
    NoSuchPathField {
        method: String,
        path: String,
        message: String,
    },
    #[error("{method}: a method that takes a stream of requests has no REST route")]
    Streaming { method: String },
}

/// The rules of `method` (its own and its `additional_bindings`), none when it has no
/// `google.api.http` option. Each is checked against the messages: a rule naming a field
/// the request or reply does not have is an error, not a route that fails every call.
pub fn rules_of(method: &MethodDescriptor) -> Vec<Result<HttpRule, RuleError>> {
    let pool = method.parent_pool();
    let Some(extension) = pool.get_extension_by_name(HTTP_OPTION) else {
        return Vec::new();
    };
    let options = method.options();
    if !options.has_extension(&extension) {
        return Vec::new();
    }
    let Value::Message(rule) = options.get_extension(&extension).into_owned() else {
        return Vec::new();
    };
    let name = method.full_name().to_owned();
    if method.is_client_streaming() {
        return vec![Err(RuleError::Streaming { method: name })];
    }
    let mut rules = vec![one_rule(method, &rule)];
    if let Some(Value::List(more)) = field(&rule, "additional_bindings") {
        for extra in more {
            if let Value::Message(extra) = extra {
                rules.push(one_rule(method, &extra));
            }
        }
    }
    rules
}

fn field(message: &DynamicMessage, name: &str) -> Option<Value> {
    let descriptor = message.descriptor().get_field_by_name(name)?;
    message
        .has_field(&descriptor)
        .then(|| message.get_field(&descriptor).into_owned())
}

fn text(message: &DynamicMessage, name: &str) -> Option<String> {
    match field(message, name)? {
        Value::String(text) if !text.is_empty() => Some(text),
        _ => None,
    }
}

fn one_rule(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<HttpRule, RuleError> {
    let name = method.full_name().to_owned();
    let standard = [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ];
    let pattern = standard
        .into_iter()
        .find_map(|(key, verb)| text(rule, key).map(|path| (verb, path)));
    let (verb, path) = match pattern {
        Some(found) => found,
        None => match field(rule, "custom") {
            Some(Value::Message(custom)) => {
                let kind = text(&custom, "kind").unwrap_or_default();
                let path = text(&custom, "path").ok_or(RuleError::NoPattern {
                    method: name.clone(),
                })?;
                let verb = Method::from_bytes(kind.as_bytes()).map_err(|_| RuleError::BadVerb {
                    method: name.clone(),
                    verb: kind.clone(),
                })?;
                (verb, path)
            }
            _ => return Err(RuleError::NoPattern { method: name }),
        },
    };
    let template = Template::parse(&path).map_err(|source| RuleError::Template {
        method: name.clone(),
        source,
    })?;
    let input = method.input();
    for variable in template.variables() {
        if !has_field_path(&input, variable.field_path()) {
            return Err(RuleError::NoSuchPathField {
                method: name,
                path: variable.field_path().join("."),
                message: input.full_name().to_owned(),
            });
        }
    }
    let body = match text(rule, "body").as_deref() {
        None => BodyRule::None,
        Some("*") => BodyRule::Whole,
        Some(field) => {
            if input.get_field_by_name(field).is_none() {
                return Err(RuleError::NoSuchBodyField {
                    method: name,
                    field: field.to_owned(),
                    message: input.full_name().to_owned(),
                });
            }
            BodyRule::Field(field.to_owned())
        }
    };
    let response_body = text(rule, "response_body");
    if let Some(field) = &response_body {
        let output = method.output();
        if output.get_field_by_name(field).is_none() {
            return Err(RuleError::NoSuchResponseField {
                method: name,
                field: field.clone(),
                message: output.full_name().to_owned(),
            });
        }
    }
    Ok(HttpRule {
        method: verb,
        template,
        body,
        response_body,
    })
}

/// Whether `path` (`book.name`) names a field through singular message fields.
fn has_field_path(message: &prost_reflect::MessageDescriptor, path: &[String]) -> bool {
    let mut current = message.clone();
    for (i, part) in path.iter().enumerate() {
        let Some(field) = current.get_field_by_name(part) else {
            return false;
        };
        if i + 1 == path.len() {
            return !field.is_list() && !field.is_map();
        }
        match field.kind() {
            prost_reflect::Kind::Message(next) if !field.is_list() && !field.is_map() => {
                current = next
            }
            _ => return false,
        }
    }
    true
}
