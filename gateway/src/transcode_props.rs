//! Property tests of `/api`'s JSON transcoding (`crate::transcode`), against
//! `testdata/transcoding.proto`: a message with a field of every kind, compiled at test
//! time with protox.
//!
//! 1. A message encoded by `to_json` decodes back by `to_message` to the same message.
//! 2. Any JSON is either decoded or refused as `InvalidArgument` (400) naming the field at
//!    fault; never a panic. Unknown fields are refused by name.
//! 3. Any query string is either read or refused, never a panic; a query of scalar
//!    values reads back exactly those values; an unknown key is refused by name.
//!
//! Each property runs [`CASES`] cases (about a second for the file); failures are not
//! persisted to files. The `#[ignore]`d properties pin down bugs found, each named in its
//! reason; `cargo test -- --ignored` shows them failing.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::failure::Failure;
use crate::transcode::{query_to_json, to_json, to_message};
use http::StatusCode;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::Union;
use proptest::test_runner::Config;
use prost_reflect::bytes::Bytes;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::Value as Json;
use tonic::Code;

const CASES: u32 = 256;

fn config() -> Config {
    Config {
        cases: CASES,
        // The lead commits the tree: no `proptest-regressions/` files written next to it.
        failure_persistence: None,
        ..Config::default()
    }
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let set =
        protox::compile(["transcoding.proto"], [testdata]).expect("transcoding.proto compiles");
    DescriptorPool::from_file_descriptor_set(set).expect("a valid descriptor set")
});

fn everything() -> MessageDescriptor {
    POOL.get_message_by_name("transcoding.test.v1.Everything")
        .expect("Everything is in transcoding.proto")
}

/// Every key `to_message` knows at any depth of `Everything`: JSON and proto names of
/// its fields, of `Inner`'s, and of the well-known types' (seconds, value...).
fn known_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for message in POOL.all_messages() {
        if message.is_map_entry() {
            continue;
        }
        for field in message.fields() {
            keys.push(field.json_name().to_owned());
            keys.push(field.name().to_owned());
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

// ---------------------------------------------------------------------------------------
// Random values by descriptor.
// ---------------------------------------------------------------------------------------

/// Timestamps protobuf's JSON mapping can write: 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
/// Durations it can write: ±10,000 years.
const DURATION_SECONDS: i64 = 315_576_000_000;

fn any_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => "[ -~]{0,12}",
        1 => select(vec!["", " ", "+", "&", "=", "%", "%41", "\0", "é", "😀", "a b&c=d+e%f"])
            .prop_map(str::to_owned),
    ]
}

fn any_f64() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        6 => prop::num::f64::ANY,
        1 => select(vec![
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            5e-324,
            0.1,
            9_007_199_254_740_993.0,
        ]),
    ]
}

fn any_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        6 => prop::num::f32::ANY,
        1 => select(vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-45,
            0.1,
        ]),
    ]
}

macro_rules! with_edges {
    ($ty:ty) => {
        prop_oneof![
            4 => any::<$ty>(),
            1 => select(vec![<$ty>::MIN, <$ty>::MAX, 0, 1, <$ty>::MAX - 1]),
        ]
    };
}

/// A value of `kind`, as a singular field (or one element of a list) holds it.
/// `finite`: no NaN or infinity in floats (see [`any_message`] for where that matters).
fn any_value(kind: &Kind, depth: u32, finite: bool) -> BoxedStrategy<Value> {
    match kind {
        Kind::Double if finite => any_f64()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Value::F64)
            .boxed(),
        Kind::Float if finite => any_f32()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Value::F32)
            .boxed(),
        Kind::Double => any_f64().prop_map(Value::F64).boxed(),
        Kind::Float => any_f32().prop_map(Value::F32).boxed(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            with_edges!(i32).prop_map(Value::I32).boxed()
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            with_edges!(i64).prop_map(Value::I64).boxed()
        }
        Kind::Uint32 | Kind::Fixed32 => with_edges!(u32).prop_map(Value::U32).boxed(),
        Kind::Uint64 | Kind::Fixed64 => with_edges!(u64).prop_map(Value::U64).boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::String => any_text().prop_map(Value::String).boxed(),
        Kind::Bytes => prop::collection::vec(any::<u8>(), 0..24)
            .prop_map(|b| Value::Bytes(Bytes::from(b)))
            .boxed(),
        Kind::Enum(enumeration) => {
            let known: Vec<i32> = enumeration.values().map(|v| v.number()).collect();
            // Numbers the enum does not name travel as JSON numbers.
            prop_oneof![4 => select(known), 1 => any::<i32>()]
                .prop_map(Value::EnumNumber)
                .boxed()
        }
        Kind::Message(message) => any_message(message.clone(), depth + 1)
            .prop_map(Value::Message)
            .boxed(),
    }
}

/// What a field holds: a list, a map or a single value.
fn any_field_value(field: &FieldDescriptor, depth: u32) -> BoxedStrategy<Value> {
    let kind = field.kind();
    if field.is_map() {
        let entry = kind
            .as_message()
            .expect("a map field's kind is its entry")
            .clone();
        let key = any_value(&entry.map_entry_key_field().kind(), depth, false);
        let value = any_value(&entry.map_entry_value_field().kind(), depth, false);
        prop::collection::vec((key, value), 0..4)
            .prop_map(|entries| {
                Value::Map(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.into_map_key().expect("a map key kind"), v))
                        .collect::<HashMap<_, _>>(),
                )
            })
            .boxed()
    } else if field.is_list() {
        prop::collection::vec(any_value(&kind, depth, false), 0..4)
            .prop_map(Value::List)
            .boxed()
    } else {
        any_value(&kind, depth, false)
    }
}

fn with_fields(descriptor: &MessageDescriptor, fields: &[(&str, Value)]) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    for (name, value) in fields {
        message.set_field_by_name(name, value.clone());
    }
    message
}

/// A random message of `descriptor`: each field set (perhaps to its default) or not, at
/// most one member of each oneof, well-known types within the range their JSON can say.
fn any_message(descriptor: MessageDescriptor, depth: u32) -> BoxedStrategy<DynamicMessage> {
    assert!(depth < 8, "transcoding.proto has no recursive message");
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => (TIMESTAMP_SECONDS, 0..1_000_000_000i32)
            .prop_map(move |(s, n)| {
                with_fields(
                    &descriptor,
                    &[("seconds", Value::I64(s)), ("nanos", Value::I32(n))],
                )
            })
            .boxed(),
        "google.protobuf.Duration" => (-DURATION_SECONDS..=DURATION_SECONDS, 0..1_000_000_000i32)
            .prop_map(move |(s, n)| {
                // The nanos take the sign of the seconds.
                let n = if s < 0 { -n } else { n };
                with_fields(
                    &descriptor,
                    &[("seconds", Value::I64(s)), ("nanos", Value::I32(n))],
                )
            })
            .boxed(),
        // NaN, ±Infinity and -0.0 are left out of the float wrappers here: prost-reflect
        // 0.16 writes a wrapper through its wire form, where -0.0 equals the default and
        // is dropped, and as a JSON number, which serde_json makes `null` when it is not
        // finite, and `null` reads back as an absent field. Pinned down by
        // `a_non_finite_or_negative_zero_double_wrapper_round_trips` (ignored: upstream).
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            let value = descriptor
                .get_field_by_name("value")
                .expect("a wrapper's value");
            any_value(&value.kind(), depth, true)
                .prop_filter("not -0.0", |v| {
                    !matches!(v, Value::F64(x) if x.to_bits() == (-0.0f64).to_bits())
                        && !matches!(v, Value::F32(x) if x.to_bits() == (-0.0f32).to_bits())
                })
                .prop_map(move |v| with_fields(&descriptor, &[("value", v)]))
                .boxed()
        }
        _ => {
            let mut parts: Vec<BoxedStrategy<Option<(FieldDescriptor, Value)>>> = Vec::new();
            for field in descriptor
                .fields()
                .filter(|f| f.containing_oneof().is_none())
            {
                parts.push(
                    prop::option::weighted(0.8, any_field_value(&field, depth))
                        .prop_map(move |v| v.map(|v| (field.clone(), v)))
                        .boxed(),
                );
            }
            for oneof in descriptor.oneofs() {
                let mut members: Vec<BoxedStrategy<Option<(FieldDescriptor, Value)>>> =
                    vec![Just(None).boxed()];
                for field in oneof.fields() {
                    members.push(
                        any_field_value(&field, depth)
                            .prop_map(move |v| Some((field.clone(), v)))
                            .boxed(),
                    );
                }
                parts.push(Union::new(members).boxed());
            }
            parts
                .prop_map(move |fields| {
                    let mut message = DynamicMessage::new(descriptor.clone());
                    for (field, value) in fields.into_iter().flatten() {
                        message.set_field(&field, value);
                    }
                    message
                })
                .boxed()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Equality as protobuf means it.
// ---------------------------------------------------------------------------------------

/// Whether two messages hold the same: for every field, the same presence (where the field
/// has presence) and the same value. Unlike `==`, a field set to its default equals an
/// unset one, map order is ignored, NaN equals NaN and 0.0 differs from -0.0.
fn same_message(a: &DynamicMessage, b: &DynamicMessage, path: &str) -> Result<(), String> {
    if a.descriptor() != b.descriptor() {
        return Err(format!(
            "{path}: {} vs {}",
            a.descriptor().full_name(),
            b.descriptor().full_name()
        ));
    }
    for field in a.descriptor().fields() {
        let path = format!("{path}.{}", field.name());
        if field.supports_presence() && a.has_field(&field) != b.has_field(&field) {
            return Err(format!(
                "{path}: present {} vs {}",
                a.has_field(&field),
                b.has_field(&field)
            ));
        }
        same_value(&a.get_field(&field), &b.get_field(&field), &path)?;
    }
    Ok(())
}

fn same_value(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    let same = match (a, b) {
        (Value::F64(x), Value::F64(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
        (Value::F32(x), Value::F32(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
        (Value::Message(x), Value::Message(y)) => return same_message(x, y, path),
        (Value::List(x), Value::List(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: {} items vs {}", x.len(), y.len()));
            }
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                same_value(x, y, &format!("{path}[{i}]"))?;
            }
            true
        }
        (Value::Map(x), Value::Map(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: {} entries vs {}", x.len(), y.len()));
            }
            for (key, x) in x {
                let y = y
                    .get(key)
                    .ok_or_else(|| format!("{path}: no entry {key:?}"))?;
                same_value(x, y, &format!("{path}[{key:?}]"))?;
            }
            true
        }
        _ => a == b,
    };
    if same {
        Ok(())
    } else {
        Err(format!("{path}: {a:?} vs {b:?}"))
    }
}

/// A message shown by its set fields only: proptest prints the failing input with
/// `Debug`, and `DynamicMessage`'s repeats every descriptor.
#[derive(Clone)]
struct Shown(DynamicMessage);

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&show_message(&self.0))
    }
}

fn show_message(message: &DynamicMessage) -> String {
    let fields: Vec<String> = message
        .descriptor()
        .fields()
        .filter_map(|field| {
            let value = message.get_field(&field);
            let shown = show_value(&value);
            let default = show_value(&field.default_value());
            (message.has_field(&field) || shown != default)
                .then(|| format!("{}: {shown}", field.name()))
        })
        .collect();
    format!(
        "{} {{ {} }}",
        message.descriptor().name(),
        fields.join(", ")
    )
}

fn show_value(value: &Value) -> String {
    match value {
        Value::Message(message) => show_message(message),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(show_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(entries) => {
            let mut entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{k:?}: {}", show_value(v)))
                .collect();
            entries.sort();
            format!("{{{}}}", entries.join(", "))
        }
        other => format!("{other:?}"),
    }
}

fn any_everything() -> impl Strategy<Value = Shown> {
    any_message(everything(), 0).prop_map(Shown)
}

/// `message` → `to_json` → (JSON text written and read by serde_json, as a client sending
/// the reply back and `read_input` would) → `to_message` is the same message.
fn round_trip(message: &DynamicMessage, through_text: bool) -> Result<(), TestCaseError> {
    let json = to_json(message).map_err(|f| TestCaseError::fail(f.message))?;
    let json = if through_text {
        let text = serde_json::to_string(&json).expect("JSON writes");
        serde_json::from_str(&text).expect("JSON reads back")
    } else {
        json
    };
    let back = to_message(json.clone(), &message.descriptor())
        .map_err(|f| TestCaseError::fail(format!("{}: {json}", f.message)))?;
    same_message(message, &back, message.descriptor().name())
        .map_err(|difference| TestCaseError::fail(format!("{difference}\njson: {json}")))
}

proptest! {
    #![proptest_config(config())]

    /// A message of every field kind (scalars, enum, nested, lists, maps, oneof, proto3
    /// optional, Timestamp, Duration, wrappers; NaN, ±Infinity and -0.0 included) comes
    /// back from `to_json` then `to_message` as the same message.
    #[test]
    fn every_field_kind_round_trips_through_json(message in any_everything()) {
        round_trip(&message.0, false)?;
    }

    /// The same through JSON text, as a client sends it.
    #[test]
    fn every_field_kind_round_trips_through_json_text(message in any_everything()) {
        round_trip(&message.0, true)?;
    }

    /// A DoubleValue wrapper holding NaN, ±Infinity or -0.0 comes back as it went.
    #[test]
    #[ignore = "prost-reflect 0.16 bug, not transcode.rs: it writes a google.protobuf.DoubleValue \
                through its wire form (-0.0 dropped as the default, so 0.0) and as a JSON number \
                (NaN/Infinity become null, read back as absent)"]
    fn a_non_finite_or_negative_zero_double_wrapper_round_trips(
        value in select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0]),
    ) {
        let descriptor = everything();
        let wrapper = descriptor
            .get_field_by_name("wrapped_double")
            .and_then(|f| f.kind().as_message().cloned())
            .expect("wrapped_double is a DoubleValue");
        let wrapped = with_fields(&wrapper, &[("value", Value::F64(value))]);
        let message = with_fields(&descriptor, &[("wrapped_double", Value::Message(wrapped))]);
        round_trip(&message, false)?;
    }
}

// ---------------------------------------------------------------------------------------
// 2. Random JSON.
// ---------------------------------------------------------------------------------------

fn any_key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![3 => select(known_keys()), 1 => any_text()]
}

/// Strings a field of some kind might half accept.
const TRICKY_STRINGS: &[&str] = &[
    "NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e400",
    "-1e400",
    "1e39",
    "99999999999999999999999",
    "18446744073709551616",
    "-9223372036854775809",
    "2147483648",
    "4294967296",
    "-1",
    "0x10",
    " 1",
    "1.5",
    "1.0",
    "",
    "true",
    "COLOUR_RED",
    "COLOUR_PURPLE",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "10000-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "1970-01-01T00:00:00+25:00",
    "1.5s",
    "-315576000001s",
    "315576000000.999999999s",
    "s",
    "AAAA",
    "A===",
    "-_-_",
    "====",
    "\u{0}",
];

fn any_json_leaf() -> impl Strategy<Value = Json> + Clone {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any_f64().prop_map(Json::from), // non-finite becomes null
        // Huge or precise numbers, as serde_json reads them from a body.
        "-?[0-9]{1,40}(\\.[0-9]{1,20})?(e-?[0-9]{1,3})?".prop_filter_map(
            "out of f64's range",
            |text| serde_json::from_str::<Json>(&text).ok()
        ),
        select(TRICKY_STRINGS).prop_map(Json::from),
        "-?[0-9]{1,40}".prop_map(Json::from),
        any_text().prop_map(Json::from),
    ]
}

fn any_json() -> impl Strategy<Value = Json> + Clone {
    any_json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((any_key(), inner), 0..6)
                .prop_map(|fields| Json::Object(fields.into_iter().collect())),
        ]
    })
}

/// A value wrapped in up to 64 arrays or one-key objects.
fn deep_json() -> impl Strategy<Value = Json> + Clone {
    (
        any_json_leaf(),
        prop::collection::vec((any::<bool>(), any_key()), 0..64),
    )
        .prop_map(|(leaf, wraps)| {
            wraps.into_iter().fold(leaf, |inner, (array, key)| {
                if array {
                    Json::Array(vec![inner])
                } else {
                    Json::Object([(key, inner)].into_iter().collect())
                }
            })
        })
}

/// A request body: mostly an object of known keys with any values.
fn any_body() -> impl Strategy<Value = Json> {
    prop_oneof![
        5 => any_object(),
        // Sometimes a oneof set twice among other fields.
        1 => (one_oneof_twice(), prop::collection::vec((any_key(), any_json()), 0..4))
            .prop_map(|(mut fields, more)| {
                fields.extend(more);
                Json::Object(fields)
            }),
        1 => any_json(),
        1 => deep_json(),
    ]
}

/// An object of (mostly) known keys with any values.
fn any_object() -> impl Strategy<Value = Json> {
    let value = prop_oneof![3 => any_json(), 1 => deep_json()];
    prop::collection::vec((any_key(), value), 1..8)
        .prop_map(|fields| Json::Object(fields.into_iter().collect()))
}

/// Whether `body` sets (non-null) two keys of one oneof of `Everything`, proto3 optional
/// fields' synthetic oneofs included: two members, or one member under both its names.
fn sets_a_oneof_twice(body: &serde_json::Map<String, Json>) -> bool {
    let descriptor = everything();
    descriptor.oneofs().any(|oneof| {
        let names = oneof
            .fields()
            .flat_map(|f| [f.json_name().to_owned(), f.name().to_owned()]);
        let mut names: Vec<String> = names.collect();
        names.dedup();
        names
            .iter()
            .filter(|name| body.get(*name).is_some_and(|v| !v.is_null()))
            .count()
            > 1
    })
}

/// Two keys of one oneof of `Everything` (two members, or a member under both its names),
/// each with a value it takes alone.
fn one_oneof_twice() -> impl Strategy<Value = serde_json::Map<String, Json>> {
    let descriptor = everything();
    let mut pairs = Vec::new();
    for oneof in descriptor.oneofs() {
        let named: Vec<(String, FieldDescriptor)> = oneof
            .fields()
            .flat_map(|f| {
                [
                    (f.json_name().to_owned(), f.clone()),
                    (f.name().to_owned(), f),
                ]
            })
            .collect();
        for (i, first) in named.iter().enumerate() {
            for second in &named[i + 1..] {
                if first.0 != second.0 {
                    pairs.push((first.clone(), second.clone()));
                }
            }
        }
    }
    select(pairs).prop_flat_map(|((a, field_a), (b, field_b))| {
        (any_field_value(&field_a, 0), any_field_value(&field_b, 0)).prop_map(move |(x, y)| {
            let alone = |field: &FieldDescriptor, value: Value| {
                let mut message = DynamicMessage::new(everything());
                message.set_field(field, value);
                json_object(&message).expect("a message's JSON")[field.json_name()].clone()
            };
            [
                (a.clone(), alone(&field_a, x)),
                (b.clone(), alone(&field_b, y)),
            ]
            .into_iter()
            .collect()
        })
    })
}

/// Whether `failure` names one of the object's keys the way `to_message` quotes them.
fn names_a_key(failure: &Failure, body: &serde_json::Map<String, Json>) -> bool {
    body.keys()
        .any(|key| failure.message.contains(&format!("field {key:?}")))
}

fn is_bad_request(failure: &Failure) -> bool {
    failure.code == Code::InvalidArgument && failure.status == StatusCode::BAD_REQUEST
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the JSON (wrong types, unknown names, deep nesting, huge numbers in both
    /// forms), `to_message` returns: a message, or InvalidArgument (400).
    #[test]
    fn any_json_is_decoded_or_refused_as_invalid_argument(body in any_body()) {
        if let Some(failure) = to_message(body, &everything()).err() {
            prop_assert!(is_bad_request(&failure), "{failure:?}");
        }
    }

    /// A refused JSON object names one of its keys (unless it sets a oneof twice: below).
    #[test]
    fn a_refused_object_names_one_of_its_keys(body in any_object()) {
        let Json::Object(fields) = &body else { unreachable!("an object") };
        prop_assume!(!sets_a_oneof_twice(fields));
        if let Some(failure) = to_message(body.clone(), &everything()).err() {
            prop_assert!(names_a_key(&failure, fields), "{:?} for {body}", failure.message);
        }
    }

    /// An object whose only fault is setting one oneof twice (two members, or a member
    /// under both its names: `maybeInt32` and `maybe_int32`) is refused naming one of them.
    #[test]
    fn an_object_setting_a_oneof_twice_is_refused_naming_a_key(fields in one_oneof_twice()) {
        let body = Json::Object(fields.clone());
        let failure = to_message(body.clone(), &everything()).err();
        prop_assert!(failure.is_some(), "a oneof set twice accepted: {body}");
        let failure = failure.expect("refused");
        prop_assert!(is_bad_request(&failure), "{failure:?}");
        prop_assert!(names_a_key(&failure, &fields), "{:?} for {body}", failure.message);
    }

    /// In a valid reply's JSON with one field's value replaced by anything, a refusal
    /// names exactly that field.
    #[test]
    fn a_refusal_names_the_one_field_made_wrong(
        message in any_everything(),
        which in any::<Index>(),
        replacement in prop_oneof![3 => any_json(), 1 => deep_json()],
    ) {
        let mut fields = json_object(&message.0)?;
        let key = fields.keys().nth(which.index(fields.len())).expect("fields").clone();
        fields.insert(key.clone(), replacement);
        let body = Json::Object(fields);
        if let Some(failure) = to_message(body.clone(), &everything()).err() {
            prop_assert!(is_bad_request(&failure), "{failure:?}");
            prop_assert!(
                failure.message.starts_with(&format!("field {key:?}")),
                "{key:?} made wrong, message {:?}, body {body}",
                failure.message
            );
        }
    }

    /// A valid reply's JSON with a key `Everything` does not know added, whatever its
    /// value, is refused naming that key (unknown fields are denied).
    #[test]
    fn an_unknown_field_is_refused_by_name(
        message in any_everything(),
        key in unknown_key(),
        value in any_json(),
    ) {
        let mut fields = json_object(&message.0)?;
        fields.insert(key.clone(), value);
        let body = Json::Object(fields);
        let failure = to_message(body.clone(), &everything()).err();
        prop_assert!(failure.is_some(), "{key:?} accepted in {body}");
        let failure = failure.expect("refused");
        prop_assert!(is_bad_request(&failure), "{failure:?}");
        prop_assert!(
            failure.message.starts_with(&format!("field {key:?}")),
            "message {:?}, body {body}",
            failure.message
        );
    }
}

fn json_object(message: &DynamicMessage) -> Result<serde_json::Map<String, Json>, TestCaseError> {
    match to_json(message).map_err(|f| TestCaseError::fail(f.message))? {
        Json::Object(fields) => Ok(fields),
        other => Err(TestCaseError::fail(format!(
            "a message's JSON is an object: {other}"
        ))),
    }
}

/// A name that is neither the JSON nor the proto name of a field of `Everything`.
fn unknown_key() -> impl Strategy<Value = String> {
    let descriptor = everything();
    prop_oneof![any_text(), select(known_keys())].prop_filter("a field of Everything", move |key| {
        descriptor.get_field_by_json_name(key).is_none()
            && descriptor.get_field_by_name(key).is_none()
    })
}

// ---------------------------------------------------------------------------------------
// 3. Query strings.
// ---------------------------------------------------------------------------------------

/// How a query writer escapes.
#[derive(Clone, Copy, Debug)]
enum Escape {
    /// Only what must be: `&`, `+`, `%`, `#`; space as `+`; UTF-8 and `=` raw.
    Minimal,
    /// Everything but `A-Za-z0-9-._~`, upper-case hex, space as `%20`.
    Reserved,
    /// Every byte, lower-case hex.
    Every,
}

fn escape(text: &str, how: Escape) -> String {
    match how {
        Escape::Minimal => text
            .chars()
            .map(|c| match c {
                ' ' => "+".to_owned(),
                '&' | '+' | '%' | '#' => format!("%{:02X}", u32::from(c)),
                c => c.to_string(),
            })
            .collect(),
        Escape::Reserved => text
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
        Escape::Every => text.bytes().map(|b| format!("%{b:02x}")).collect(),
    }
}

/// A key escaped: as [`escape`], and `=` too, which a value may hold raw but a key not.
fn escape_key(text: &str, how: Escape) -> String {
    escape(text, how).replace('=', "%3D")
}

fn any_escape() -> impl Strategy<Value = Escape> + Clone {
    select(vec![Escape::Minimal, Escape::Reserved, Escape::Every])
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A scalar value as a query parameter writes it.
fn query_text(value: &Value, field: &FieldDescriptor) -> String {
    fn float(v: f64) -> String {
        if v.is_nan() {
            "NaN".to_owned()
        } else if v == f64::INFINITY {
            "Infinity".to_owned()
        } else if v == f64::NEG_INFINITY {
            "-Infinity".to_owned()
        } else {
            v.to_string()
        }
    }
    match value {
        Value::Bool(v) => v.to_string(),
        Value::I32(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::F32(v) if v.is_finite() => v.to_string(),
        Value::F32(v) => float(f64::from(*v)),
        Value::F64(v) => float(*v),
        Value::String(v) => v.clone(),
        Value::Bytes(v) => base64(v),
        Value::EnumNumber(n) => field
            .kind()
            .as_enum()
            .and_then(|e| e.get_value(*n))
            .expect("query enums are named values")
            .name()
            .to_owned(),
        Value::Message(_) | Value::List(_) | Value::Map(_) => {
            unreachable!("not a scalar")
        }
    }
}

fn is_scalar(field: &FieldDescriptor) -> bool {
    !field.is_list() && !field.is_map() && !matches!(field.kind(), Kind::Message(_))
}

/// A scalar value for the query: enums by name only (`query_to_json` passes every value
/// on as a JSON string, and the JSON mapping reads a string as an enum's name), the rest
/// as for JSON.
fn any_scalar(field: &FieldDescriptor) -> BoxedStrategy<Value> {
    match field.kind() {
        Kind::Enum(enumeration) => {
            select(enumeration.values().map(|v| v.number()).collect::<Vec<_>>())
                .prop_map(Value::EnumNumber)
                .boxed()
        }
        kind => any_value(&kind, 0, false),
    }
}

/// A scalar field, its value, whether it is sent under its JSON name, how it is escaped.
type Assigned = (FieldDescriptor, Value, bool, Escape);

/// `name=value` for each assigned field.
fn query_pairs(assignment: &[Assigned]) -> Vec<String> {
    assignment
        .iter()
        .map(|(field, value, json_name, how)| {
            let name = if *json_name {
                field.json_name()
            } else {
                field.name()
            };
            format!(
                "{}={}",
                escape_key(name, *how),
                escape(&query_text(value, field), *how)
            )
        })
        .collect()
}

/// Some of `Everything`'s scalar fields (at most one per oneof) with random values, each
/// with the name it is sent under and how it is escaped, in random order.
fn any_scalar_assignment() -> impl Strategy<Value = Vec<Assigned>> {
    let descriptor = everything();
    let mut parts: Vec<BoxedStrategy<Option<(FieldDescriptor, Value)>>> = Vec::new();
    for field in descriptor
        .fields()
        .filter(|f| is_scalar(f) && f.containing_oneof().is_none())
    {
        parts.push(
            prop::option::of(any_scalar(&field))
                .prop_map(move |v| v.map(|v| (field.clone(), v)))
                .boxed(),
        );
    }
    for oneof in descriptor.oneofs() {
        let mut members = vec![Just(None).boxed()];
        for field in oneof.fields().filter(is_scalar) {
            members.push(
                any_scalar(&field)
                    .prop_map(move |v| Some((field.clone(), v)))
                    .boxed(),
            );
        }
        parts.push(Union::new(members).boxed());
    }
    (
        parts,
        prop::collection::vec((any::<bool>(), any_escape()), 64),
    )
        .prop_map(|(fields, styles)| {
            fields
                .into_iter()
                .flatten()
                .zip(styles)
                .map(|((field, value), (json_name, how))| (field, value, json_name, how))
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

/// Query pieces: names known and not, separators in odd places, escapes whole, broken
/// and of bytes that are not UTF-8.
fn any_query() -> impl Strategy<Value = String> {
    let keys = known_keys();
    let piece = prop_oneof![
        2 => select(keys.clone()),
        1 => select(vec![
            "&", "=", "%", "+", "&&", "==", "&=", "=&", "%2", "%zz", "%g0", "%41", "%26", "%3D",
            "%3d", "%25", "%2B", "%ff", "%FF%FE", "%C3%A9", "%E2%82", "%00", "%%", "%%%41",
            "true", "false", "NaN", "-Infinity", "1e400", "99999999999999999999999", "-0",
            "COLOUR_RED", "1", "AAAA", "é", "😀", "#", "?",
        ])
        .prop_map(str::to_owned),
        1 => any_text(),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(|bytes| {
            bytes.iter().map(|b| format!("%{b:02X}")).collect::<String>()
        }),
    ];
    // Mostly the names of scalar fields, so that values reach `to_message`.
    let scalar_names: Vec<String> = everything()
        .fields()
        .filter(is_scalar)
        .flat_map(|f| [f.json_name().to_owned(), f.name().to_owned()])
        .collect();
    let key = prop_oneof![8 => select(scalar_names), 1 => select(keys), 1 => any_text()];
    let value = prop_oneof![
        1 => select(TRICKY_STRINGS).prop_map(str::to_owned),
        1 => any_text(),
        1 => "-?[0-9]{1,30}(\\.[0-9]{0,10})?(e-?[0-9]{1,3})?",
    ];
    let pair = (key, prop::option::of(value), any_escape(), any::<u8>()).prop_map(
        |(key, value, how, repeat)| {
            let one = match &value {
                Some(value) => format!("{}={}", escape_key(&key, how), escape(value, how)),
                None => escape_key(&key, how),
            };
            // Sometimes the same key again.
            if repeat < 32 {
                format!("{one}&{one}")
            } else {
                one
            }
        },
    );
    prop_oneof![
        2 => prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat()),
        3 => prop::collection::vec(pair, 0..6).prop_map(|pairs| pairs.join("&")),
        1 => prop::collection::vec(any::<char>(), 0..32).prop_map(String::from_iter),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any query string is read into a JSON object or refused as InvalidArgument, and what
    /// is read is decoded by `to_message` or refused the same way; never a panic.
    #[test]
    fn any_query_is_read_or_refused_as_invalid_argument(query in any_query()) {
        match query_to_json(&query, &everything()) {
            Ok(json) => {
                prop_assert!(json.is_object(), "{json}");
                if let Some(failure) = to_message(json, &everything()).err() {
                    prop_assert!(is_bad_request(&failure), "{failure:?} for {query:?}");
                }
            }
            Err(failure) => prop_assert!(is_bad_request(&failure), "{failure:?} for {query:?}"),
        }
    }

    /// A query of random values for random scalar fields (by JSON or proto name, escaped
    /// minimally or wholly, in any order) reads back as a message with exactly those values.
    #[test]
    fn a_query_of_scalar_values_reads_back_exactly(assignment in any_scalar_assignment()) {
        let descriptor = everything();
        let mut expected = DynamicMessage::new(descriptor.clone());
        for (field, value, _, _) in &assignment {
            expected.set_field(field, value.clone());
        }
        let query = query_pairs(&assignment).join("&");
        let json = query_to_json(&query, &descriptor)
            .map_err(|f| TestCaseError::fail(format!("{} for {query:?}", f.message)))?;
        let message = to_message(json.clone(), &descriptor)
            .map_err(|f| TestCaseError::fail(format!("{} for {query:?} as {json}", f.message)))?;
        if let Err(difference) = same_message(&expected, &message, "Everything") {
            prop_assert!(false, "{difference}\nquery: {query:?}\njson: {json}");
        }
    }

    /// The same query with a key `Everything` does not know put anywhere in it is refused
    /// naming that key.
    #[test]
    fn an_unknown_query_key_is_refused_by_name(
        assignment in any_scalar_assignment(),
        key in unknown_key(),
        value in any_text(),
        how in any_escape(),
        at in any::<Index>(),
    ) {
        let mut pairs = query_pairs(&assignment);
        let unknown = format!("{}={}", escape_key(&key, how), escape(&value, how));
        pairs.insert(at.index(pairs.len() + 1), unknown);
        let query = pairs.join("&");
        let failure = query_to_json(&query, &everything()).err();
        prop_assert!(failure.is_some(), "{key:?} accepted in {query:?}");
        let failure = failure.expect("refused");
        prop_assert!(is_bad_request(&failure), "{failure:?}");
        prop_assert!(
            failure.message.starts_with(&format!("field {key:?}")),
            "message {:?}, query {query:?}",
            failure.message
        );
    }
}

// ---------------------------------------------------------------------------------------
// The test helpers themselves.
// ---------------------------------------------------------------------------------------

#[test]
fn the_helpers_escape_and_encode_as_the_standards_say() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    assert_eq!(escape("a b&c=d+é", Escape::Minimal), "a+b%26c=d%2Bé");
    assert_eq!(
        escape("a b&c=d+é", Escape::Reserved),
        "a%20b%26c%3Dd%2B%C3%A9"
    );
    assert_eq!(escape("a=", Escape::Every), "%61%3d");
    assert_eq!(escape_key("a b=", Escape::Minimal), "a+b%3D");
}
