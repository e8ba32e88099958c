//! `.proto` source text from a `FileDescriptorProto`, as gRPC server reflection returns
//! it: what `rust-ms proto pull` writes for a running service.
//!
//! The text compiles (protoc, protox) back into the same descriptor, up to what a
//! descriptor does not keep (comments, layout) and what is not rendered: custom options
//! (extensions of the descriptor options, which prost-types does not keep) and
//! uninterpreted options. Types are written by their fully qualified name (`.pkg.Msg`),
//! which resolves to the same type wherever it is written.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::field_options::{CType, JsType};
use prost_types::file_options::OptimizeMode;
use prost_types::method_options::IdempotencyLevel;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileOptions,
    MethodDescriptorProto, OneofDescriptorProto, ServiceDescriptorProto,
};

/// Why a descriptor cannot be written as `.proto` source. `element` names the part of
/// the file at fault (`field pkg.Msg.name`, `file a/b.proto`, ...).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A form that `.proto` source cannot express (editions, a default in proto3, ...).
    #[error("{element}: cannot be rendered: {reason}")]
    Unsupported { element: String, reason: String },
    /// A field type number outside descriptor.proto's `FieldDescriptorProto.Type`.
    #[error("{element}: unknown field type number {number}")]
    UnknownFieldType { element: String, number: i32 },
    /// A label or an enum-valued option whose number its enum does not have.
    #[error("{element}: unknown {what} number {number}")]
    UnknownEnumNumber {
        element: String,
        what: &'static str,
        number: i32,
    },
    /// A malformed descriptor: a missing name or number, a name that is no identifier,
    /// an index out of range, a default value that does not fit its type.
    #[error("{element}: {reason}")]
    Invalid { element: String, reason: String },
}

/// The .proto source of `file`: what protox/protoc compile back into the same descriptor.
pub fn render(file: &FileDescriptorProto) -> Result<String, RenderError> {
    let file_name = file.name.as_deref().unwrap_or("<unnamed>");
    let element = format!("file {file_name}");
    let syntax = match file.syntax.as_deref() {
        None | Some("") | Some("proto2") => Syntax::Proto2,
        Some("proto3") => Syntax::Proto3,
        Some("editions") => {
            return Err(RenderError::Unsupported {
                element,
                reason: "syntax \"editions\" (protobuf editions) is not rendered, only proto2 and proto3".to_owned(),
            });
        }
        Some(other) => {
            return Err(RenderError::Unsupported {
                element,
                reason: format!("unknown syntax {}", quote_str(other)),
            });
        }
    };
    let mut renderer = Renderer {
        syntax,
        out: Printer::default(),
    };
    renderer.file(file, file_name, &element)?;
    Ok(renderer.out.text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Proto2,
    Proto3,
}

/// Lines at an indentation depth.
#[derive(Debug, Default)]
struct Printer {
    text: String,
    depth: usize,
}

impl Printer {
    fn line(&mut self, line: &str) {
        for _ in 0..self.depth {
            self.text.push_str("  ");
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// An empty line, unless at the top of a block or after one already.
    fn blank(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with("{\n") && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }

    /// A blank line when the last line closed a block: a field after a message.
    fn after_block(&mut self) {
        if self.text.ends_with("}\n") {
            self.text.push('\n');
        }
    }

    fn open(&mut self, head: &str) {
        self.line(&format!("{head} {{"));
        self.depth += 1;
    }

    /// Ends a block: `{}` when it is empty.
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        if self.text.ends_with("{\n") {
            self.text.pop();
            self.text.push_str("}\n");
        } else {
            self.line("}");
        }
    }
}

struct Renderer {
    syntax: Syntax,
    out: Printer,
}

/// Where a field is declared.
struct FieldPlace<'a> {
    /// The full name (no leading dot) of the message or package declaring it.
    scope: &'a str,
    /// The messages declared in that scope: map entries and groups are among them.
    types: &'a [DescriptorProto],
    in_oneof: bool,
    extension: bool,
}

/// Fields as they are written: alone, or a real oneof with all its fields.
struct FieldUnit {
    kind: FieldUnitKind,
    /// The smallest index in `types` of a map entry or group that its fields declare.
    claim: Option<usize>,
}

enum FieldUnitKind {
    Single(usize),
    Oneof(usize, Vec<usize>),
}

impl Renderer {
    fn file(
        &mut self,
        file: &FileDescriptorProto,
        file_name: &str,
        element: &str,
    ) -> Result<(), RenderError> {
        self.out
            .line("// Written by `rust-ms proto pull` from the reflection of a running service.");
        self.out.line(&format!("// File: {}", quote_str(file_name)));
        self.out
            .line("// Not rendered: comments (reflection does not carry them) and custom options.");
        self.out.blank();
        self.out.line(match self.syntax {
            Syntax::Proto2 => "syntax = \"proto2\";",
            Syntax::Proto3 => "syntax = \"proto3\";",
        });

        let package = file.package.as_deref().unwrap_or("");
        if !package.is_empty() {
            dotted_ident(package, element)?;
            self.out.blank();
            self.out.line(&format!("package {package};"));
        }

        let dependency_count = file.dependency.len();
        for (kind, indices) in [
            ("public", &file.public_dependency),
            ("weak", &file.weak_dependency),
        ] {
            if let Some(bad) = indices
                .iter()
                .find(|&&i| usize::try_from(i).map_or(true, |i| i >= dependency_count))
            {
                return Err(RenderError::Invalid {
                    element: element.to_owned(),
                    reason: format!(
                        "{kind} dependency index {bad} is not among its {dependency_count} imports"
                    ),
                });
            }
        }
        if !file.dependency.is_empty() {
            self.out.blank();
        }
        for (i, dependency) in file.dependency.iter().enumerate() {
            let listed = |indices: &[i32]| indices.iter().any(|&j| usize::try_from(j) == Ok(i));
            let kind = if listed(&file.public_dependency) {
                "public "
            } else if listed(&file.weak_dependency) {
                "weak "
            } else {
                ""
            };
            self.out
                .line(&format!("import {kind}{};", quote_str(dependency)));
        }

        if let Some(options) = &file.options {
            let options = file_options(options, element)?;
            if !options.is_empty() {
                self.out.blank();
            }
            for option in options {
                self.out.line(&format!("option {option};"));
            }
        }

        for enumeration in &file.enum_type {
            self.enumeration(enumeration, package)?;
        }
        self.members(package, &file.message_type, &[], &[], &file.extension)?;
        for service in &file.service {
            self.service(service, package)?;
        }
        Ok(())
    }

    fn message(&mut self, message: &DescriptorProto, scope: &str) -> Result<(), RenderError> {
        let name = ident(message.name.as_deref(), || {
            format!("a message in {}", scope_name(scope))
        })?;
        let full = qualified(scope, name);
        self.out.blank();
        self.out.open(&format!("message {name}"));
        self.message_body(message, &full)?;
        self.out.close();
        Ok(())
    }

    /// What is between the braces of a message (or group) whose full name is `full`.
    fn message_body(&mut self, message: &DescriptorProto, full: &str) -> Result<(), RenderError> {
        let element = format!("message {full}");
        if let Some(options) = &message.options {
            let mut set = Vec::new();
            bool_option(
                &mut set,
                "message_set_wire_format",
                options.message_set_wire_format,
            );
            bool_option(
                &mut set,
                "no_standard_descriptor_accessor",
                options.no_standard_descriptor_accessor,
            );
            bool_option(&mut set, "deprecated", options.deprecated);
            for option in set {
                self.out.line(&format!("option {option};"));
            }
        }
        for enumeration in &message.enum_type {
            self.enumeration(enumeration, full)?;
        }
        self.members(
            full,
            &message.nested_type,
            &message.field,
            &message.oneof_decl,
            &message.extension,
        )?;

        let mut ranges = Vec::with_capacity(message.extension_range.len());
        for range in &message.extension_range {
            ranges.push(exclusive_range(
                range.start,
                range.end,
                "extension range",
                &element,
            )?);
        }
        if !ranges.is_empty() {
            self.out.after_block();
            self.out.line(&format!("extensions {};", ranges.join(", ")));
        }
        let mut ranges = Vec::with_capacity(message.reserved_range.len());
        for range in &message.reserved_range {
            ranges.push(exclusive_range(
                range.start,
                range.end,
                "reserved range",
                &element,
            )?);
        }
        self.reserved(ranges, &message.reserved_name);
        Ok(())
    }

    fn reserved(&mut self, ranges: Vec<String>, names: &[String]) {
        if !ranges.is_empty() {
            self.out.after_block();
            self.out.line(&format!("reserved {};", ranges.join(", ")));
        }
        if !names.is_empty() {
            self.out.after_block();
            let names: Vec<String> = names.iter().map(|name| quote_str(name)).collect();
            self.out.line(&format!("reserved {};", names.join(", ")));
        }
    }

    /// The messages, fields, oneofs and extensions of a scope (a message, or a file's
    /// package with no fields), in an order that recompiles to the same lists: map
    /// entries and groups are declared by their field, so their place in `types` is
    /// kept by writing the other messages around those fields.
    fn members(
        &mut self,
        scope: &str,
        types: &[DescriptorProto],
        fields: &[FieldDescriptorProto],
        oneofs: &[OneofDescriptorProto],
        extensions: &[FieldDescriptorProto],
    ) -> Result<(), RenderError> {
        let mut claimed = vec![false; types.len()];
        let mut claim_of = |field: &FieldDescriptorProto, maps: bool| {
            let Some(index) = claim(field, scope, types, maps)? else {
                return Ok(None);
            };
            if std::mem::replace(&mut claimed[index], true) {
                return Err(RenderError::Unsupported {
                    element: field_element(field, scope),
                    reason: format!(
                        "message {} is the type of two map or group fields",
                        qualified(scope, types[index].name())
                    ),
                });
            }
            Ok(Some(index))
        };
        let field_claims = fields
            .iter()
            .map(|field| claim_of(field, true))
            .collect::<Result<Vec<_>, _>>()?;
        let extension_claims = extensions
            .iter()
            .map(|field| claim_of(field, false))
            .collect::<Result<Vec<_>, _>>()?;

        for (message, claimed) in types.iter().zip(&claimed) {
            let map_entry = message.options.as_ref().and_then(|o| o.map_entry) == Some(true);
            if map_entry && !claimed {
                return Err(RenderError::Unsupported {
                    element: format!("message {}", qualified(scope, message.name())),
                    reason: "a map entry message that no map field uses".to_owned(),
                });
            }
        }
        let visible: Vec<usize> = (0..types.len()).filter(|&i| !claimed[i]).collect();

        let mut units = Vec::new();
        let mut oneof_written = vec![false; oneofs.len()];
        for (i, field) in fields.iter().enumerate() {
            match real_oneof(field, oneofs.len(), scope)? {
                None => units.push(FieldUnit {
                    kind: FieldUnitKind::Single(i),
                    claim: field_claims[i],
                }),
                Some(oneof) => {
                    if std::mem::replace(&mut oneof_written[oneof], true) {
                        continue;
                    }
                    let mut members = Vec::new();
                    for (j, other) in fields.iter().enumerate().skip(i) {
                        if real_oneof(other, oneofs.len(), scope)? == Some(oneof) {
                            members.push(j);
                        }
                    }
                    let claim = members.iter().filter_map(|&j| field_claims[j]).min();
                    units.push(FieldUnit {
                        kind: FieldUnitKind::Oneof(oneof, members),
                        claim,
                    });
                }
            }
        }

        let (mut next_type, mut next_unit, mut next_extension) = (0, 0, 0);
        let mut open_extend: Option<&str> = None;
        loop {
            // The next map entry or group each list declares: the messages before
            // it go first, and fields before extensions that declare a later one.
            let unit_claim = units[next_unit.min(units.len())..]
                .iter()
                .find_map(|unit| unit.claim);
            let extension_claim = extension_claims[next_extension.min(extension_claims.len())..]
                .iter()
                .find_map(|&claim| claim);
            let first_claim = unit_claim.into_iter().chain(extension_claim).min();
            let next = match (
                visible.get(next_type).copied(),
                units.get(next_unit),
                next_extension < extensions.len(),
            ) {
                (Some(t), _, _) if first_claim.is_none_or(|c| t < c) => Next::Type(t),
                (_, Some(unit), _)
                    if unit.claim.is_none()
                        || extension_claim.is_none_or(|e| unit.claim.is_some_and(|u| u <= e)) =>
                {
                    Next::Unit
                }
                (_, _, true) => Next::Extension,
                (_, Some(_), false) => Next::Unit,
                (Some(t), None, false) => Next::Type(t),
                (None, None, false) => break,
            };
            if !matches!(next, Next::Extension) && open_extend.take().is_some() {
                self.out.close();
            }
            match next {
                Next::Type(t) => {
                    self.message(&types[t], scope)?;
                    next_type += 1;
                }
                Next::Unit => {
                    let unit = &units[next_unit];
                    next_unit += 1;
                    let place = FieldPlace {
                        scope,
                        types,
                        in_oneof: matches!(unit.kind, FieldUnitKind::Oneof(..)),
                        extension: false,
                    };
                    match &unit.kind {
                        FieldUnitKind::Single(i) => {
                            self.out.after_block();
                            self.field(&fields[*i], field_claims[*i], &place)?;
                        }
                        FieldUnitKind::Oneof(oneof, members) => {
                            let name = ident(oneofs[*oneof].name.as_deref(), || {
                                format!("a oneof in message {scope}")
                            })?;
                            self.out.blank();
                            self.out.open(&format!("oneof {name}"));
                            for &i in members {
                                self.field(&fields[i], field_claims[i], &place)?;
                            }
                            self.out.close();
                        }
                    }
                }
                Next::Extension => {
                    let extension = &extensions[next_extension];
                    let extendee = extension.extendee.as_deref().unwrap_or("");
                    let element = field_element(extension, scope);
                    if extendee.is_empty() {
                        return Err(RenderError::Invalid {
                            element,
                            reason: "an extension without an extendee".to_owned(),
                        });
                    }
                    dotted_ident(extendee, &element)?;
                    if open_extend != Some(extendee) {
                        if open_extend.is_some() {
                            self.out.close();
                        }
                        self.out.blank();
                        self.out.open(&format!("extend {extendee}"));
                        open_extend = Some(extendee);
                    }
                    let place = FieldPlace {
                        scope,
                        types,
                        in_oneof: false,
                        extension: true,
                    };
                    self.field(extension, extension_claims[next_extension], &place)?;
                    next_extension += 1;
                }
            }
        }
        if open_extend.is_some() {
            self.out.close();
        }
        Ok(())
    }

    /// One field line, or a group with its body; `claim` is the map entry or group
    /// message (in `place.types`) the field declares.
    fn field(
        &mut self,
        field: &FieldDescriptorProto,
        claim: Option<usize>,
        place: &FieldPlace<'_>,
    ) -> Result<(), RenderError> {
        let element = field_element(field, place.scope);
        let name = ident(field.name.as_deref(), || element.clone())?;
        let number = field.number.ok_or_else(|| RenderError::Invalid {
            element: element.clone(),
            reason: "a field without a number".to_owned(),
        })?;
        let label = match field.label {
            None => None,
            Some(number) => {
                Some(
                    Label::try_from(number).map_err(|_| RenderError::UnknownEnumNumber {
                        element: element.clone(),
                        what: "label",
                        number,
                    })?,
                )
            }
        };
        let ty = field_type(field, &element)?;
        let options = self.field_options(field, ty, name, place.extension, &element)?;
        let options = if options.is_empty() {
            String::new()
        } else {
            format!(" [{}]", options.join(", "))
        };

        if let Some(index) = claim {
            let declared = &place.types[index];
            if ty == Some(Type::Group) {
                let label = self.label(label, field, place.in_oneof, &element)?;
                let group = ident(declared.name.as_deref(), || element.clone())?;
                if group.to_ascii_lowercase() != name {
                    return Err(RenderError::Unsupported {
                        element,
                        reason: format!("a group field must be named {group} in lowercase"),
                    });
                }
                self.out.blank();
                self.out
                    .open(&format!("{label}group {group} = {number}{options}"));
                self.message_body(declared, &qualified(place.scope, group))?;
                self.out.close();
                return Ok(());
            }
            let entry = |number: i32, what: &str| {
                declared
                    .field
                    .iter()
                    .find(|f| f.number == Some(number))
                    .ok_or_else(|| RenderError::Invalid {
                        element: element.clone(),
                        reason: format!("its map entry message has no {what} field"),
                    })
            };
            let key = entry(1, "key")?;
            let value = entry(2, "value")?;
            let key = type_text(key, field_type(key, &element)?, &element)?;
            let value = type_text(value, field_type(value, &element)?, &element)?;
            self.out
                .line(&format!("map<{key}, {value}> {name} = {number}{options};"));
            return Ok(());
        }

        let label = self.label(label, field, place.in_oneof, &element)?;
        let ty = type_text(field, ty, &element)?;
        self.out
            .line(&format!("{label}{ty} {name} = {number}{options};"));
        Ok(())
    }

    fn label(
        &self,
        label: Option<Label>,
        field: &FieldDescriptorProto,
        in_oneof: bool,
        element: &str,
    ) -> Result<&'static str, RenderError> {
        if in_oneof {
            return match label {
                Some(Label::Repeated | Label::Required) => Err(RenderError::Unsupported {
                    element: element.to_owned(),
                    reason: "a repeated or required field in a oneof".to_owned(),
                }),
                _ => Ok(""),
            };
        }
        Ok(match (self.syntax, label) {
            (_, Some(Label::Repeated)) => "repeated ",
            (Syntax::Proto2, Some(Label::Required)) => "required ",
            (Syntax::Proto2, _) => "optional ",
            (Syntax::Proto3, Some(Label::Required)) => {
                return Err(RenderError::Unsupported {
                    element: element.to_owned(),
                    reason: "a required field in a proto3 file".to_owned(),
                });
            }
            (Syntax::Proto3, _) if field.proto3_optional == Some(true) => "optional ",
            (Syntax::Proto3, _) => "",
        })
    }

    /// `name = value` for the bracketed options of a field.
    fn field_options(
        &self,
        field: &FieldDescriptorProto,
        ty: Option<Type>,
        name: &str,
        extension: bool,
        element: &str,
    ) -> Result<Vec<String>, RenderError> {
        let mut set = Vec::new();
        if let Some(default) = &field.default_value {
            if self.syntax == Syntax::Proto3 {
                return Err(RenderError::Unsupported {
                    element: element.to_owned(),
                    reason: "a default value in a proto3 file".to_owned(),
                });
            }
            set.push(format!(
                "default = {}",
                default_literal(ty, default, element)?
            ));
        }
        if !extension
            && let Some(json_name) = &field.json_name
            && *json_name != default_json_name(name)
        {
            set.push(format!("json_name = {}", quote_str(json_name)));
        }
        if let Some(options) = &field.options {
            if let Some(number) = options.ctype {
                let ctype =
                    CType::try_from(number).map_err(|_| unknown(element, "ctype", number))?;
                set.push(format!("ctype = {}", ctype.as_str_name()));
            }
            bool_option(&mut set, "packed", options.packed);
            if let Some(number) = options.jstype {
                let jstype =
                    JsType::try_from(number).map_err(|_| unknown(element, "jstype", number))?;
                set.push(format!("jstype = {}", jstype.as_str_name()));
            }
            bool_option(&mut set, "lazy", options.lazy);
            bool_option(&mut set, "deprecated", options.deprecated);
            bool_option(&mut set, "weak", options.weak);
        }
        Ok(set)
    }

    fn enumeration(
        &mut self,
        enumeration: &EnumDescriptorProto,
        scope: &str,
    ) -> Result<(), RenderError> {
        let name = ident(enumeration.name.as_deref(), || {
            format!("an enum in {}", scope_name(scope))
        })?;
        let full = qualified(scope, name);
        let element = format!("enum {full}");
        self.out.blank();
        self.out.open(&format!("enum {name}"));
        if let Some(options) = &enumeration.options {
            let mut set = Vec::new();
            bool_option(&mut set, "allow_alias", options.allow_alias);
            bool_option(&mut set, "deprecated", options.deprecated);
            for option in set {
                self.out.line(&format!("option {option};"));
            }
        }
        for value in &enumeration.value {
            let value_name = ident(value.name.as_deref(), || format!("a value of {element}"))?;
            let number = value.number.ok_or_else(|| RenderError::Invalid {
                element: format!("enum value {full}.{value_name}"),
                reason: "an enum value without a number".to_owned(),
            })?;
            let mut set = Vec::new();
            if let Some(options) = &value.options {
                bool_option(&mut set, "deprecated", options.deprecated);
            }
            let options = if set.is_empty() {
                String::new()
            } else {
                format!(" [{}]", set.join(", "))
            };
            self.out.line(&format!("{value_name} = {number}{options};"));
        }
        let mut ranges = Vec::with_capacity(enumeration.reserved_range.len());
        for range in &enumeration.reserved_range {
            let (Some(start), Some(end)) = (range.start, range.end) else {
                return Err(RenderError::Invalid {
                    element,
                    reason: "a reserved range without a start or an end".to_owned(),
                });
            };
            ranges.push(if start == end {
                start.to_string()
            } else {
                format!("{start} to {end}")
            });
        }
        self.reserved(ranges, &enumeration.reserved_name);
        self.out.close();
        Ok(())
    }

    fn service(
        &mut self,
        service: &ServiceDescriptorProto,
        scope: &str,
    ) -> Result<(), RenderError> {
        let name = ident(service.name.as_deref(), || {
            format!("a service in {}", scope_name(scope))
        })?;
        let full = qualified(scope, name);
        self.out.blank();
        self.out.open(&format!("service {name}"));
        if let Some(options) = &service.options {
            let mut set = Vec::new();
            bool_option(&mut set, "deprecated", options.deprecated);
            for option in set {
                self.out.line(&format!("option {option};"));
            }
        }
        for method in &service.method {
            self.method(method, &full)?;
        }
        self.out.close();
        Ok(())
    }

    fn method(&mut self, method: &MethodDescriptorProto, service: &str) -> Result<(), RenderError> {
        let name = ident(method.name.as_deref(), || {
            format!("a method of service {service}")
        })?;
        let element = format!("method {service}.{name}");
        let message = |ty: Option<&str>, what: &str| match ty {
            Some(ty) if !ty.is_empty() => dotted_ident(ty, &element).map(str::to_owned),
            _ => Err(RenderError::Invalid {
                element: element.clone(),
                reason: format!("a method without an {what} type"),
            }),
        };
        let input = message(method.input_type.as_deref(), "input")?;
        let output = message(method.output_type.as_deref(), "output")?;
        let stream = |yes: Option<bool>| if yes == Some(true) { "stream " } else { "" };
        let head = format!(
            "rpc {name}({}{input}) returns ({}{output})",
            stream(method.client_streaming),
            stream(method.server_streaming)
        );
        let mut set = Vec::new();
        if let Some(options) = &method.options {
            bool_option(&mut set, "deprecated", options.deprecated);
            if let Some(number) = options.idempotency_level {
                let level = IdempotencyLevel::try_from(number)
                    .map_err(|_| unknown(&element, "idempotency_level", number))?;
                set.push(format!("idempotency_level = {}", level.as_str_name()));
            }
        }
        if set.is_empty() {
            self.out.line(&format!("{head};"));
        } else {
            self.out.open(&head);
            for option in set {
                self.out.line(&format!("option {option};"));
            }
            self.out.close();
        }
        Ok(())
    }
}

enum Next {
    Type(usize),
    Unit,
    Extension,
}

/// `name = value` for each set standard file option.
fn file_options(options: &FileOptions, element: &str) -> Result<Vec<String>, RenderError> {
    let mut set = Vec::new();
    let strings = [
        ("java_package", &options.java_package),
        ("java_outer_classname", &options.java_outer_classname),
        ("go_package", &options.go_package),
        ("objc_class_prefix", &options.objc_class_prefix),
        ("csharp_namespace", &options.csharp_namespace),
        ("swift_prefix", &options.swift_prefix),
        ("php_class_prefix", &options.php_class_prefix),
        ("php_namespace", &options.php_namespace),
        ("php_metadata_namespace", &options.php_metadata_namespace),
        ("ruby_package", &options.ruby_package),
    ];
    for (name, value) in strings {
        if let Some(value) = value {
            set.push(format!("{name} = {}", quote_str(value)));
        }
    }
    // Deprecated options still appear in descriptors, and are still accepted.
    #[allow(deprecated)]
    let bools = [
        ("java_multiple_files", options.java_multiple_files),
        (
            "java_generate_equals_and_hash",
            options.java_generate_equals_and_hash,
        ),
        ("java_string_check_utf8", options.java_string_check_utf8),
        ("cc_generic_services", options.cc_generic_services),
        ("java_generic_services", options.java_generic_services),
        ("py_generic_services", options.py_generic_services),
        ("php_generic_services", options.php_generic_services),
        ("deprecated", options.deprecated),
        ("cc_enable_arenas", options.cc_enable_arenas),
    ];
    for (name, value) in bools {
        bool_option(&mut set, name, value);
    }
    if let Some(number) = options.optimize_for {
        let mode =
            OptimizeMode::try_from(number).map_err(|_| unknown(element, "optimize_for", number))?;
        set.push(format!("optimize_for = {}", mode.as_str_name()));
    }
    Ok(set)
}

/// `start to last` (or `start`) for a range whose `end` is exclusive.
fn exclusive_range(
    start: Option<i32>,
    end: Option<i32>,
    what: &str,
    element: &str,
) -> Result<String, RenderError> {
    match (start, end) {
        (Some(start), Some(end)) if start < end => Ok(if end - 1 == start {
            start.to_string()
        } else {
            format!("{start} to {}", end - 1)
        }),
        _ => Err(RenderError::Invalid {
            element: element.to_owned(),
            reason: format!("{what} {start:?} to {end:?} (exclusive) is empty or open"),
        }),
    }
}

fn bool_option(set: &mut Vec<String>, name: &str, value: Option<bool>) {
    if let Some(value) = value {
        set.push(format!("{name} = {value}"));
    }
}

fn unknown(element: &str, what: &'static str, number: i32) -> RenderError {
    RenderError::UnknownEnumNumber {
        element: element.to_owned(),
        what,
        number,
    }
}

/// The index in `types` of the map entry (only when `maps`) or group message that
/// `field` declares, both of which are written with the field and not on their own.
fn claim(
    field: &FieldDescriptorProto,
    scope: &str,
    types: &[DescriptorProto],
    maps: bool,
) -> Result<Option<usize>, RenderError> {
    let element = field_element(field, scope);
    let ty = field_type(field, &element)?;
    let group = ty == Some(Type::Group);
    let repeated_message =
        matches!(ty, Some(Type::Message) | None) && field.label == Some(Label::Repeated as i32);
    if !(group || maps && repeated_message) {
        return Ok(None);
    }
    let Some(type_name) = field.type_name.as_deref() else {
        return Ok(None);
    };
    let declared = types.iter().position(|message| {
        message.name.as_deref().is_some_and(|name| {
            type_name.strip_prefix('.') == Some(qualified(scope, name).as_str())
        })
    });
    match declared {
        Some(index) if group => Ok(Some(index)),
        Some(index) if types[index].options.as_ref().and_then(|o| o.map_entry) == Some(true) => {
            Ok(Some(index))
        }
        None if group => Err(RenderError::Unsupported {
            element,
            reason: format!("its group type {type_name} is not declared beside it"),
        }),
        _ => Ok(None),
    }
}

/// The index of the real (not synthetic proto3 `optional`) oneof that `field` is in.
fn real_oneof(
    field: &FieldDescriptorProto,
    oneof_count: usize,
    scope: &str,
) -> Result<Option<usize>, RenderError> {
    let Some(index) = field.oneof_index else {
        return Ok(None);
    };
    match usize::try_from(index) {
        Ok(i) if i < oneof_count => Ok((field.proto3_optional != Some(true)).then_some(i)),
        _ => Err(RenderError::Invalid {
            element: field_element(field, scope),
            reason: format!("oneof index {index} is not among the {oneof_count} oneofs"),
        }),
    }
}

fn field_type(field: &FieldDescriptorProto, element: &str) -> Result<Option<Type>, RenderError> {
    field
        .r#type
        .map(|number| {
            Type::try_from(number).map_err(|_| RenderError::UnknownFieldType {
                element: element.to_owned(),
                number,
            })
        })
        .transpose()
}

/// A field's type as written: a scalar keyword or the type's (fully qualified) name.
fn type_text(
    field: &FieldDescriptorProto,
    ty: Option<Type>,
    element: &str,
) -> Result<String, RenderError> {
    let scalar = match ty {
        Some(Type::Double) => "double",
        Some(Type::Float) => "float",
        Some(Type::Int64) => "int64",
        Some(Type::Uint64) => "uint64",
        Some(Type::Int32) => "int32",
        Some(Type::Fixed64) => "fixed64",
        Some(Type::Fixed32) => "fixed32",
        Some(Type::Bool) => "bool",
        Some(Type::String) => "string",
        Some(Type::Bytes) => "bytes",
        Some(Type::Uint32) => "uint32",
        Some(Type::Sfixed32) => "sfixed32",
        Some(Type::Sfixed64) => "sfixed64",
        Some(Type::Sint32) => "sint32",
        Some(Type::Sint64) => "sint64",
        Some(Type::Message | Type::Enum | Type::Group) | None => {
            return match field.type_name.as_deref() {
                Some(name) if !name.is_empty() => dotted_ident(name, element).map(str::to_owned),
                _ => Err(RenderError::Invalid {
                    element: element.to_owned(),
                    reason: "a message or enum field without a type name".to_owned(),
                }),
            };
        }
    };
    Ok(scalar.to_owned())
}

/// The `[default = ...]` value as written, from a descriptor's `default_value`.
fn default_literal(ty: Option<Type>, value: &str, element: &str) -> Result<String, RenderError> {
    let bad = |reason: &str| RenderError::Invalid {
        element: element.to_owned(),
        reason: format!("default value {}: {reason}", quote_str(value)),
    };
    match ty {
        Some(Type::String) => Ok(quote_str(value)),
        // descriptor.proto: "For bytes, contains the C escaped value."
        Some(Type::Bytes) => unescape_c(value)
            .map(|bytes| quote_bytes(&bytes))
            .ok_or_else(|| bad("not a C-escaped string")),
        Some(Type::Bool) => match value {
            "true" | "false" => Ok(value.to_owned()),
            _ => Err(bad("not true or false")),
        },
        Some(Type::Float | Type::Double) => {
            let special = matches!(value, "inf" | "-inf" | "nan" | "-nan");
            let number = value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
                && value.parse::<f64>().is_ok();
            if special {
                Ok(value.to_owned())
            } else if number && !value.contains(['.', 'e', 'E']) {
                // Integer digits (protox writes 1e30 so) may not fit an integer literal.
                Ok(format!("{value}.0"))
            } else if number {
                Ok(value.to_owned())
            } else {
                Err(bad("not a floating point number"))
            }
        }
        Some(
            Type::Int32
            | Type::Int64
            | Type::Uint32
            | Type::Uint64
            | Type::Sint32
            | Type::Sint64
            | Type::Fixed32
            | Type::Fixed64
            | Type::Sfixed32
            | Type::Sfixed64,
        ) => match value.parse::<i128>() {
            Ok(_) => Ok(value.to_owned()),
            Err(_) => Err(bad("not an integer")),
        },
        Some(Type::Enum) | None => match is_ident(value) {
            true => Ok(value.to_owned()),
            false => Err(bad("not an enum value name")),
        },
        Some(Type::Message | Type::Group) => Err(RenderError::Unsupported {
            element: element.to_owned(),
            reason: "a default value on a message field".to_owned(),
        }),
    }
}

/// The bytes of a C-escaped string (`\n`, `\"`, octal `\ooo`, hex `\xhh`, ...).
fn unescape_c(escaped: &str) -> Option<Vec<u8>> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        i += 1;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let escape = *bytes.get(i)?;
        i += 1;
        let unescaped = match escape {
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'\\' | b'\'' | b'"' | b'?' => escape,
            b'0'..=b'7' => {
                let mut value = u32::from(escape - b'0');
                for _ in 0..2 {
                    match bytes.get(i) {
                        Some(&digit @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(digit - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                u8::try_from(value).ok()?
            }
            b'x' | b'X' => {
                let mut value = 0;
                let mut digits = 0;
                while digits < 2 {
                    match bytes.get(i).and_then(|&d| char::from(d).to_digit(16)) {
                        Some(digit) => {
                            value = value * 16 + digit;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    return None;
                }
                u8::try_from(value).ok()?
            }
            _ => return None,
        };
        out.push(unescaped);
    }
    Some(out)
}

/// A .proto string literal of `text`: quotes, backslashes and control characters
/// escaped, other characters (UTF-8 included) as they are.
fn quote_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03o}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A .proto string literal of `bytes`: printable ASCII as it is, the rest escaped.
fn quote_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\{byte:03o}")),
        }
    }
    out.push('"');
    out
}

/// protoc's default JSON name: `foo_bar_baz` is `fooBarBaz`.
fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn is_ident(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name` if it is an identifier; `element` says what it names when it is not.
fn ident(name: Option<&str>, element: impl FnOnce() -> String) -> Result<&str, RenderError> {
    match name {
        Some(name) if is_ident(name) => Ok(name),
        Some(name) => Err(RenderError::Invalid {
            element: element(),
            reason: format!("name {} is not an identifier", quote_str(name)),
        }),
        None => Err(RenderError::Invalid {
            element: element(),
            reason: "it has no name".to_owned(),
        }),
    }
}

/// `name` if it is dot-separated identifiers, with or without a leading dot.
fn dotted_ident<'a>(name: &'a str, element: &str) -> Result<&'a str, RenderError> {
    let parts = name.strip_prefix('.').unwrap_or(name);
    if parts.split('.').all(is_ident) {
        Ok(name)
    } else {
        Err(RenderError::Invalid {
            element: element.to_owned(),
            reason: format!("{} is not a dotted name", quote_str(name)),
        })
    }
}

/// `scope.name`, or `name` in a file without a package.
fn qualified(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn scope_name(scope: &str) -> String {
    if scope.is_empty() {
        "the file".to_owned()
    } else {
        scope.to_owned()
    }
}

fn field_element(field: &FieldDescriptorProto, scope: &str) -> String {
    let kind = if field.extendee.is_some() {
        "extension"
    } else {
        "field"
    };
    format!("{kind} {}", qualified(scope, field.name()))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
    use protox::Compiler;
    use protox::file::{
        ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
    };

    use super::{RenderError, default_json_name, render};

    /// A proto3 file: nested types, maps among nested messages, real and synthetic
    /// oneofs, enums with aliases and reserved numbers, streaming methods.
    const COMMON: &str = r#"
syntax = "proto3";

package rich.common;

import "google/protobuf/timestamp.proto";

option go_package = "example.com/rich/common;common";
option java_package = "com.example.rich.common";
option java_multiple_files = true;
option csharp_namespace = "Rich.Common";
option php_namespace = "Rich\\Common";
option ruby_package = "Rich::Common";
option objc_class_prefix = "RC";
option swift_prefix = "RC";

enum Status {
  option allow_alias = true;
  STATUS_UNSPECIFIED = 0;
  STATUS_ACTIVE = 1;
  STATUS_RUNNING = 1;
  STATUS_OLD = 2 [deprecated = true];
  reserved 5, 10 to 20, 100 to max;
  reserved "STATUS_GONE", "STATUS_LOST";
}

message Envelope {
  option deprecated = true;

  message Header {
    enum Level {
      LEVEL_UNSPECIFIED = 0;
      LEVEL_HIGH = 1;
    }
    string key = 1;
    map<string, string> attributes = 2;
    Level level = 3;
  }

  optional string trace_id = 1;
  oneof body {
    string text = 2;
    bytes blob = 3;
    Header header = 4;
  }
  map<int64, Header> headers = 5;
  message Inner {
    optional bool flag = 1;
  }
  map<string, Status> statuses = 6;
  repeated google.protobuf.Timestamp times = 7;
  optional int32 count = 8;
  Status status = 9 [deprecated = true];
  repeated double unpacked = 10 [packed = false];
  string renamed = 11 [json_name = "other"];
  oneof second {
    int32 a = 12;
    Inner inner = 13;
  }
  map<uint32, bytes> blobs = 14;
  message Last {}
  sint64 s64 = 15;
  fixed32 f32 = 16;
  sfixed64 sf64 = 17;
  float ratio = 18;
  uint64 big = 19;
  reserved 20 to 25, 30;
  reserved "old_field";
}

service Streams {
  option deprecated = true;
  rpc Unary(Envelope) returns (Envelope);
  rpc ServerStream(Envelope) returns (stream Envelope) {
    option idempotency_level = NO_SIDE_EFFECTS;
  }
  rpc ClientStream(stream Envelope) returns (Envelope) {
    option idempotency_level = IDEMPOTENT;
    option deprecated = true;
  }
  rpc Bidi(stream Envelope) returns (stream Envelope);
}
"#;

    /// A proto2 file: every scalar type with defaults (escaped strings and bytes
    /// among them), labels, groups, extension ranges and `extend` blocks, public and
    /// weak imports.
    const LEGACY: &str = r#"
syntax = "proto2";

package rich.legacy;

import public "rich/common.proto";
import weak "rich/weak.proto";

option java_package = "com.example.rich.legacy";
option java_outer_classname = "LegacyProto";
option optimize_for = CODE_SIZE;
option cc_enable_arenas = true;
option deprecated = true;
option go_package = "example.com/rich/legacy";

message Scalars {
  enum Kind {
    KIND_A = 1;
    KIND_B = 2;
  }
  optional double f_double = 1 [default = 1.5];
  optional float f_float = 2 [default = -inf];
  optional int32 f_int32 = 3 [default = -42];
  optional int64 f_int64 = 4 [default = 9007199254740993];
  optional uint32 f_uint32 = 5 [default = 4294967295];
  optional uint64 f_uint64 = 6 [default = 18446744073709551615];
  optional sint32 f_sint32 = 7 [default = -1];
  optional sint64 f_sint64 = 8 [default = -9223372036854775808];
  optional fixed32 f_fixed32 = 9 [default = 7];
  optional fixed64 f_fixed64 = 10;
  optional sfixed32 f_sfixed32 = 11 [default = -7];
  optional sfixed64 f_sfixed64 = 12;
  optional bool f_bool = 13 [default = true];
  optional string f_string = 14 [default = "tab\there \"quoted\" 'single' back\\slash\nnew line caf\303\251 \001 \x7f"];
  optional bytes f_bytes = 15 [default = "\000\001\377abc\"\\\n\x80 end"];
  required string id = 16;
  repeated int32 packed_values = 17 [packed = true];
  repeated int32 unpacked_values = 18 [packed = false];
  optional string old = 19 [deprecated = true, json_name = "legacyName"];
  optional Kind kind = 20 [default = KIND_B];
  optional double f_nan = 21 [default = nan];
  optional double f_exp = 22 [default = 1e+30];
  optional string f_empty = 23 [default = ""];
  optional group Result = 24 {
    optional string url = 25;
    repeated int32 ranks = 26;
  }
  repeated rich.common.Status statuses = 27;
  optional string cord = 28 [ctype = CORD];
  optional int64 js = 29 [jstype = JS_STRING];
  extensions 100 to 199, 1000 to max;
  reserved 30, 40 to 45;
  reserved "gone", "removed";
}

extend Scalars {
  optional int32 ext_number = 100 [default = 3];
  repeated string ext_tags = 101;
}

message Holder {
  extend Scalars {
    optional Holder holder = 150;
  }
  oneof choice {
    string name = 1;
    int32 number = 2;
    Scalars scalars = 3;
  }
  map<string, Scalars> by_name = 4;
  optional rich.weak.Weak weak = 5 [weak = true];
  optional .rich.common.Envelope envelope = 6 [lazy = true];
}

service Legacy {
  rpc Get(Holder) returns (Scalars) {
    option idempotency_level = NO_SIDE_EFFECTS;
  }
  rpc Put(stream Holder) returns (stream Scalars) {
    option idempotency_level = IDEMPOTENT;
  }
}
"#;

    const WEAK: &str = r#"
syntax = "proto2";
package rich.weak;
message Weak {
  optional int32 a = 1;
}
"#;

    /// A folder under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("rust-ms-proto-text-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a temp dir");
            TempDir(dir)
        }

        fn write(&self, name: &str, source: &str) {
            let path = self.0.join(name);
            let parent = path.parent().expect("a file in a folder");
            std::fs::create_dir_all(parent).expect("create its folder");
            std::fs::write(&path, source).expect("write the proto");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// One file served from memory, ahead of the include folder.
    struct Rendered {
        name: String,
        source: String,
    }

    impl FileResolver for Rendered {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            if name == self.name {
                File::from_source(name, &self.source)
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }

    fn the_file(compiler: &Compiler, name: &str) -> FileDescriptorProto {
        compiler
            .file_descriptor_set()
            .file
            .into_iter()
            .find(|file| file.name() == name)
            .expect("the compiled file")
    }

    fn compile(include: &Path, name: &str) -> FileDescriptorProto {
        let mut compiler = Compiler::new([include]).expect("a compiler");
        if let Err(error) = compiler.open_file(name) {
            panic!("{name} does not compile: {error}");
        }
        the_file(&compiler, name)
    }

    /// `source` compiled as the file `name`, its imports found in `include`.
    fn compile_rendered(include: &Path, name: &str, source: &str) -> FileDescriptorProto {
        let mut resolver = ChainFileResolver::new();
        resolver.add(Rendered {
            name: name.to_owned(),
            source: source.to_owned(),
        });
        resolver.add(IncludeFileResolver::new(include.to_owned()));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = Compiler::with_file_resolver(resolver);
        if let Err(error) = compiler.open_file(name) {
            panic!("the rendering of {name} does not compile: {error:?}\n{source}");
        }
        the_file(&compiler, name)
    }

    /// What may legitimately differ between two compilations of the same file:
    /// source positions and comments, and a JSON name written out or left implicit.
    fn normalised(mut file: FileDescriptorProto) -> FileDescriptorProto {
        fn without_default_json_name(field: &mut FieldDescriptorProto) {
            if field.json_name.as_deref() == Some(default_json_name(field.name()).as_str()) {
                field.json_name = None;
            }
        }
        fn normalise_message(message: &mut DescriptorProto) {
            message.field.iter_mut().for_each(without_default_json_name);
            message
                .extension
                .iter_mut()
                .for_each(without_default_json_name);
            message.nested_type.iter_mut().for_each(normalise_message);
        }
        file.source_code_info = None;
        file.message_type.iter_mut().for_each(normalise_message);
        file.extension
            .iter_mut()
            .for_each(without_default_json_name);
        file
    }

    /// Renders `name` (compiled from `include`), compiles the text again and asserts
    /// the same descriptor comes out; returns the text.
    fn assert_round_trip(include: &Path, name: &str) -> String {
        let original = compile(include, name);
        let text = match render(&original) {
            Ok(text) => text,
            Err(error) => panic!("{name} does not render: {error}"),
        };
        let again = compile_rendered(include, name, &text);
        assert_eq!(
            normalised(again),
            normalised(original),
            "the rendering of {name} compiles to another descriptor:\n{text}"
        );
        text
    }

    fn rich_protos(test: &str) -> TempDir {
        let dir = TempDir::new(test);
        dir.write("rich/common.proto", COMMON);
        dir.write("rich/legacy.proto", LEGACY);
        dir.write("rich/weak.proto", WEAK);
        dir
    }

    fn client_protos() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/proto")
    }

    #[test]
    fn the_user_service_proto_renders_to_text_that_compiles_to_the_same_descriptor() {
        let text = assert_round_trip(&client_protos(), "user/v1/user.proto");
        assert!(
            text.starts_with("// Written by `rust-ms proto pull`"),
            "{text}"
        );
        assert!(
            text.contains("option idempotency_level = NO_SIDE_EFFECTS;"),
            "{text}"
        );
        assert!(text.contains("returns (stream .user.v1.User)"), "{text}");
    }

    #[test]
    fn the_order_service_proto_renders_to_text_that_compiles_to_the_same_descriptor() {
        assert_round_trip(&client_protos(), "order/v1/order.proto");
    }

    #[test]
    fn a_proto3_file_with_maps_oneofs_optionals_nested_types_and_streams_round_trips() {
        let dir = rich_protos("proto3");
        assert_round_trip(&dir.0, "rich/common.proto");
    }

    #[test]
    fn a_proto2_file_with_defaults_groups_extensions_and_weak_imports_round_trips() {
        let dir = rich_protos("proto2");
        let text = assert_round_trip(&dir.0, "rich/legacy.proto");
        assert!(
            text.contains("import public \"rich/common.proto\";"),
            "{text}"
        );
        assert!(text.contains("import weak \"rich/weak.proto\";"), "{text}");
        assert!(text.contains("optional group Result = 24 {"), "{text}");
    }

    #[test]
    fn map_entries_and_synthetic_oneofs_are_written_as_map_fields_and_optional_labels() {
        let dir = rich_protos("maps");
        let text = render(&compile(&dir.0, "rich/common.proto")).expect("renders");
        assert!(
            text.contains("map<string, string> attributes = 2;"),
            "{text}"
        );
        assert!(
            text.contains("map<int64, .rich.common.Envelope.Header> headers = 5;"),
            "{text}"
        );
        assert!(
            text.contains("map<string, .rich.common.Status> statuses = 6;"),
            "{text}"
        );
        assert!(text.contains("optional string trace_id = 1;"), "{text}");
        assert!(text.contains("optional int32 count = 8;"), "{text}");
        for absent in ["Entry", "map_entry", "oneof _", "_trace_id", "_count"] {
            assert!(!text.contains(absent), "{absent} in:\n{text}");
        }
        assert!(text.contains("oneof body {"), "{text}");
        assert!(text.contains("oneof second {"), "{text}");
    }

    #[test]
    fn an_editions_file_is_refused_naming_the_file() {
        let file = FileDescriptorProto {
            name: Some("new/edition.proto".to_owned()),
            syntax: Some("editions".to_owned()),
            ..Default::default()
        };
        let error = render(&file).expect_err("editions are not rendered");
        assert!(
            matches!(error, RenderError::Unsupported { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("file new/edition.proto"), "{message}");
        assert!(message.contains("editions"), "{message}");
    }

    #[test]
    fn an_unknown_field_type_number_is_refused_naming_the_field() {
        let file = FileDescriptorProto {
            name: Some("odd.proto".to_owned()),
            package: Some("odd".to_owned()),
            syntax: Some("proto3".to_owned()),
            message_type: vec![DescriptorProto {
                name: Some("Msg".to_owned()),
                field: vec![FieldDescriptorProto {
                    name: Some("strange".to_owned()),
                    number: Some(1),
                    label: Some(1),
                    r#type: Some(99),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let error = render(&file).expect_err("type 99 does not exist");
        assert!(
            matches!(
                &error,
                RenderError::UnknownFieldType { element, number: 99 } if element == "field odd.Msg.strange"
            ),
            "{error:?}"
        );
    }

    #[test]
    fn string_and_bytes_defaults_are_escaped() {
        let dir = rich_protos("escapes");
        let text = render(&compile(&dir.0, "rich/legacy.proto")).expect("renders");
        assert!(
            text.contains(
                r#"[default = "tab\there \"quoted\" 'single' back\\slash\nnew line café \001 \177"]"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"[default = "\000\001\377abc\"\\\n\200 end"]"#),
            "{text}"
        );
    }
}
