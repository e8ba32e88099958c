//! Path templates of `google.api.http` rules: parsed, matched against a request's raw
//! path, and kept in a [`RouteTable`] that picks the most specific template.
//!
//! # Grammar
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{f}` is `{f=*}`. `**` may only be the template's last segment (so inside a variable
//! only as the variable's last segment, and that variable last). Variables do not nest,
//! and no field path is bound twice, nor both a field and a field inside it (`{a}` with
//! `{a.b}`). An IDENT is a letter or `_`, then letters, digits and `_`. A LITERAL is
//! letters, digits, `-._~!$&'()+,;@` and percent-encodings (`%XX`, decoding to UTF-8);
//! any other character (`:`, `=`, `*`, `?`, a space, non-ASCII…) must be
//! percent-encoded. A `:` outside a variable starts the verb, which ends the template.
//!
//! # Matching a request path
//!
//! The path is the request's raw path, still percent-encoded, without the query.
//!
//! 1. It starts with `/`, and is split on `/` into segments; `/` alone is zero segments.
//!    A path with an empty segment (`//`, a trailing `/`) matches no template.
//! 2. Every segment must be valid percent-encoding and decode to UTF-8, or the path
//!    matches no template (no error: the caller answers as for an unknown path).
//! 3. The verb (grpc-gateway's rule): a template with the verb `v` matches only if the
//!    last segment's text after its last raw `:`, decoded, equals `v` (decoded), and the
//!    text before that `:` is not empty; the segment is then that text before the `:`.
//!    A `%3A` is no separator: `a%3Acancel` has no verb. A template without a verb
//!    reads the last segment whole, colons included: `/v1/{name}` matches
//!    `/v1/a:cancel` with `name = "a:cancel"`, and `/v1/ops` does not match `/v1/ops:x`.
//! 4. A literal matches a segment whose decoded text equals the literal's decoded text
//!    (`shel%76es` is `shelves`); `*` matches one segment; `**` all remaining segments,
//!    zero or more.
//! 5. Values: a single-segment variable (`{f}`, `{f=*}`, `{f=literal}`) takes the
//!    segment fully decoded (`%2F` becomes `/`). A multi-segment variable (more than
//!    one segment, or `**`) takes its segments joined by `/`, decoded except `%2F` and
//!    `%2f`, which stay as written, so the value's `/`s are exactly the path's
//!    separators (RFC 6570 reserved expansion, as `http.proto` says). `+` is `+`, not
//!    a space, in both.
//!
//! # Which template wins
//!
//! When several templates of one method match, [`RouteTable::find`] takes the most
//! specific: compare the templates' segments (variables flattened into their segments)
//! left to right; at the first position where they differ a literal beats `*`, `*`
//! beats the template's end, and the end beats `**` (so `/v1/files` beats
//! `/v1/files/**` on `/v1/files`, and a longer template beats a shorter one otherwise).
//! If every position ties, a template with a verb beats one without. Two templates
//! that tie on all of that and both match a path have the same shape (same segments,
//! literals, verb), which [`RouteTable::insert`] refuses, so the winner is unique.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use http::Method;

/// A parsed path template; displays as the text it was parsed from.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    /// Every segment, those inside variables included, in order.
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<Literal>,
}

/// One segment of a template, variables flattened away.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Literal),
    Star,
    DoubleStar,
}

/// A literal as written and decoded; two literals are equal when their decoded texts are.
#[derive(Debug, Clone)]
struct Literal {
    raw: String,
    decoded: String,
}

impl PartialEq for Literal {
    fn eq(&self, other: &Self) -> bool {
        self.decoded == other.decoded
    }
}

impl Eq for Literal {}

/// A variable of a template: the field it binds and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    field_path: Vec<String>,
    /// The template segments it spans, `start..end`.
    start: usize,
    end: usize,
    multi_segment: bool,
}

impl Variable {
    /// The field the value goes to, one identifier per level: `book.name` is
    /// `["book", "name"]`.
    pub fn field_path(&self) -> &[String] {
        &self.field_path
    }

    /// Whether the variable spans more than one segment or `**`: its value keeps `%2F`
    /// encoded and may contain `/`.
    pub fn is_multi_segment(&self) -> bool {
        self.multi_segment
    }

    fn dotted(&self) -> String {
        self.field_path.join(".")
    }
}

/// What a match bound: each variable's field path (borrowed from the template) and its
/// decoded value, in the template's order.
pub type Bindings<'t> = Vec<(&'t [String], String)>;

/// A parameter of [`Template::openapi_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathParameter {
    /// The name between the braces in the OpenAPI path.
    pub name: String,
    /// The variable it is part of; `None` for a `*` or `**` outside any variable.
    pub field_path: Option<Vec<String>>,
    /// A `**`: the value is the rest of the path and may contain `/`, which an OpenAPI
    /// path parameter cannot say.
    pub rest: bool,
}

impl Template {
    /// Parses a path template; the error says what is wrong and at which column.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        Parser::new(text).template()
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The variables, in the order they appear.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The verb after the final `:`, percent-decoded.
    pub fn verb(&self) -> Option<&str> {
        self.verb.as_ref().map(|verb| verb.decoded.as_str())
    }

    /// Whether the two templates match exactly the same paths: same segments (literals
    /// compared decoded), same verb; variables aside.
    pub fn same_shape(&self, other: &Template) -> bool {
        self.segments == other.segments && self.verb == other.verb
    }

    /// The bindings if `path` (the raw, still percent-encoded path, no query) matches.
    pub fn matches(&self, path: &str) -> Option<Bindings<'_>> {
        let request = RequestPath::parse(path)?;
        let view = self.view(&request)?;
        if !self.fits(&view) {
            return None;
        }
        self.bind(&view)
    }

    /// The path for an OpenAPI document, with its parameters in order.
    ///
    /// Literals stay as written, and `:verb` stays at the end. Every wildcard becomes a
    /// parameter named after what it binds:
    ///
    /// - the one `*` of a single-segment variable: the field path, `{book.name}`;
    /// - a wildcard of a multi-segment variable: the field path, `.`, and the
    ///   wildcard's segment index within the variable from 0, then `.rest` for a `**`,
    ///   or, for the variable's last wildcard when literals follow it inside the
    ///   variable, `.` and the variable's segment count:
    ///   `/v1/{book.name=shelves/*/books/*}` is `/v1/shelves/{book.name.1}/books/{book.name.3}`,
    ///   `/v1/{path=**}` is `/v1/{path.0.rest}`, `/{f=a/*/b}` is `/a/{f.1.3}/b`;
    /// - a `*` or `**` outside any variable: its segment index in the template from 0,
    ///   then `.rest` for a `**`: `/v1/*/x` is `/v1/{1}/x`.
    ///
    /// Since an identifier never starts with a digit, those names can be neither a field
    /// path nor each other, and the names say where each variable starts and ends: two
    /// templates that match different paths or bind differently get different paths.
    /// The exception is a variable without wildcards (`{f=a/b}`), which has nothing to
    /// name: it shows as its literals, like the same template without it.
    pub fn openapi_path(&self) -> (String, Vec<PathParameter>) {
        let mut path = String::with_capacity(self.text.len() + 8);
        let mut parameters = Vec::new();
        for (index, segment) in self.segments.iter().enumerate() {
            path.push('/');
            let rest = match segment {
                Segment::Literal(literal) => {
                    path.push_str(&literal.raw);
                    continue;
                }
                Segment::Star => false,
                Segment::DoubleStar => true,
            };
            let owner = self
                .variables
                .iter()
                .find(|variable| (variable.start..variable.end).contains(&index));
            let name = match owner {
                None if rest => format!("{index}.rest"),
                None => index.to_string(),
                Some(variable) if !variable.multi_segment => variable.dotted(),
                Some(variable) => {
                    let offset = index - variable.start;
                    let mut name = format!("{}.{offset}", variable.dotted());
                    let after = &self.segments[index + 1..variable.end];
                    if rest {
                        name.push_str(".rest");
                    } else if !after.is_empty()
                        && after.iter().all(|s| matches!(s, Segment::Literal(_)))
                    {
                        name.push_str(&format!(".{}", variable.end - variable.start));
                    }
                    name
                }
            };
            path.push('{');
            path.push_str(&name);
            path.push('}');
            parameters.push(PathParameter {
                name,
                field_path: owner.map(|variable| variable.field_path.clone()),
                rest,
            });
        }
        if let Some(verb) = &self.verb {
            path.push(':');
            path.push_str(&verb.raw);
        }
        (path, parameters)
    }

    fn ends_in_rest(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::DoubleStar))
    }

    /// The path as this template reads it: without the verb if it has one, `None` if
    /// the verb does not match.
    fn view<'a>(&self, request: &'a RequestPath<'a>) -> Option<View<'a>> {
        let last = match &self.verb {
            Some(verb) => {
                let split = request.verb.as_ref()?;
                if split.stem_raw.is_empty() || split.verb != verb.decoded.as_str() {
                    return None;
                }
                Some((split.stem_raw, &*split.stem))
            }
            None => None,
        };
        Some(View {
            segments: &request.segments,
            last,
        })
    }

    fn fits(&self, view: &View<'_>) -> bool {
        let count = view.len();
        let fixed = self.segments.len() - usize::from(self.ends_in_rest());
        if count < fixed || (!self.ends_in_rest() && count > fixed) {
            return false;
        }
        self.segments[..fixed]
            .iter()
            .enumerate()
            .all(|(index, segment)| match segment {
                Segment::Literal(literal) => view.decoded(index) == literal.decoded,
                Segment::Star | Segment::DoubleStar => true,
            })
    }

    /// The values of a path that [`Self::fits`].
    fn bind(&self, view: &View<'_>) -> Option<Bindings<'_>> {
        let mut bindings = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let end = if variable.end == self.segments.len() && self.ends_in_rest() {
                view.len()
            } else {
                variable.end
            };
            let value = if variable.multi_segment {
                let mut value = String::new();
                for index in variable.start..end {
                    if index > variable.start {
                        value.push('/');
                    }
                    value.push_str(&decode(view.raw(index), true)?);
                }
                value
            } else {
                view.decoded(variable.start).to_owned()
            };
            bindings.push((variable.field_path.as_slice(), value));
        }
        Some(bindings)
    }

    /// How a segment position ranks: literal, `*`, the template's end, `**`.
    fn rank_at(&self, index: usize) -> u8 {
        match self.segments.get(index) {
            Some(Segment::Literal(_)) => 3,
            Some(Segment::Star) => 2,
            None => 1,
            Some(Segment::DoubleStar) => 0,
        }
    }

    /// `Greater` when `self` is more specific (see the module's precedence rules).
    fn specificity(&self, other: &Template) -> Ordering {
        let positions = self.segments.len().max(other.segments.len());
        (0..positions)
            .map(|index| self.rank_at(index).cmp(&other.rank_at(index)))
            .find(|order| order.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| self.verb.is_some().cmp(&other.verb.is_some()))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Template::parse(text)
    }
}

/// A template that does not parse: the text, the column (from 1, in characters) and
/// what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template `{template}`, column {column}: {kind}")]
pub struct TemplateError {
    template: String,
    column: usize,
    kind: TemplateErrorKind,
}

impl TemplateError {
    /// The template's text.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Where it is wrong: the character's column, from 1.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong.
    pub fn kind(&self) -> &TemplateErrorKind {
        &self.kind
    }
}

/// What is wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateErrorKind {
    #[error("a path template starts with `/`")]
    MissingLeadingSlash,
    #[error("empty segment: a segment is a literal, `*`, `**` or a `{{variable}}`")]
    EmptySegment,
    #[error(
        "`{found}` where {expected} belongs (other characters of a literal are percent-encoded)"
    )]
    Unexpected { found: char, expected: &'static str },
    #[error("bad percent-encoding: `%` takes two hex digits, and the bytes must be UTF-8")]
    BadPercentEncoding,
    #[error("`*` and `**` are whole segments")]
    PartialWildcard,
    #[error("`**` can only be the last segment")]
    DoubleStarNotLast,
    #[error("variables cannot be nested")]
    NestedVariable,
    #[error("this variable is not closed with `}}`")]
    UnclosedVariable,
    #[error(
        "a field path is identifiers joined by `.`, each a letter or `_` then letters, digits or `_`"
    )]
    BadFieldPath,
    #[error("field path `{0}` is bound twice")]
    DuplicateFieldPath(String),
    #[error("field path `{0}` overlaps `{1}`: a field and a field inside it cannot both be bound")]
    OverlappingFieldPaths(String, String),
    #[error("empty verb: `:` is followed by a literal")]
    EmptyVerb,
    #[error("the verb ends the template")]
    TextAfterVerb,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    /// Where a `**` was, so any segment after it is refused there.
    double_star: Option<usize>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            pos: 0,
            segments: Vec::new(),
            variables: Vec::new(),
            double_star: None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn error_at(&self, pos: usize, kind: TemplateErrorKind) -> TemplateError {
        // Every byte before an error is ASCII but for the one it points at, so `pos` is a
        // character boundary.
        let column = self.text.get(..pos).map_or(pos, |s| s.chars().count()) + 1;
        TemplateError {
            template: self.text.to_owned(),
            column,
            kind,
        }
    }

    fn error(&self, kind: TemplateErrorKind) -> TemplateError {
        self.error_at(self.pos, kind)
    }

    fn unexpected(&self, expected: &'static str) -> TemplateError {
        let found = self
            .text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or(' ');
        self.error(TemplateErrorKind::Unexpected { found, expected })
    }

    fn template(mut self) -> Result<Template, TemplateError> {
        if !self.eat(b'/') {
            return Err(self.error(TemplateErrorKind::MissingLeadingSlash));
        }
        self.segments(false)?;
        let verb = match self.peek() {
            None => None,
            Some(b':') => {
                self.pos += 1;
                if !self.peek().is_some_and(starts_literal) {
                    return Err(self.error(TemplateErrorKind::EmptyVerb));
                }
                let verb = self.literal()?;
                if self.peek().is_some() {
                    return Err(self.error(TemplateErrorKind::TextAfterVerb));
                }
                Some(verb)
            }
            Some(_) => return Err(self.unexpected("`/`, a `:verb` or the end")),
        };
        Ok(Template {
            text: self.text.to_owned(),
            segments: self.segments,
            variables: self.variables,
            verb,
        })
    }

    fn segments(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        loop {
            self.segment(in_variable)?;
            if !self.eat(b'/') {
                return Ok(());
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        if let Some(at) = self.double_star {
            return Err(self.error_at(at, TemplateErrorKind::DoubleStarNotLast));
        }
        let start = self.pos;
        match self.peek() {
            Some(b'*') => {
                self.pos += 1;
                let segment = if self.eat(b'*') {
                    self.double_star = Some(start);
                    Segment::DoubleStar
                } else {
                    Segment::Star
                };
                if self.peek().is_some_and(|b| b == b'*' || starts_literal(b)) {
                    return Err(self.error_at(start, TemplateErrorKind::PartialWildcard));
                }
                self.segments.push(segment);
            }
            Some(b'{') if in_variable => return Err(self.error(TemplateErrorKind::NestedVariable)),
            Some(b'{') => self.variable()?,
            Some(b) if starts_literal(b) => {
                let literal = self.literal()?;
                if self.peek() == Some(b'*') {
                    return Err(self.error_at(start, TemplateErrorKind::PartialWildcard));
                }
                self.segments.push(Segment::Literal(literal));
            }
            None | Some(b'/') => return Err(self.error(TemplateErrorKind::EmptySegment)),
            Some(b'}') if in_variable => return Err(self.error(TemplateErrorKind::EmptySegment)),
            Some(b':') if !in_variable => return Err(self.error(TemplateErrorKind::EmptySegment)),
            Some(_) => return Err(self.unexpected("a literal, `*`, `**` or a `{variable}`")),
        }
        Ok(())
    }

    fn variable(&mut self) -> Result<(), TemplateError> {
        let open = self.pos;
        self.pos += 1;
        let path_at = self.pos;
        let field_path = self.field_path(open)?;
        let start = self.segments.len();
        match self.peek() {
            Some(b'=') => {
                self.pos += 1;
                self.segments(true)?;
            }
            Some(b'}') => self.segments.push(Segment::Star),
            None => return Err(self.error_at(open, TemplateErrorKind::UnclosedVariable)),
            Some(_) => return Err(self.unexpected("`.`, `=` or `}` after a field path")),
        }
        match self.peek() {
            Some(b'}') => self.pos += 1,
            None => return Err(self.error_at(open, TemplateErrorKind::UnclosedVariable)),
            Some(b'{') => return Err(self.error(TemplateErrorKind::NestedVariable)),
            Some(_) => return Err(self.unexpected("`/` or `}`")),
        }
        for other in &self.variables {
            let kind = if other.field_path == field_path {
                TemplateErrorKind::DuplicateFieldPath(field_path.join("."))
            } else if other.field_path.starts_with(&field_path)
                || field_path.starts_with(&other.field_path)
            {
                TemplateErrorKind::OverlappingFieldPaths(field_path.join("."), other.dotted())
            } else {
                continue;
            };
            return Err(self.error_at(path_at, kind));
        }
        let end = self.segments.len();
        let multi_segment =
            end - start > 1 || self.segments[start..end].contains(&Segment::DoubleStar);
        self.variables.push(Variable {
            field_path,
            start,
            end,
            multi_segment,
        });
        Ok(())
    }

    fn field_path(&mut self, open: usize) -> Result<Vec<String>, TemplateError> {
        let mut path = Vec::new();
        loop {
            let start = self.pos;
            match self.peek() {
                Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
                None => return Err(self.error_at(open, TemplateErrorKind::UnclosedVariable)),
                Some(_) => return Err(self.error(TemplateErrorKind::BadFieldPath)),
            }
            while self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                self.pos += 1;
            }
            path.push(self.text[start..self.pos].to_owned());
            if !self.eat(b'.') {
                return Ok(path);
            }
        }
    }

    /// A non-empty literal (the caller saw its first character).
    fn literal(&mut self) -> Result<Literal, TemplateError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b'%' {
                let bytes = self.text.as_bytes();
                let pair = bytes.get(self.pos + 1..self.pos + 3);
                if !pair.is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit)) {
                    return Err(self.error(TemplateErrorKind::BadPercentEncoding));
                }
                self.pos += 3;
            } else if is_literal_byte(b) {
                self.pos += 1;
            } else {
                break;
            }
        }
        let raw = &self.text[start..self.pos];
        let decoded = decode(raw, false)
            .ok_or_else(|| self.error_at(start, TemplateErrorKind::BadPercentEncoding))?;
        Ok(Literal {
            raw: raw.to_owned(),
            decoded: decoded.into_owned(),
        })
    }
}

/// Unreserved characters and the sub-delimiters but `*` and `=`, and `@`: a path
/// character (RFC 3986 `pchar`) that is not template syntax.
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()+,;@".contains(&b)
}

fn starts_literal(b: u8) -> bool {
    b == b'%' || is_literal_byte(b)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `raw`, leaving `%2F`/`%2f` as written when `keep_slash`; `None` for
/// a bad `%` or bytes that are not UTF-8.
fn decode(raw: &str, keep_slash: bool) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        if b != b'%' {
            out.push(b);
            index += 1;
            continue;
        }
        let high = hex_value(*bytes.get(index + 1)?)?;
        let low = hex_value(*bytes.get(index + 2)?)?;
        let byte = (high << 4) | low;
        if keep_slash && byte == b'/' {
            out.extend_from_slice(&bytes[index..index + 3]);
        } else {
            out.push(byte);
        }
        index += 3;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// A request path split and decoded once, for every template tried on it.
struct RequestPath<'p> {
    /// Each segment raw and fully decoded.
    segments: Vec<(&'p str, Cow<'p, str>)>,
    /// The last segment split at its last `:`, if it has one.
    verb: Option<VerbSplit<'p>>,
}

struct VerbSplit<'p> {
    stem_raw: &'p str,
    stem: Cow<'p, str>,
    verb: Cow<'p, str>,
}

impl<'p> RequestPath<'p> {
    /// `None` when no template can match: no leading `/`, an empty segment, or a
    /// segment that does not decode.
    fn parse(path: &'p str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for raw in rest.split('/') {
                if raw.is_empty() {
                    return None;
                }
                segments.push((raw, decode(raw, false)?));
            }
        }
        let verb = match segments.last() {
            Some((last, _)) => match last.rfind(':') {
                Some(colon) => Some(VerbSplit {
                    stem_raw: &last[..colon],
                    stem: decode(&last[..colon], false)?,
                    verb: decode(&last[colon + 1..], false)?,
                }),
                None => None,
            },
            None => None,
        };
        Some(RequestPath { segments, verb })
    }
}

/// The request's segments as one template reads them.
struct View<'a> {
    segments: &'a [(&'a str, Cow<'a, str>)],
    /// The last segment without the verb (raw, decoded), for a template with a verb.
    last: Option<(&'a str, &'a str)>,
}

impl View<'_> {
    fn len(&self) -> usize {
        self.segments.len()
    }

    fn raw(&self, index: usize) -> &str {
        match self.last {
            Some((raw, _)) if index + 1 == self.segments.len() => raw,
            _ => self.segments[index].0,
        }
    }

    fn decoded(&self, index: usize) -> &str {
        match self.last {
            Some((_, decoded)) if index + 1 == self.segments.len() => decoded,
            _ => &self.segments[index].1,
        }
    }
}

/// Templates by HTTP method, each with a value; [`Self::find`] picks the most specific
/// match (see the module's precedence rules).
#[derive(Debug)]
pub struct RouteTable<T> {
    /// Methods in the order first inserted; each one's routes most specific first, ties
    /// by template text, so the first match is the winner.
    methods: Vec<(Method, Vec<Route<T>>)>,
}

#[derive(Debug)]
struct Route<T> {
    template: Template,
    value: T,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            methods: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route; a custom method (`custom { kind: "LIST" }`) is
    /// `Method::from_bytes(b"LIST")`. Refused when the method already has a template of
    /// the same shape ([`Template::same_shape`]): the conflict (boxed: it holds the route)
    /// gives the route back, and
    /// [`Self::replace`] puts it in instead if it should win.
    pub fn insert(
        &mut self,
        method: Method,
        template: Template,
        value: T,
    ) -> Result<(), Box<Conflict<T>>> {
        let routes = self.routes_mut(&method);
        if let Some(existing) = routes.iter().find(|r| r.template.same_shape(&template)) {
            return Err(Box::new(Conflict {
                existing: existing.template.as_str().to_owned(),
                method,
                template,
                value,
            }));
        }
        let at = routes.partition_point(|route| precedes(&route.template, &template));
        routes.insert(at, Route { template, value });
        Ok(())
    }

    /// Adds a route, taking out the one of the same shape if any and giving it back.
    pub fn replace(
        &mut self,
        method: Method,
        template: Template,
        value: T,
    ) -> Option<(Template, T)> {
        let routes = self.routes_mut(&method);
        let old = routes
            .iter()
            .position(|route| route.template.same_shape(&template))
            .map(|index| routes.remove(index));
        let at = routes.partition_point(|route| precedes(&route.template, &template));
        routes.insert(at, Route { template, value });
        old.map(|route| (route.template, route.value))
    }

    /// The most specific route of `method` matching `path` (raw, still percent-encoded,
    /// no query), with its bindings. The method must be the same: no `HEAD` for `GET`.
    pub fn find(&self, method: &Method, path: &str) -> Option<(&T, Bindings<'_>)> {
        let (_, routes) = self.methods.iter().find(|(m, _)| m == method)?;
        let request = RequestPath::parse(path)?;
        routes.iter().find_map(|route| {
            let view = route.template.view(&request)?;
            if !route.template.fits(&view) {
                return None;
            }
            Some((&route.value, route.template.bind(&view)?))
        })
    }

    /// Every route: methods in the order first inserted, each method's routes most
    /// specific first (ties by template text).
    pub fn iter(&self) -> impl Iterator<Item = (&Method, &Template, &T)> {
        self.methods.iter().flat_map(|(method, routes)| {
            routes
                .iter()
                .map(move |route| (method, &route.template, &route.value))
        })
    }

    pub fn len(&self) -> usize {
        self.methods.iter().map(|(_, routes)| routes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn routes_mut(&mut self, method: &Method) -> &mut Vec<Route<T>> {
        let index = match self.methods.iter().position(|(m, _)| m == method) {
            Some(index) => index,
            None => {
                self.methods.push((method.clone(), Vec::new()));
                self.methods.len() - 1
            }
        };
        &mut self.methods[index].1
    }
}

/// Whether `a` goes before `b` in a method's list: more specific, or as specific and
/// first by text.
fn precedes(a: &Template, b: &Template) -> bool {
    match a.specificity(b) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a.text < b.text,
    }
}

/// A route refused because its method has a template of the same shape; it holds the
/// refused route so that the caller can choose which one stays.
#[derive(thiserror::Error)]
#[error("{method} {template}: same shape as {existing}, already routed")]
pub struct Conflict<T> {
    pub method: Method,
    /// The text of the template already in the table.
    pub existing: String,
    /// The refused route.
    pub template: Template,
    pub value: T,
}

// By hand: the value need not be `Debug`.
impl<T> fmt::Debug for Conflict<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conflict")
            .field("method", &self.method)
            .field("existing", &self.existing)
            .field("template", &self.template.as_str())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Template {
        match Template::parse(text) {
            Ok(template) => template,
            Err(e) => panic!("{e}"),
        }
    }

    fn dotted(bindings: &Bindings<'_>) -> Vec<(String, String)> {
        bindings
            .iter()
            .map(|(path, value)| (path.join("."), value.clone()))
            .collect()
    }

    /// (template, raw path, the bindings as (dotted field path, value), or `None` for no
    /// match).
    type Case = (
        &'static str,
        &'static str,
        Option<&'static [(&'static str, &'static str)]>,
    );

    const MATCHES: &[Case] = &[
        // Literals.
        ("/v1/shelves", "/v1/shelves", Some(&[])),
        ("/v1/shelves", "/v1/books", None),
        ("/v1/shelves", "/v1/shelves/more", None),
        ("/v1/shelves", "v1/shelves", None),
        ("/v1/shelves", "", None),
        ("/v1/shelves", "/v1/shel%76es", Some(&[])),
        ("/v1/a%20b", "/v1/a%20b", Some(&[])),
        ("/v1/a%2Fb", "/v1/a%2fb", Some(&[])),
        ("/v1/a%2Fb", "/v1/a/b", None),
        // Empty segments and a trailing slash match nothing.
        ("/v1/shelves", "/v1/shelves/", None),
        ("/v1/shelves", "/v1//shelves", None),
        ("/v1/{id}", "/v1/", None),
        ("/v1/{name=**}", "/v1/a//b", None),
        ("/v1/{name=**}", "/v1/a/", None),
        ("/**", "//", None),
        // Single-segment variables.
        (
            "/v1/shelves/{shelf}",
            "/v1/shelves/42",
            Some(&[("shelf", "42")]),
        ),
        (
            "/v1/shelves/{shelf=*}",
            "/v1/shelves/42",
            Some(&[("shelf", "42")]),
        ),
        ("/v1/shelves/{shelf}", "/v1/shelves", None),
        ("/v1/shelves/{shelf}", "/v1/shelves/42/books", None),
        (
            "/v1/shelves/{shelf}/books/{book}",
            "/v1/shelves/1/books/2",
            Some(&[("shelf", "1"), ("book", "2")]),
        ),
        (
            "/v1/{kind=shelves}",
            "/v1/shel%76es",
            Some(&[("kind", "shelves")]),
        ),
        // Nested field paths and multi-segment variables.
        (
            "/v1/{book.name=shelves/*/books/*}",
            "/v1/shelves/1/books/2",
            Some(&[("book.name", "shelves/1/books/2")]),
        ),
        (
            "/v1/{book.name=shelves/*/books/*}",
            "/v1/shel%76es/1/books/2",
            Some(&[("book.name", "shelves/1/books/2")]),
        ),
        (
            "/v1/{book.name=shelves/*/books/*}",
            "/v1/shelves/1/books",
            None,
        ),
        (
            "/v1/{book.name=shelves/*/books/*}",
            "/v1/shelves/1/novels/2",
            None,
        ),
        ("/v1/{a.b.c}", "/v1/x", Some(&[("a.b.c", "x")])),
        // `*` outside a variable binds nothing.
        ("/v1/*/books", "/v1/x/books", Some(&[])),
        ("/v1/*/books", "/v1/books", None),
        // `**`, zero segments included.
        (
            "/v1/files/{path=**}",
            "/v1/files/a/b/c",
            Some(&[("path", "a/b/c")]),
        ),
        ("/v1/files/{path=**}", "/v1/files/a", Some(&[("path", "a")])),
        ("/v1/files/{path=**}", "/v1/files", Some(&[("path", "")])),
        ("/v1/files/**", "/v1/files", Some(&[])),
        ("/v1/files/**", "/v1/file", None),
        (
            "/v1/{name=files/**}",
            "/v1/files",
            Some(&[("name", "files")]),
        ),
        (
            "/v1/{name=files/**}",
            "/v1/files/a/b",
            Some(&[("name", "files/a/b")]),
        ),
        ("/**", "/", Some(&[])),
        ("/{path=**}", "/", Some(&[("path", "")])),
        ("/{path=**}", "/a/b", Some(&[("path", "a/b")])),
        (
            "/v1/files/{path=**}",
            "/v1/files/a:b/c:d",
            Some(&[("path", "a:b/c:d")]),
        ),
        // `**` with a verb.
        (
            "/v1/files/{path=**}:download",
            "/v1/files/a/b:download",
            Some(&[("path", "a/b")]),
        ),
        (
            "/v1/files/{path=**}:download",
            "/v1/files:download",
            Some(&[("path", "")]),
        ),
        ("/v1/files/{path=**}:download", "/v1/files/a/b", None),
        (
            "/v1/files/{path=**}:download",
            "/v1/files/a:download/b",
            None,
        ),
        // Verbs.
        (
            "/v1/{name=operations/*}:cancel",
            "/v1/operations/7:cancel",
            Some(&[("name", "operations/7")]),
        ),
        ("/v1/{name=operations/*}:cancel", "/v1/operations/7", None),
        (
            "/v1/{name=operations/*}:cancel",
            "/v1/operations/7:delete",
            None,
        ),
        (
            "/v1/{name=operations/*}",
            "/v1/operations/7:cancel",
            Some(&[("name", "operations/7:cancel")]),
        ),
        (
            "/v1/operations/{id}:cancel",
            "/v1/operations/a:b:cancel",
            Some(&[("id", "a:b")]),
        ),
        ("/v1/operations/{id}:cancel", "/v1/operations/:cancel", None),
        (
            "/v1/operations/{id}",
            "/v1/operations/:cancel",
            Some(&[("id", ":cancel")]),
        ),
        (
            "/v1/operations:batchGet",
            "/v1/operations:batchGet",
            Some(&[]),
        ),
        ("/v1/operations:batchGet", "/v1/operations:batchget", None),
        ("/v1/operations", "/v1/operations:batchGet", None),
        ("/v1/{id}:cancel", "/v1/7:c%61ncel", Some(&[("id", "7")])),
        ("/v1/{id}:cancel", "/v1/7:", None),
        // An encoded colon is no verb separator; it decodes in the value.
        (
            "/v1/operations/{id}:cancel",
            "/v1/operations/7%3Acancel",
            None,
        ),
        (
            "/v1/operations/{id}",
            "/v1/operations/7%3Acancel",
            Some(&[("id", "7:cancel")]),
        ),
        (
            "/v1/operations/{id}:cancel",
            "/v1/operations/a%3Ab:cancel",
            Some(&[("id", "a:b")]),
        ),
        (
            "/v1/{name=operations/*}:cancel",
            "/v1/operations/a%3Ab:cancel",
            Some(&[("name", "operations/a:b")]),
        ),
        // Percent-decoding: full for one segment, all but `%2F` for several.
        ("/v1/{id}", "/v1/a%2Fb", Some(&[("id", "a/b")])),
        ("/v1/{id}", "/v1/a%2fb", Some(&[("id", "a/b")])),
        ("/v1/{name=**}", "/v1/a%2Fb/c", Some(&[("name", "a%2Fb/c")])),
        ("/v1/{name=**}", "/v1/a%2fb/c", Some(&[("name", "a%2fb/c")])),
        (
            "/v1/{name=x/*}",
            "/v1/x/a%2Fb",
            Some(&[("name", "x/a%2Fb")]),
        ),
        ("/v1/{id}", "/v1/a+b", Some(&[("id", "a+b")])),
        (
            "/v1/{name=**}",
            "/v1/a+b/c%20d",
            Some(&[("name", "a+b/c d")]),
        ),
        ("/v1/{id}", "/v1/caf%C3%A9", Some(&[("id", "café")])),
        ("/v1/{id}", "/v1/%E2%82%AC%20", Some(&[("id", "€ ")])),
        ("/v1/{id}", "/v1/%41%3f%23", Some(&[("id", "A?#")])),
        ("/v1/{name=**}", "/v1/a%252F", Some(&[("name", "a%2F")])),
        // Bad percent-encoding or bytes that are not UTF-8 match nothing.
        ("/v1/{id}", "/v1/a%zz", None),
        ("/v1/{id}", "/v1/a%2", None),
        ("/v1/{id}", "/v1/a%", None),
        ("/v1/{id}", "/v1/%FF", None),
        ("/v1/{name=**}", "/v1/a/%C3", None),
        ("/v1/*", "/v1/%zz", None),
        ("/v1/{id}", "/v1/%zz/x", None),
        ("/v1/{id}:cancel", "/v1/7:%zz", None),
    ];

    #[test]
    fn the_match_table_holds() {
        let mut failures = Vec::new();
        for &(text, path, expected) in MATCHES {
            let got = template(text).matches(path).map(|b| dotted(&b));
            let expected = expected.map(|pairs| {
                pairs
                    .iter()
                    .map(|&(f, v)| (f.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            });
            if got != expected {
                failures.push(format!("{text} on {path}: got {got:?}, want {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn parse_keeps_the_text_and_exposes_variables_and_verb() {
        let t = template("/v1/{book.name=shelves/*/books/*}/{page}:list");
        assert_eq!(
            t.to_string(),
            "/v1/{book.name=shelves/*/books/*}/{page}:list"
        );
        assert_eq!(t.as_str(), t.to_string());
        assert_eq!(t.verb(), Some("list"));
        let variables: Vec<_> = t
            .variables()
            .iter()
            .map(|v| (v.field_path().to_vec(), v.is_multi_segment()))
            .collect();
        assert_eq!(
            variables,
            [
                (vec!["book".to_owned(), "name".to_owned()], true),
                (vec!["page".to_owned()], false),
            ]
        );
        assert_eq!(template("/v1/x").verb(), None);
        assert_eq!(template("/v1/x:c%61ncel").verb(), Some("cancel"));
        assert!(template("/{p=**}").variables()[0].is_multi_segment());
        assert!(!template("/{p=x}").variables()[0].is_multi_segment());
        assert!("/v1/{a}".parse::<Template>().is_ok());
    }

    #[test]
    fn a_bare_variable_is_the_same_as_one_with_a_star() {
        let (bare, star) = (template("/v1/{name}"), template("/v1/{name=*}"));
        assert!(bare.same_shape(&star));
        assert_eq!(bare.variables(), star.variables());
        assert_eq!(bare.openapi_path(), star.openapi_path());
    }

    #[test]
    fn each_parse_error_says_what_and_where() {
        use TemplateErrorKind::*;
        let cases: &[(&str, TemplateErrorKind, usize)] = &[
            ("", MissingLeadingSlash, 1),
            ("v1/shelves", MissingLeadingSlash, 1),
            ("/", EmptySegment, 2),
            ("/v1//shelves", EmptySegment, 5),
            ("/v1/", EmptySegment, 5),
            ("/v1/{a=}", EmptySegment, 8),
            ("/v1/:x", EmptySegment, 5),
            ("/v1/a*", PartialWildcard, 5),
            ("/v1/*a", PartialWildcard, 5),
            ("/v1/***", PartialWildcard, 5),
            ("/v1/**/x", DoubleStarNotLast, 5),
            ("/v1/{a=**}/x", DoubleStarNotLast, 8),
            ("/v1/{a=**/x}", DoubleStarNotLast, 8),
            ("/v1/**/{a}", DoubleStarNotLast, 5),
            ("/v1/{a=b/{c}}", NestedVariable, 10),
            ("/v1/{a=b{c}}", NestedVariable, 9),
            ("/v1/{a", UnclosedVariable, 5),
            ("/v1/{a=b", UnclosedVariable, 5),
            ("/v1/{a.", UnclosedVariable, 5),
            ("/v1/{}", BadFieldPath, 6),
            ("/v1/{1a}", BadFieldPath, 6),
            ("/v1/{a.}", BadFieldPath, 8),
            ("/v1/{a..b}", BadFieldPath, 8),
            (
                "/v1/{a-b}",
                Unexpected {
                    found: '-',
                    expected: "`.`, `=` or `}` after a field path",
                },
                7,
            ),
            ("/v1/{a}/{a}", DuplicateFieldPath("a".to_owned()), 10),
            (
                "/v1/{a.b}/{a}",
                OverlappingFieldPaths("a".to_owned(), "a.b".to_owned()),
                12,
            ),
            (
                "/v1/{a}/{a.b}",
                OverlappingFieldPaths("a.b".to_owned(), "a".to_owned()),
                10,
            ),
            ("/v1/a:", EmptyVerb, 7),
            ("/v1/a:/b", EmptyVerb, 7),
            ("/v1/a:b/c", TextAfterVerb, 8),
            ("/v1/a:b:c", TextAfterVerb, 8),
            ("/v1/a%zz", BadPercentEncoding, 6),
            ("/v1/a%2", BadPercentEncoding, 6),
            ("/v1/a%FF", BadPercentEncoding, 5),
            ("/v1/x:%zz", BadPercentEncoding, 7),
            (
                "/v1/a?b",
                Unexpected {
                    found: '?',
                    expected: "`/`, a `:verb` or the end",
                },
                6,
            ),
            (
                "/v1/a=b",
                Unexpected {
                    found: '=',
                    expected: "`/`, a `:verb` or the end",
                },
                6,
            ),
            (
                "/v1/a}",
                Unexpected {
                    found: '}',
                    expected: "`/`, a `:verb` or the end",
                },
                6,
            ),
            (
                "/v1/é/{x",
                Unexpected {
                    found: 'é',
                    expected: "a literal, `*`, `**` or a `{variable}`",
                },
                5,
            ),
            (
                "/v1/{a=x:y}",
                Unexpected {
                    found: ':',
                    expected: "`/` or `}`",
                },
                9,
            ),
        ];
        let mut failures = Vec::new();
        for (text, kind, column) in cases {
            match Template::parse(text) {
                Ok(_) => failures.push(format!("{text:?} parsed")),
                Err(e) if e.kind() != kind || e.column() != *column => failures.push(format!(
                    "{text:?}: got {:?} at {}, want {kind:?} at {column}",
                    e.kind(),
                    e.column()
                )),
                Err(e) => assert_eq!(e.template(), *text),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_parse_error_displays_the_template_the_column_and_the_fault() {
        let e = Template::parse("/v1/{a}/{a}").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("path template `/v1/{a}/{a}`, column 10: field path `a` is bound twice")
        );
    }

    #[test]
    fn openapi_paths_name_every_wildcard() {
        let cases = [
            ("/v1/shelves", "/v1/shelves"),
            (
                "/v1/shelves/{shelf}/books/{book}",
                "/v1/shelves/{shelf}/books/{book}",
            ),
            ("/v1/{book.name}", "/v1/{book.name}"),
            (
                "/v1/{book.name=shelves/*/books/*}",
                "/v1/shelves/{book.name.1}/books/{book.name.3}",
            ),
            (
                "/v1/{name=operations/*}:cancel",
                "/v1/operations/{name.1}:cancel",
            ),
            ("/v1/files/{path=**}", "/v1/files/{path.0.rest}"),
            ("/v1/{name=files/**}:get", "/v1/files/{name.1.rest}:get"),
            ("/v1/{f=a/*/b}", "/v1/a/{f.1.3}/b"),
            ("/v1/*/x", "/v1/{1}/x"),
            ("/v1/**", "/v1/{1.rest}"),
            ("/v1/a%2Fb/{id}:c%61ncel", "/v1/a%2Fb/{id}:c%61ncel"),
            ("/v1/{kind=shelves}", "/v1/shelves"),
        ];
        for (text, want) in cases {
            assert_eq!(template(text).openapi_path().0, want, "{text}");
        }
        let (_, parameters) = template("/v1/{book.name=shelves/*/books/*}/*/{p=**}").openapi_path();
        let field = |path: &str| Some(path.split('.').map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(
            parameters,
            [
                PathParameter {
                    name: "book.name.1".to_owned(),
                    field_path: field("book.name"),
                    rest: false,
                },
                PathParameter {
                    name: "book.name.3".to_owned(),
                    field_path: field("book.name"),
                    rest: false,
                },
                PathParameter {
                    name: "5".to_owned(),
                    field_path: None,
                    rest: false,
                },
                PathParameter {
                    name: "p.0.rest".to_owned(),
                    field_path: field("p"),
                    rest: true,
                },
            ]
        );
    }

    /// Templates that differ only in where a variable starts or ends, what it is
    /// called, `*` against `**` or a variable, or the verb.
    const LOOKALIKES: &[&str] = &[
        "/v1/{a}",
        "/v1/{b}",
        "/v1/*",
        "/v1/**",
        "/v1/{a=**}",
        "/v1/{a.rest}",
        "/v1/{a}/{b}",
        "/v1/{a=*/*}",
        "/v1/*/{a}",
        "/v1/{a}/*",
        "/v1/x/{a}",
        "/v1/x/*",
        "/v1/{a=x/*}",
        "/{a=v1/x/*}",
        "/v1/{a=x/*/y}",
        "/v1/{a=x/*}/y",
        "/v1/x/{a}/y",
        "/v1/{a=x/*/y/*}",
        "/v1/{a=x/*}/{b=y/*}",
        "/v1/{a=x/*}/y/{b}",
        "/v1/{a}:cancel",
        "/v1/{a}:delete",
        "/v1/{a=x/*}:cancel",
        "/v1/shelves/{book.name.shelves}",
        "/v1/{book.name=shelves/*}",
        "/v1/shelves/{book.name}",
        "/v1/{book.name=*/*}",
        "/v1/{book.name_1}/x",
        "/v1/{book.name=*}/x",
    ];

    /// Same paths matched and the same values bound: the same variables over the same
    /// segments.
    fn equivalent(a: &Template, b: &Template) -> bool {
        a.same_shape(b) && a.variables() == b.variables()
    }

    fn has_constant(t: &Template) -> bool {
        t.variables().iter().any(|v| {
            t.segments[v.start..v.end]
                .iter()
                .all(|s| matches!(s, Segment::Literal(_)))
        })
    }

    #[test]
    fn openapi_paths_differ_for_templates_that_differ_and_are_valid() {
        let mut texts: Vec<&str> = LOOKALIKES.to_vec();
        texts.extend(MATCHES.iter().map(|case| case.0));
        texts.sort_unstable();
        texts.dedup();
        let templates: Vec<Template> = texts.iter().map(|text| template(text)).collect();
        let paths: Vec<_> = templates.iter().map(Template::openapi_path).collect();
        for (i, (a, (path_a, _))) in templates.iter().zip(&paths).enumerate() {
            for (b, (path_b, _)) in templates.iter().zip(&paths).skip(i + 1) {
                // A variable without wildcards shows as literals, the documented exception.
                if path_a == path_b && !has_constant(a) && !has_constant(b) {
                    assert!(equivalent(a, b), "{a} and {b} both give {path_a}");
                }
            }
        }
        for (path, parameters) in &paths {
            assert!(path.starts_with('/'), "{path}");
            assert!(!path.contains(['*', '=']), "{path}");
            let names: Vec<&str> = path
                .split('{')
                .skip(1)
                .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
                .collect();
            let listed: Vec<&str> = parameters.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, listed, "{path}");
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{path}");
        }
    }

    fn table(routes: &[(&str, &'static str)]) -> RouteTable<&'static str> {
        let mut table = RouteTable::new();
        for &(text, value) in routes {
            if let Err(conflict) = table.insert(Method::GET, template(text), value) {
                panic!("{conflict}");
            }
        }
        table
    }

    /// The value found for `path` in both insertion orders, which must agree.
    fn winner(routes: &[(&str, &'static str)], path: &str) -> Option<&'static str> {
        let forward = table(routes).find(&Method::GET, path).map(|(v, _)| *v);
        let mut reversed = routes.to_vec();
        reversed.reverse();
        let backward = table(&reversed).find(&Method::GET, path).map(|(v, _)| *v);
        assert_eq!(
            forward, backward,
            "insertion order changed the winner on {path}"
        );
        forward
    }

    #[test]
    fn a_literal_beats_a_variable_in_the_same_position() {
        let routes = [
            ("/v1/shelves/{shelf}", "variable"),
            ("/v1/shelves/special", "literal"),
        ];
        assert_eq!(winner(&routes, "/v1/shelves/special"), Some("literal"));
        assert_eq!(winner(&routes, "/v1/shelves/spec%69al"), Some("literal"));
        assert_eq!(winner(&routes, "/v1/shelves/7"), Some("variable"));
    }

    #[test]
    fn the_leftmost_difference_decides() {
        let routes = [("/v1/{a}/x", "star first"), ("/v1/x/{b}", "literal first")];
        assert_eq!(winner(&routes, "/v1/x/x"), Some("literal first"));
        assert_eq!(winner(&routes, "/v1/y/x"), Some("star first"));
    }

    #[test]
    fn a_star_beats_a_double_star() {
        let routes = [("/v1/{name=**}", "rest"), ("/v1/{id}", "one")];
        assert_eq!(winner(&routes, "/v1/7"), Some("one"));
        assert_eq!(winner(&routes, "/v1/7/8"), Some("rest"));
    }

    #[test]
    fn the_end_of_a_template_beats_a_double_star_matching_nothing() {
        let routes = [("/v1/files/**", "rest"), ("/v1/files", "exact")];
        assert_eq!(winner(&routes, "/v1/files"), Some("exact"));
        assert_eq!(winner(&routes, "/v1/files/a"), Some("rest"));
    }

    #[test]
    fn more_segments_beat_fewer_when_the_rest_ties() {
        let routes = [
            ("/v1/{name=shelves/**}", "shorter"),
            ("/v1/shelves/{id}/**", "longer"),
        ];
        assert_eq!(winner(&routes, "/v1/shelves/1/x"), Some("longer"));
        assert_eq!(winner(&routes, "/v1/shelves"), Some("shorter"));
    }

    #[test]
    fn a_verb_beats_the_same_segments_without_one() {
        let routes = [
            ("/v1/{name=operations/*}", "get"),
            ("/v1/{name=operations/*}:cancel", "cancel"),
        ];
        assert_eq!(winner(&routes, "/v1/operations/7:cancel"), Some("cancel"));
        assert_eq!(winner(&routes, "/v1/operations/7"), Some("get"));
        assert_eq!(winner(&routes, "/v1/operations/7:other"), Some("get"));
        let table = table(&routes);
        let found = table.find(&Method::GET, "/v1/operations/7:cancel");
        let bindings = found.map(|(_, b)| dotted(&b));
        assert_eq!(
            bindings,
            Some(vec![("name".to_owned(), "operations/7".to_owned())])
        );
    }

    #[test]
    fn segments_decide_before_the_verb() {
        let routes = [("/v1/{name=**}:cancel", "verb"), ("/v1/{id}", "star")];
        assert_eq!(winner(&routes, "/v1/7:cancel"), Some("star"));
        assert_eq!(winner(&routes, "/v1/a/7:cancel"), Some("verb"));
    }

    #[test]
    fn find_needs_the_same_method_and_custom_methods_work() {
        let list = Method::from_bytes(b"LIST").ok();
        let mut table = RouteTable::new();
        let inserted = [
            table.insert(Method::GET, template("/v1/shelves/{shelf}"), "get"),
            table.insert(Method::DELETE, template("/v1/shelves/{shelf}"), "delete"),
        ];
        assert!(inserted.iter().all(Result::is_ok));
        if let Some(list) = &list {
            assert!(
                table
                    .insert(list.clone(), template("/v1/shelves"), "list")
                    .is_ok()
            );
        }
        let found = |method: &Method, path| table.find(method, path).map(|(v, _)| *v);
        assert_eq!(found(&Method::GET, "/v1/shelves/1"), Some("get"));
        assert_eq!(found(&Method::DELETE, "/v1/shelves/1"), Some("delete"));
        assert_eq!(found(&Method::POST, "/v1/shelves/1"), None);
        assert_eq!(found(&Method::HEAD, "/v1/shelves/1"), None);
        let list = list.as_ref().map(|list| found(list, "/v1/shelves"));
        assert_eq!(list, Some(Some("list")));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn the_same_shape_conflicts_whatever_the_variables() {
        let pairs = [
            ("/v1/shelves/{shelf}", "/v1/shelves/{id}"),
            ("/v1/shelves/{shelf}", "/v1/shelves/*"),
            ("/v1/{name=shelves/*}", "/v1/shelves/{id}"),
            ("/v1/shel%76es/{x}", "/v1/shelves/{y}"),
            ("/v1/{path=**}:get", "/v1/**:get"),
            ("/v1/{kind=shelves}", "/v1/shelves"),
        ];
        for (first, second) in pairs {
            let mut table = RouteTable::new();
            assert!(table.insert(Method::GET, template(first), 1).is_ok());
            let conflict = table.insert(Method::GET, template(second), 2).err();
            let conflict = conflict.map(|c| (c.method.clone(), c.existing.clone(), c.value));
            assert_eq!(
                conflict,
                Some((Method::GET, first.to_owned(), 2)),
                "{second}"
            );
            assert_eq!(table.len(), 1);
        }
    }

    #[test]
    fn a_conflict_names_both_templates() {
        let mut table = RouteTable::new();
        assert!(table.insert(Method::GET, template("/v1/{a}"), ()).is_ok());
        let message = table
            .insert(Method::GET, template("/v1/{b}"), ())
            .err()
            .map(|c| c.to_string());
        assert_eq!(
            message.as_deref(),
            Some("GET /v1/{b}: same shape as /v1/{a}, already routed")
        );
    }

    #[test]
    fn other_methods_verbs_or_literals_do_not_conflict() {
        let mut table = RouteTable::new();
        let routes = [
            (Method::GET, "/v1/{name=operations/*}"),
            (Method::POST, "/v1/{name=operations/*}"),
            (Method::POST, "/v1/{name=operations/*}:cancel"),
            (Method::POST, "/v1/{name=operations/*}:delete"),
            (Method::POST, "/v1/{name=jobs/*}:delete"),
            (Method::POST, "/v1/{name=**}:delete"),
        ];
        for (method, text) in routes {
            assert!(table.insert(method, template(text), ()).is_ok(), "{text}");
        }
        assert_eq!(table.len(), 6);
    }

    #[test]
    fn replace_puts_the_new_route_in_and_gives_the_old_back() {
        let mut table = RouteTable::new();
        assert!(
            table
                .insert(Method::GET, template("/v1/{a}"), "old")
                .is_ok()
        );
        let old = table.replace(Method::GET, template("/v1/{b}"), "new");
        assert_eq!(
            old.map(|(t, v)| (t.to_string(), v)),
            Some(("/v1/{a}".to_owned(), "old"))
        );
        let found = table
            .find(&Method::GET, "/v1/x")
            .map(|(v, b)| (*v, dotted(&b)));
        assert_eq!(found, Some(("new", vec![("b".to_owned(), "x".to_owned())])));
        assert!(
            table
                .replace(Method::GET, template("/v2/{c}"), "more")
                .is_none()
        );
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn the_listing_is_by_method_then_most_specific_first() {
        let mut table = RouteTable::new();
        let routes = [
            (Method::POST, "/v1/{name=**}"),
            (Method::GET, "/v1/shelves/{shelf}"),
            (Method::POST, "/v1/shelves"),
            (Method::GET, "/v1/shelves/{shelf}/books/{book}"),
            (Method::GET, "/v1/shelves/special"),
            (Method::GET, "/v1/books/special"),
        ];
        for (method, text) in routes {
            assert!(table.insert(method, template(text), ()).is_ok());
        }
        let listing: Vec<String> = table
            .iter()
            .map(|(method, template, ())| format!("{method} {template}"))
            .collect();
        assert_eq!(
            listing,
            [
                "POST /v1/shelves",
                "POST /v1/{name=**}",
                "GET /v1/books/special",
                "GET /v1/shelves/special",
                "GET /v1/shelves/{shelf}/books/{book}",
                "GET /v1/shelves/{shelf}",
            ]
        );
        assert!(!table.is_empty());
        assert!(RouteTable::<()>::new().is_empty());
    }

    #[test]
    fn find_refuses_a_path_that_does_not_decode() {
        let table = table(&[("/v1/{id}", "one"), ("/v1/{name=**}", "rest")]);
        assert!(table.find(&Method::GET, "/v1/%FF").is_none());
        assert!(table.find(&Method::GET, "/v1/a%2").is_none());
        assert!(table.find(&Method::GET, "/v1/a/").is_none());
    }
}
