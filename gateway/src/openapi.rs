//! `GET /openapi.json` and `GET /openapi/{service}.json`: an OpenAPI 3.1 document of
//! what the public port serves, made on each request from the REST table in force and
//! the schemas of each service's newest running version (both cached by the gateway), so
//! that a service joining or changing shows within the table's refresh.
//!
//! Schemas follow protobuf's canonical JSON mapping, each message once under
//! `components.schemas` by its full name; well-known types are written inline as the
//! JSON they map to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http::Method;
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};
use tonic::Code;

use crate::api::MethodPolicy;
use crate::rest::rule::BodyRule;
use crate::rest::table::{RestRoute, RestTable};
use crate::settings::Route;
use crate::state::Gateway;

/// How long one service's schema may take to read; past it the document leaves the
/// service's `/api` methods out rather than keep the caller waiting.
const SCHEMA_PATIENCE: Duration = Duration::from_secs(5);

/// Where `components` keeps the error body every operation may answer with.
const ERROR_SCHEMA: &str = "rust_ms.Error";

/// What the document needs of one service: the methods of its newest version and its
/// route (which may make a method safe to repeat, so callable with GET on `/api`).
pub struct ServiceApi {
    pub methods: Vec<MethodDescriptor>,
    pub route: Arc<Route>,
}

/// `GET /openapi.json`: the whole cluster.
pub async fn whole(State(gateway): State<Arc<Gateway>>) -> Response {
    let services = services(&gateway).await;
    let table = gateway.rest.current();
    Json(document(env!("CARGO_PKG_VERSION"), &table, &services, None)).into_response()
}

/// `GET /openapi/{service}.json`: one service's REST routes and `/api` methods.
pub async fn one(State(gateway): State<Arc<Gateway>>, Path(file): Path<String>) -> Response {
    let Some(service) = file.strip_suffix(".json") else {
        return not_found(format!(
            "no document {file:?}: ask for /openapi/{{service}}.json"
        ));
    };
    let services = services(&gateway).await;
    let table = gateway.rest.current();
    let known = services.contains_key(service)
        || table.routes().any(|(_, _, route)| route.service == service);
    if !known {
        return not_found(format!("no service {service:?} behind this gateway"));
    }
    Json(document(
        env!("CARGO_PKG_VERSION"),
        &table,
        &services,
        Some(service),
    ))
    .into_response()
}

fn not_found(message: String) -> Response {
    let body = crate::status::error_body(Code::NotFound, &message, Vec::new());
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Every service's newest running version's methods, as the REST table is built from;
/// a service whose schema cannot be read now is left out (and logged at debug).
async fn services(gateway: &Gateway) -> BTreeMap<String, ServiceApi> {
    let mut services = BTreeMap::new();
    for (service, node) in gateway.newest_nodes(false) {
        let schema = match tokio::time::timeout(SCHEMA_PATIENCE, gateway.schema_of(&node)).await {
            Ok(Ok(schema)) => schema,
            Ok(Err(error)) => {
                tracing::debug!(%service, %error, "left out of the OpenAPI document");
                continue;
            }
            Err(_) => {
                tracing::debug!(%service, "schema too slow; left out of the OpenAPI document");
                continue;
            }
        };
        let methods = schema
            .method_names()
            .into_iter()
            .filter_map(|name| schema.method(name).cloned())
            .collect();
        let route = gateway.routes.route(&service);
        services.insert(service, ServiceApi { methods, route });
    }
    services
}

/// The document: every REST route of `table` and every `/api` method of `services`, or
/// only those of the service `only`.
pub fn document(
    version: &str,
    table: &RestTable,
    services: &BTreeMap<String, ServiceApi>,
    only: Option<&str>,
) -> Value {
    let mut builder = Builder::default();
    let mut routes: Vec<(&Method, &crate::rest::Template, &RestRoute)> = table
        .routes()
        .filter(|(_, _, route)| only.is_none_or(|service| route.service == service))
        .collect();
    // GET first, so that a path shared by several routes is named by its read.
    routes.sort_by_key(|(verb, template, route)| {
        (
            *verb != Method::GET,
            route.service.clone(),
            template.as_str().to_owned(),
            verb.as_str().to_owned(),
        )
    });
    for (verb, template, route) in routes {
        builder.rest_operation(verb, template, route);
    }
    for (service, api) in services {
        if only.is_some_and(|wanted| wanted != service) {
            continue;
        }
        let mut methods: Vec<&MethodDescriptor> = api.methods.iter().collect();
        methods.sort_by(|a, b| a.name().cmp(b.name()));
        for method in methods {
            builder.api_operations(service, method, &api.route);
        }
    }
    builder.finish(version, only)
}

/// One path item: the path as shown, its parameters' names in order, its operations.
struct PathItem {
    shown: String,
    names: Vec<String>,
    operations: Map<String, Value>,
}

#[derive(Default)]
struct Builder {
    /// By the path with its parameter names blanked: OpenAPI takes two paths that differ
    /// only in those names as one, so their operations share one item.
    paths: BTreeMap<String, PathItem>,
    schemas: BTreeMap<String, Value>,
    operation_ids: BTreeSet<String>,
    left_out: Vec<Value>,
}

impl Builder {
    fn rest_operation(
        &mut self,
        verb: &Method,
        template: &crate::rest::Template,
        route: &RestRoute,
    ) {
        let method = &route.method;
        let rule = &route.rule;
        let Some(slot) = operation_slot(verb) else {
            self.leave_out(
                verb,
                template.as_str(),
                "OpenAPI 3.1 has no operation for this HTTP method",
            );
            return;
        };
        let (path, parameters) = template.openapi_path();
        let key = blank_names(&path);
        let names = match self.paths.get(&key) {
            Some(item) if item.operations.contains_key(slot) => {
                let reason = format!("{} {} takes the same OpenAPI path", verb, item.shown);
                self.leave_out(verb, template.as_str(), &reason);
                return;
            }
            Some(item) => item.names.clone(),
            None => parameters.iter().map(|p| p.name.clone()).collect(),
        };
        let input = method.input();
        let mut params = Vec::new();
        let mut bound: Vec<Vec<String>> = Vec::new();
        for (parameter, name) in parameters.iter().zip(&names) {
            let variable = parameter.field_path.as_ref().and_then(|path| {
                template
                    .variables()
                    .iter()
                    .find(|variable| variable.field_path() == path.as_slice())
            });
            let (schema, description) = match variable {
                Some(variable) if !variable.is_multi_segment() => {
                    let schema = leaf_field(&input, variable.field_path())
                        .map(|field| self.field(&field))
                        .unwrap_or_else(|| json!({ "type": "string" }));
                    (schema, format!("`{}`", variable.field_path().join(".")))
                }
                Some(variable) => (
                    json!({ "type": "string" }),
                    format!(
                        "A segment of `{}`: the field is the segments `{}` spans, joined by `/`.",
                        variable.field_path().join("."),
                        template.as_str()
                    ),
                ),
                None => (
                    json!({ "type": "string" }),
                    "A segment the template matches but binds to no field.".to_owned(),
                ),
            };
            let description = if parameter.rest {
                format!(
                    "{description} The rest of the path: it may hold `/`, which an OpenAPI path parameter cannot say."
                )
            } else {
                description
            };
            params.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": description,
                "schema": schema,
            }));
        }
        for variable in template.variables() {
            bound.push(variable.field_path().to_vec());
        }
        let body_field = match &rule.body {
            BodyRule::Field(name) => Some(name.as_str()),
            _ => None,
        };
        if rule.body != BodyRule::Whole {
            let mut seen = vec![input.full_name().to_owned()];
            self.query_parameters(&input, "", &[], &bound, body_field, &mut seen, &mut params);
        }
        let request_body = match &rule.body {
            BodyRule::None => None,
            BodyRule::Whole => Some(self.message_ref(&input)),
            BodyRule::Field(name) => input
                .get_field_by_name(name)
                .map(|field| self.field(&field)),
        };
        let response = match &rule.response_body {
            Some(name) => method
                .output()
                .get_field_by_name(name)
                .map(|field| self.field(&field))
                .unwrap_or_else(|| json!({})),
            None => self.message_ref(&method.output()),
        };
        let mut operation = json!({
            "operationId": self.operation_id(&format!("{}.{}", route.service, method.name())),
            "tags": [route.service],
            "summary": format!("{} (REST)", method.full_name()),
            "description": format!(
                "`{verb} {}`, the `google.api.http` rule of `{}`.",
                template.as_str(),
                method.full_name()
            ),
            "parameters": params,
            "responses": responses_of(method, response),
        });
        if let Some(schema) = request_body {
            operation["requestBody"] = json_body(schema);
        }
        let item = self.paths.entry(key).or_insert_with(|| PathItem {
            shown: path,
            names,
            operations: Map::new(),
        });
        item.operations.insert(slot.to_owned(), operation);
    }

    /// `POST /api/{service}/{Method}`, and `GET` for a method safe to repeat; a stream
    /// is described as what `/api` answers for it.
    fn api_operations(&mut self, service: &str, method: &MethodDescriptor, route: &Route) {
        let path = format!("/api/{service}/{}", method.name());
        let input = method.input();
        // A stream of requests needs a WebSocket or gRPC; a server stream is answered as
        // JSON lines or events.
        let streams = method.is_client_streaming();
        let mut operations = Map::new();
        if streams {
            let id = self.operation_id(&format!("api.{service}.{}", method.name()));
            let mut answers = responses(json!({}));
            if let Value::Object(answers) = &mut answers {
                answers.remove("200");
                answers.insert(
                    "501".to_owned(),
                    json!({ "$ref": "#/components/responses/Error" }),
                );
            }
            operations.insert(
                "post".to_owned(),
                json!({
                    "operationId": id,
                    "tags": [service],
                    "summary": method.full_name(),
                    "description": "A method that takes a stream of requests: a POST answers 501 (UNIMPLEMENTED). Open a WebSocket on this path instead (GET with Upgrade: websocket): each request message a JSON text frame, an empty text frame to end the requests, each reply message a JSON text frame; or call it over gRPC on the gateway's rpc port.",
                    "responses": answers,
                }),
            );
        } else {
            let output = self.message_ref(&method.output());
            let body = self.message_ref(&input);
            let id = self.operation_id(&format!("api.{service}.{}", method.name()));
            operations.insert(
                "post".to_owned(),
                json!({
                    "operationId": id,
                    "tags": [service],
                    "summary": method.full_name(),
                    "description": "The method's input as the JSON body (canonical protobuf JSON), its output as the reply.",
                    "requestBody": json_body(body),
                    "responses": responses_of(method, output.clone()),
                }),
            );
            if MethodPolicy::of(route, method).get {
                let params: Vec<Value> = input
                    .fields()
                    .filter(|field| {
                        !field.is_list()
                            && !field.is_map()
                            && !matches!(field.kind(), Kind::Message(_))
                    })
                    .map(|field| {
                        json!({
                            "name": field.json_name(),
                            "in": "query",
                            "schema": self.field(&field),
                        })
                    })
                    .collect();
                let id = self.operation_id(&format!("api.{service}.{}.get", method.name()));
                operations.insert(
                    "get".to_owned(),
                    json!({
                        "operationId": id,
                        "tags": [service],
                        "summary": method.full_name(),
                        "description": "Safe to repeat, so also taken by GET: the input's scalar fields as query parameters.",
                        "parameters": params,
                        "responses": responses_of(method, output),
                    }),
                );
            }
        }
        let key = blank_names(&path);
        let item = self.paths.entry(key).or_insert_with(|| PathItem {
            shown: path.clone(),
            names: Vec::new(),
            operations: Map::new(),
        });
        for (slot, operation) in operations {
            if item.operations.contains_key(&slot) {
                let verb = slot.to_uppercase();
                self.left_out.push(json!({
                    "method": verb,
                    "path": path,
                    "reason": "a REST route takes the same path and method",
                }));
                continue;
            }
            item.operations.insert(slot, operation);
        }
    }

    /// The fields a REST rule leaves to the query string, as grpc-gateway reads them:
    /// scalars and repeated scalars, nested messages' fields as `filter.author`; not the
    /// fields the path or the body binds, nor maps or repeated messages.
    #[allow(clippy::too_many_arguments)]
    fn query_parameters(
        &mut self,
        message: &MessageDescriptor,
        prefix: &str,
        parents: &[String],
        bound: &[Vec<String>],
        body_field: Option<&str>,
        seen: &mut Vec<String>,
        out: &mut Vec<Value>,
    ) {
        for field in message.fields() {
            if parents.is_empty() && body_field == Some(field.name()) {
                continue;
            }
            let mut path = parents.to_vec();
            path.push(field.name().to_owned());
            if bound.contains(&path) || field.is_map() {
                continue;
            }
            let name = format!("{prefix}{}", field.json_name());
            let inside_bound = bound.iter().any(|bound| bound.starts_with(&path));
            match field.kind() {
                Kind::Message(nested)
                    if !crate::rest::binding::STRING_SHAPED.contains(&nested.full_name()) =>
                {
                    // A message that holds itself would have endless keys: one level only.
                    if field.is_list() || seen.iter().any(|name| name == nested.full_name()) {
                        continue;
                    }
                    seen.push(nested.full_name().to_owned());
                    let prefix = format!("{name}.");
                    self.query_parameters(&nested, &prefix, &path, bound, None, seen, out);
                    seen.pop();
                }
                _ if inside_bound => {}
                _ => {
                    let mut parameter = json!({
                        "name": name,
                        "in": "query",
                        "schema": self.field(&field),
                    });
                    if field.is_list() {
                        parameter["style"] = json!("form");
                        parameter["explode"] = json!(true);
                    }
                    out.push(parameter);
                }
            }
        }
    }

    fn leave_out(&mut self, verb: &Method, template: &str, reason: &str) {
        self.left_out.push(json!({
            "method": verb.as_str(),
            "path": template,
            "reason": reason,
        }));
    }

    /// `base`, or `base.2`, `base.3`… when taken: operation ids are unique in a document.
    fn operation_id(&mut self, base: &str) -> String {
        let mut id = base.to_owned();
        let mut n = 1;
        while self.operation_ids.contains(&id) {
            n += 1;
            id = format!("{base}.{n}");
        }
        self.operation_ids.insert(id.clone());
        id
    }

    /// The schema of a field's value as canonical JSON writes it.
    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => self.kind(&entry.map_entry_value_field().kind()),
                _ => json!({}),
            };
            return json!({ "type": "object", "additionalProperties": value });
        }
        let one = self.kind(&field.kind());
        if field.is_list() {
            json!({ "type": "array", "items": one })
        } else {
            one
        }
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "format": "uint32", "minimum": 0 })
            }
            // 64-bit integers are strings in canonical JSON (numbers are read too).
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "string", "format": "int64" })
            }
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
            Kind::Float => json!({ "type": "number", "format": "float" }),
            Kind::Double => json!({ "type": "number", "format": "double" }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => {
                json!({ "type": "string", "format": "byte", "contentEncoding": "base64" })
            }
            Kind::Enum(descriptor) => self.enum_ref(descriptor),
            Kind::Message(descriptor) => self.message_ref(descriptor),
        }
    }

    fn enum_ref(&mut self, descriptor: &EnumDescriptor) -> Value {
        if descriptor.full_name() == "google.protobuf.NullValue" {
            return json!({ "type": "null" });
        }
        let name = descriptor.full_name();
        if !self.schemas.contains_key(name) {
            let names: Vec<String> = descriptor
                .values()
                .map(|value| value.name().to_owned())
                .collect();
            self.schemas.insert(
                name.to_owned(),
                json!({ "title": name, "type": "string", "enum": names }),
            );
        }
        reference(name)
    }

    /// A `$ref` to the message's schema, made on first use; a well-known type inline.
    fn message_ref(&mut self, descriptor: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(descriptor.full_name()) {
            return schema;
        }
        let name = descriptor.full_name();
        if !self.schemas.contains_key(name) {
            // Taken before the fields are walked, so that a message holding itself
            // refers to itself instead of recursing.
            self.schemas.insert(name.to_owned(), Value::Null);
            let schema = self.message_schema(descriptor);
            self.schemas.insert(name.to_owned(), schema);
        }
        reference(name)
    }

    fn message_schema(&mut self, descriptor: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        for field in descriptor.fields() {
            let mut schema = self.field(&field);
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
                let others: Vec<String> = oneof
                    .fields()
                    .map(|f| format!("`{}`", f.json_name()))
                    .collect();
                let note = format!(
                    "One of `{}`: set at most one of {}.",
                    oneof.name(),
                    others.join(", ")
                );
                schema = with_description(schema, note);
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({
            "title": descriptor.full_name(),
            "type": "object",
            "properties": properties,
        });
        let oneofs: Vec<String> = descriptor
            .oneofs()
            .filter(|oneof| !oneof.is_synthetic())
            .map(|oneof| {
                let fields: Vec<String> =
                    oneof.fields().map(|f| f.json_name().to_owned()).collect();
                format!("`{}` ({})", oneof.name(), fields.join(", "))
            })
            .collect();
        if !oneofs.is_empty() {
            schema["description"] = json!(format!(
                "Every field is optional; of each oneof at most one is set: {}.",
                oneofs.join("; ")
            ));
        }
        schema
    }

    fn finish(mut self, version: &str, only: Option<&str>) -> Value {
        self.schemas.insert(
            ERROR_SCHEMA.to_owned(),
            json!({
                "title": "What a failed call answers",
                "type": "object",
                "properties": {
                    "code": { "type": "integer", "format": "int32", "description": "The gRPC status code." },
                    "message": { "type": "string" },
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": { "@type": { "type": "string" } },
                            "additionalProperties": true,
                        },
                    },
                },
                "required": ["code", "message"],
            }),
        );
        let paths: Map<String, Value> = self
            .paths
            .into_values()
            .map(|item| (item.shown, Value::Object(item.operations)))
            .collect();
        let title = match only {
            Some(service) => format!("rust-ms gateway: {service}"),
            None => "rust-ms gateway".to_owned(),
        };
        let mut document = json!({
            "openapi": "3.1.0",
            "info": {
                "title": title,
                "version": version,
                "description": "Made from the services' descriptors: their google.api.http routes and every method under /api, in protobuf's canonical JSON (64-bit integers as strings, enums by name).",
            },
            "paths": paths,
            "components": {
                "schemas": self.schemas,
                "responses": {
                    "Error": {
                        "description": "The call failed: the gRPC status, mapped to its HTTP status.",
                        "content": { "application/json": { "schema": reference(ERROR_SCHEMA) } },
                    },
                },
            },
        });
        if !self.left_out.is_empty() {
            document["x-rust-ms-left-out"] = Value::Array(self.left_out);
        }
        document
    }
}

/// The canonical JSON of a well-known message, which is not that of an ordinary one.
fn well_known(name: &str) -> Option<Value> {
    let nullable = |kind: &str, format: Option<&str>| {
        let mut schema = json!({ "type": [kind, "null"] });
        if let Some(format) = format {
            schema["format"] = json!(format);
        }
        schema
    };
    Some(match name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => json!({ "type": "string", "pattern": r"^-?\d+(\.\d+)?s$" }),
        "google.protobuf.FieldMask" => json!({
            "type": "string",
            "description": "Field paths in lowerCamel, separated by commas.",
        }),
        "google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array", "items": {} }),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "required": ["@type"],
            "additionalProperties": true,
        }),
        "google.protobuf.DoubleValue" => nullable("number", Some("double")),
        "google.protobuf.FloatValue" => nullable("number", Some("float")),
        "google.protobuf.Int64Value" => nullable("string", Some("int64")),
        "google.protobuf.UInt64Value" => nullable("string", Some("uint64")),
        "google.protobuf.Int32Value" => nullable("integer", Some("int32")),
        "google.protobuf.UInt32Value" => nullable("integer", Some("uint32")),
        "google.protobuf.BoolValue" => nullable("boolean", None),
        "google.protobuf.StringValue" => nullable("string", None),
        "google.protobuf.BytesValue" => nullable("string", Some("byte")),
        _ => return None,
    })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A schema with a note; a `$ref` may carry siblings in OpenAPI 3.1.
fn with_description(mut schema: Value, note: String) -> Value {
    if let Value::Object(object) = &mut schema {
        object.insert("description".to_owned(), Value::String(note));
    }
    schema
}

fn json_body(schema: Value) -> Value {
    json!({ "content": { "application/json": { "schema": schema } } })
}

/// The replies of `method`: its message as JSON, or for a server stream each message as
/// a line of JSON (or an SSE event, for a client that accepts `text/event-stream`).
fn responses_of(method: &MethodDescriptor, ok: Value) -> Value {
    if !method.is_server_streaming() {
        return responses(ok);
    }
    json!({
        "200": {
            "description": "A server stream: each message as it comes, as a line of canonical protobuf JSON (application/x-ndjson), or as `data:` events for a client that accepts text/event-stream; a failure ends it with {\"error\": {code, message, details}} (an `event: error`).",
            "content": {
                "application/x-ndjson": { "schema": ok },
                "text/event-stream": { "schema": { "type": "string" } },
            },
        },
        "default": { "$ref": "#/components/responses/Error" },
    })
}

fn responses(ok: Value) -> Value {
    json!({
        "200": {
            "description": "The reply, as canonical protobuf JSON.",
            "content": { "application/json": { "schema": ok } },
        },
        "default": { "$ref": "#/components/responses/Error" },
    })
}

/// The path item field an HTTP method's operation goes in; `None` for a custom method.
fn operation_slot(verb: &Method) -> Option<&'static str> {
    Some(match *verb {
        Method::GET => "get",
        Method::PUT => "put",
        Method::POST => "post",
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        Method::TRACE => "trace",
        _ => return None,
    })
}

/// The path with every `{name}` made `{}`: what OpenAPI compares paths by.
fn blank_names(path: &str) -> String {
    let mut blank = String::with_capacity(path.len());
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                blank.push_str("{}");
            }
            '}' => inside = false,
            _ if inside => {}
            _ => blank.push(c),
        }
    }
    blank
}

/// The field at `path` (proto names) through singular messages.
fn leaf_field(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for part in parents {
        match current.get_field_by_name(part)?.kind() {
            Kind::Message(next) => current = next,
            _ => return None,
        }
    }
    current.get_field_by_name(last)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use prost_reflect::DescriptorPool;
    use serde_json::{Value, json};

    use super::{ServiceApi, document};
    use crate::rest::table::RestTable;
    use crate::settings::Route;

    const SHOP: &str = r#"
syntax = "proto3";
package shop.v1;
import "google/api/annotations.proto";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

service Shop {
  rpc GetItem(GetItemRequest) returns (Item) {
    option (google.api.http) = { get: "/v1/{name=shops/*/items/*}" };
    option idempotency_level = NO_SIDE_EFFECTS;
  }
  rpc UpdateItem(UpdateItemRequest) returns (Item) {
    option (google.api.http) = { patch: "/v1/{item.name=shops/*/items/*}" body: "item" };
  }
  rpc ListItems(ListItemsRequest) returns (ListItemsResponse) {
    option (google.api.http) = { get: "/v1/{parent=shops/*}/items" response_body: "items" };
  }
  rpc Files(GetItemRequest) returns (Item) {
    option (google.api.http) = { get: "/files/{path=**}" };
  }
  rpc Watch(GetItemRequest) returns (stream Item);
  rpc Clear(google.protobuf.Empty) returns (google.protobuf.Empty);
}

enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; }

message Item {
  string name = 1;
  int64 stock = 2;
  uint64 sold = 3;
  int32 shelf = 4;
  uint32 row = 5;
  double price = 6;
  bool sealed = 7;
  bytes photo = 8;
  Color color = 9;
  repeated string tags = 10;
  map<string, int64> counts = 11;
  Item parent = 12;
  oneof origin { string maker = 13; string importer = 14; }
  google.protobuf.Timestamp made = 15;
  google.protobuf.Duration shelf_life = 16;
  google.protobuf.FieldMask mask = 17;
  google.protobuf.Int64Value weight = 18;
  google.protobuf.Struct extra = 19;
  google.protobuf.Value anything = 20;
  google.protobuf.ListValue list = 21;
  google.protobuf.Any detail = 22;
  repeated Item parts = 23;
}
message GetItemRequest { string name = 1; string path = 2; }
message Filter { Color color = 1; int64 min_stock = 2; Filter inner = 3; }
message ListItemsRequest {
  string parent = 1;
  int32 page_size = 2;
  Filter filter = 3;
  repeated Color colors = 4;
  map<string, string> labels = 5;
}
message ListItemsResponse { repeated Item items = 1; }
message UpdateItemRequest { Item item = 1; google.protobuf.FieldMask update_mask = 2; }
"#;

    fn shop() -> DescriptorPool {
        static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("rust-ms-openapi-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("shop.proto"), SHOP).unwrap();
            let annotations = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-ms-build/proto");
            let pool = protox::Compiler::new([dir.as_path(), std::path::Path::new(annotations)])
                .unwrap()
                .include_imports(true)
                .open_file("shop.proto")
                .unwrap()
                .descriptor_pool();
            let _ = std::fs::remove_dir_all(&dir);
            pool
        })
        .clone()
    }

    fn shop_document(only: Option<&str>) -> Value {
        let pool = shop();
        let methods: Vec<_> = pool
            .get_service_by_name("shop.v1.Shop")
            .unwrap()
            .methods()
            .collect();
        let table = RestTable::build(&BTreeMap::from([("shop".to_owned(), methods.clone())]));
        let services = BTreeMap::from([(
            "shop".to_owned(),
            ServiceApi {
                methods,
                route: Arc::new(Route::default()),
            },
        )]);
        document("1.2.3", &table, &services, only)
    }

    fn property(doc: &Value, message: &str, field: &str) -> Value {
        doc["components"]["schemas"][message]["properties"][field].clone()
    }

    #[test]
    fn openapi_scalars_follow_the_canonical_json_mapping() {
        let doc = shop_document(None);
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "1.2.3");
        let item = |field| property(&doc, "shop.v1.Item", field);
        assert_eq!(item("stock"), json!({"type": "string", "format": "int64"}));
        assert_eq!(item("sold"), json!({"type": "string", "format": "uint64"}));
        assert_eq!(item("shelf"), json!({"type": "integer", "format": "int32"}));
        assert_eq!(item("row")["type"], "integer");
        assert_eq!(item("price"), json!({"type": "number", "format": "double"}));
        assert_eq!(item("sealed"), json!({"type": "boolean"}));
        assert_eq!(item("photo")["format"], "byte");
        assert_eq!(
            item("tags"),
            json!({"type": "array", "items": {"type": "string"}})
        );
        assert_eq!(
            item("counts"),
            json!({"type": "object", "additionalProperties": {"type": "string", "format": "int64"}})
        );
        // JSON names, lowerCamel.
        assert!(item("shelfLife").is_object());
        assert!(item("shelf_life").is_null());
    }

    #[test]
    fn openapi_enums_messages_and_recursion_are_references() {
        let doc = shop_document(None);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            property(&doc, "shop.v1.Item", "color"),
            json!({"$ref": "#/components/schemas/shop.v1.Color"})
        );
        assert_eq!(
            schemas["shop.v1.Color"]["enum"],
            json!(["COLOR_UNSPECIFIED", "RED", "GREEN"])
        );
        // A message holding itself refers to itself.
        assert_eq!(
            property(&doc, "shop.v1.Item", "parent"),
            json!({"$ref": "#/components/schemas/shop.v1.Item"})
        );
        assert_eq!(
            property(&doc, "shop.v1.Item", "parts")["items"]["$ref"],
            "#/components/schemas/shop.v1.Item"
        );
        // Every reference resolves.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas[name].is_object(), "dangling $ref {name}");
        }
        // A oneof's fields are optional and say so.
        let maker = property(&doc, "shop.v1.Item", "maker");
        assert!(maker["description"].as_str().unwrap().contains("origin"));
    }

    #[test]
    fn openapi_well_known_types_are_their_json() {
        let doc = shop_document(None);
        let item = |field| property(&doc, "shop.v1.Item", field);
        assert_eq!(
            item("made"),
            json!({"type": "string", "format": "date-time"})
        );
        assert_eq!(item("shelfLife")["pattern"], r"^-?\d+(\.\d+)?s$");
        assert_eq!(item("mask")["type"], "string");
        assert_eq!(item("weight")["type"], json!(["string", "null"]));
        assert_eq!(item("extra")["type"], "object");
        assert_eq!(item("anything"), json!({}));
        assert_eq!(item("list")["type"], "array");
        assert_eq!(item("detail")["required"], json!(["@type"]));
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(
            !schemas
                .keys()
                .any(|name| name.starts_with("google.protobuf."))
        );
    }

    #[test]
    fn openapi_paths_share_one_item_with_the_first_templates_names() {
        let doc = shop_document(None);
        let paths = doc["paths"].as_object().unwrap();
        let item = &paths["/v1/shops/{name.1}/items/{name.3}"];
        assert!(
            item["get"].is_object() && item["patch"].is_object(),
            "{item:#}"
        );
        assert!(
            !paths.contains_key("/v1/shops/{item.name.1}/items/{item.name.3}"),
            "{:?}",
            paths.keys().collect::<Vec<_>>()
        );
        let names: Vec<&str> = item["patch"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["name.1", "name.3"]);
        // body: "item" is the body; the rest of the input in the query.
        let patch = &item["patch"];
        assert_eq!(
            patch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/shop.v1.Item"
        );
        let query: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(query, ["updateMask"]);
        // `**` is one parameter that says it may hold `/`.
        let files = &paths["/files/{path.0.rest}"]["get"]["parameters"][0];
        assert!(files["description"].as_str().unwrap().contains('/'));
        // Every operation id is unique.
        let text = doc.to_string();
        let ids: Vec<&str> = text
            .split("\"operationId\":\"")
            .skip(1)
            .map(|part| &part[..part.find('"').unwrap()])
            .collect();
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(ids.len(), unique.len(), "{ids:?}");
    }

    #[test]
    fn openapi_query_parameters_of_a_rest_route() {
        let doc = shop_document(None);
        let list = &doc["paths"]["/v1/shops/{parent.1}/items"]["get"];
        let params = list["parameters"].as_array().unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        // Nested by JSON name, a message holding itself once; maps left out.
        assert_eq!(
            names,
            [
                "parent.1",
                "pageSize",
                "filter.color",
                "filter.minStock",
                "colors"
            ]
        );
        let colors = &params[4];
        assert_eq!(colors["style"], "form");
        assert_eq!(colors["explode"], true);
        assert_eq!(colors["schema"]["type"], "array");
        // response_body: the field is the reply.
        assert_eq!(
            list["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"],
            "#/components/schemas/shop.v1.Item"
        );
        assert_eq!(
            list["responses"]["default"]["$ref"],
            "#/components/responses/Error"
        );
    }

    #[test]
    fn openapi_api_methods_post_get_and_server_streams() {
        let doc = shop_document(Some("shop"));
        let paths = &doc["paths"];
        let get_item = &paths["/api/shop/GetItem"];
        assert!(get_item["post"]["requestBody"].is_object());
        // NO_SIDE_EFFECTS: GET too, the scalars as query parameters.
        assert_eq!(get_item["get"]["parameters"][0]["name"], "name");
        assert!(paths["/api/shop/UpdateItem"]["get"].is_null());
        // A server stream: its messages as JSON lines or events.
        let watch = &paths["/api/shop/Watch"]["post"];
        let streamed = &watch["responses"]["200"]["content"];
        assert_eq!(
            streamed["application/x-ndjson"]["schema"]["$ref"],
            "#/components/schemas/shop.v1.Item"
        );
        assert!(streamed["text/event-stream"].is_object());
        assert_eq!(
            paths["/api/shop/Clear"]["post"]["responses"]["200"]["content"]["application/json"]["schema"],
            json!({"type": "object"})
        );
    }
}
