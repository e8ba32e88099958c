//! The configuration reference (`docs/src/configuration.md`) against the configuration
//! types of the binaries.
//!
//! The keys come from the types' `Deserialize`, walked by a deserializer that records
//! every field it is asked for ([`keys_of`]): optional keys, keys inside optional
//! tables and the fields of map entries (`routes.<service>.timeout`) are found as well as
//! the plain ones, which serializing the defaults would miss. Map keys are written `*`
//! here and `<name>` in the reference. The defaults come from the types themselves,
//! serialized as `--print-config` prints them ([`defaults_of`]); the flags from the
//! shared command line, `node::CommonArgs`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use figment::Provider;
use serde::Serialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

const REFERENCE: &str = include_str!("../../src/configuration.md");

/// The dev stack's `[stack]` is a private type of its binary: its keys are checked
/// against the stack's commented configuration instead.
const DEV_STACK_TOML: &str = include_str!("../../../config/dev-stack.toml");

/// Flags a binary adds to the shared ones itself: (key, flag).
const BINARY_FLAGS: &[(&str, &str)] = &[("http_port", "--http-port")];

/// What the walk learns of one key: whether it may be absent (an `Option`, or inside one).
type Keys = BTreeMap<String, bool>;

/// One line of the reference.
#[derive(Debug)]
struct Line {
    /// The key, map keys as `*`.
    key: String,
    default: String,
    variable: String,
    flag: String,
}

fn reference() -> Vec<Line> {
    REFERENCE
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = |cell: &str| cell.trim_matches('`').to_owned();
            Line {
                key: as_pattern(&code(cells[1])),
                default: cells[2].to_owned(),
                variable: cells[3].to_owned(),
                flag: cells[4].to_owned(),
            }
        })
        .collect()
}

/// `routes.<service>.timeout` → `routes.*.timeout`.
fn as_pattern(key: &str) -> String {
    key.split('.')
        .map(|part| {
            if part.starts_with('<') && part.ends_with('>') {
                "*"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Every key of each binary's configuration type.
fn every_key() -> Keys {
    let mut keys = keys_of::<config::NodeConfig>();
    keys.extend(keys_of::<gateway::GatewaySettings>());
    keys.extend(keys_of::<services::user::UserSettings>());
    keys
}

/// The keys of `[stack]` in the dev stack's configuration file.
fn dev_stack_keys() -> BTreeSet<String> {
    let file: toml::Table = toml::from_str(DEV_STACK_TOML).expect("config/dev-stack.toml is TOML");
    let stack = file["stack"]
        .as_table()
        .expect("config/dev-stack.toml has [stack]");
    stack.keys().map(|key| format!("stack.{key}")).collect()
}

#[test]
fn every_configuration_key_has_a_line_in_the_reference_and_every_line_a_key() {
    let keys = every_key();
    let stack = dev_stack_keys();
    let lines: BTreeSet<String> = reference().into_iter().map(|line| line.key).collect();
    let known: BTreeSet<String> = keys.keys().cloned().chain(stack).collect();
    let missing: Vec<&String> = known.difference(&lines).collect();
    let stale: Vec<&String> = lines.difference(&known).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/src/configuration.md is out of date.\n  keys with no line: {missing:?}\n  lines whose key no longer exists: {stale:?}\n(map keys are `*` here, `<name>` in the reference)"
    );
}

#[test]
fn every_line_gives_the_default_the_types_have() {
    let keys = every_key();
    let mut defaults = defaults_of::<config::NodeConfig>(&keys);
    defaults.extend(defaults_of::<gateway::GatewaySettings>(&keys));
    defaults.extend(defaults_of::<services::user::UserSettings>(&keys));
    let mut wrong = Vec::new();
    for line in reference() {
        if line.key.starts_with("stack.") {
            continue; // the dev stack's own type is private to its binary
        }
        let Some(&optional) = keys.get(&line.key) else {
            continue; // the test above names it
        };
        match defaults.get(&line.key) {
            None if line.default == "unset" => {}
            None => wrong.push(format!(
                "{}: the reference says {}, the types leave it unset (optional: {optional})",
                line.key, line.default
            )),
            Some(value) => {
                let written = line.default.trim_matches('`');
                if !same_value(written, value) {
                    wrong.push(format!(
                        "{}: the reference says {written}, the default is {value}",
                        line.key
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong defaults in docs/src/configuration.md:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn every_line_names_the_variable_and_flag_that_set_its_key() {
    let flags = shared_flags();
    let mut wrong = Vec::new();
    for line in reference() {
        let variable = line.variable.trim_matches('`');
        let expected = format!("MS_{}", line.key.replace('.', "__").to_uppercase());
        let method_level = line.key.contains(".methods.*.");
        if method_level {
            // Variable names are read in lower case; method names are not.
            if !variable.starts_with("none") {
                wrong.push(format!(
                    "{}: a method's key cannot be set by a variable",
                    line.key
                ));
            }
        } else if variable.replace("<SERVICE>", "*").replace("<NAME>", "*") != expected {
            wrong.push(format!(
                "{}: variable {variable}, expected {expected}",
                line.key
            ));
        }
        let flag = line.flag.split('`').nth(1).unwrap_or("");
        let expected = flags
            .get(&line.key)
            .map(String::as_str)
            .or_else(|| {
                BINARY_FLAGS
                    .iter()
                    .find(|(key, _)| *key == line.key)
                    .map(|(_, flag)| *flag)
            })
            .unwrap_or("");
        if flag != expected {
            wrong.push(format!(
                "{}: flag {flag:?}, expected {expected:?}",
                line.key
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong lines in docs/src/configuration.md:\n  {}",
        wrong.join("\n  ")
    );
}

/// The walk itself, on a type with every shape the configuration uses: a key added to a
/// configuration type in any of these shapes is found, and so needs its line.
#[test]
fn the_walk_finds_optional_keys_map_entries_and_keys_inside_optional_tables() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        First,
        Second,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        per_second: f64,
        #[serde(with = "humantime_serde")]
        window: Duration,
    }
    #[derive(serde::Deserialize, Default)]
    #[allow(dead_code)]
    #[serde(default)]
    struct Entry {
        #[serde(with = "humantime_serde::option")]
        timeout: Option<Duration>,
        limit: Option<Limit>,
        names: Vec<String>,
    }
    #[derive(serde::Deserialize, Default)]
    #[allow(dead_code)]
    #[serde(default)]
    struct Section {
        port: u16,
        secret: Option<String>,
        kind: Option<Kind>,
        entries: BTreeMap<String, Entry>,
        labels: BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize, Default)]
    #[allow(dead_code)]
    #[serde(default)]
    struct Probe {
        section: Section,
    }
    let keys = keys_of::<Probe>();
    let expected: Keys = [
        ("section.port", false),
        ("section.secret", true),
        ("section.kind", true),
        ("section.entries.*.timeout", true),
        ("section.entries.*.limit.per_second", true),
        ("section.entries.*.limit.window", true),
        ("section.entries.*.names", false),
        ("section.labels.*", false),
    ]
    .into_iter()
    .map(|(key, optional)| (key.to_owned(), optional))
    .collect();
    assert_eq!(keys, expected);
}

/// The flags every node takes, by the dotted key each sets.
fn shared_flags() -> BTreeMap<String, String> {
    let args = node::CommonArgs {
        rpc_port: Some(1),
        etcd_addr: Some("127.0.0.1:2379".into()),
        registry: Some("memory".into()),
        advertise_host: Some("127.0.0.1".into()),
        admin_listen: Some(String::new()),
        ..node::CommonArgs::default()
    };
    let flags = args.flags();
    let data = flags.data().expect("the flags as figment data");
    let metadata = flags.metadata();
    let mut keys = Vec::new();
    for dict in data.values() {
        leaf_paths(dict, &mut Vec::new(), &mut keys);
    }
    keys.into_iter()
        .map(|path| {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let flag = metadata.interpolate(&figment::Profile::Default, &parts);
            (path.join("."), flag)
        })
        .collect()
}

fn leaf_paths(dict: &figment::value::Dict, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (key, value) in dict {
        path.push(key.clone());
        match value.as_dict() {
            Some(inner) => leaf_paths(inner, path, out),
            None => out.push(path.clone()),
        }
        path.pop();
    }
}

/// Whether the reference's default (TOML text) is `value`; durations compare as
/// durations (`"60s"` is `"1m"`).
fn same_value(written: &str, value: &toml::Value) -> bool {
    let Ok(parsed) = toml::from_str::<toml::Table>(&format!("v = {written}")) else {
        return false;
    };
    let parsed = &parsed["v"];
    match (parsed, value) {
        (toml::Value::String(a), toml::Value::String(b)) => {
            a == b || matches!((duration(a), duration(b)), (Some(x), Some(y)) if x == y)
        }
        (a, b) => a == b,
    }
}

fn duration(text: &str) -> Option<Duration> {
    humantime_serde::re::humantime::parse_duration(text).ok()
}

/// The defaults of `T`'s keys as `--print-config` writes them, an entry of every map of
/// tables (keyed `*`) included so that the defaults of map entries show.
fn defaults_of<T: DeserializeOwned + Serialize>(keys: &Keys) -> BTreeMap<String, toml::Value> {
    let mut sample = toml::Table::new();
    for key in keys.keys() {
        let parts: Vec<&str> = key.split('.').collect();
        for (at, part) in parts.iter().enumerate() {
            // A map of tables gets an entry; a map of values (`labels.*`) has no default.
            if *part == "*" && at + 1 < parts.len() {
                insert_table(&mut sample, &parts[..=at]);
            }
        }
    }
    // Only the maps that are `T`'s: the sample of another type's would be refused.
    let own: BTreeSet<String> = keys_of::<T>().into_keys().collect();
    sample.retain(|section, _| own.iter().any(|key| key.split('.').next() == Some(section)));
    let value: T = toml::Value::Table(sample)
        .try_into()
        .expect("the defaults with an entry in every map");
    let table =
        toml::Table::try_from(&value).expect("the defaults serialize as --print-config does");
    let mut out = BTreeMap::new();
    flatten(&table, &mut Vec::new(), &mut out);
    out
}

fn insert_table(table: &mut toml::Table, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let entry = table
        .entry(first.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(inner) = entry {
        insert_table(inner, rest);
    }
}

fn flatten(table: &toml::Table, path: &mut Vec<String>, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        path.push(key.clone());
        match value {
            toml::Value::Table(inner) => flatten(inner, path, out),
            leaf => {
                out.insert(path.join("."), leaf.clone());
            }
        }
        path.pop();
    }
}

// ---------------------------------------------------------------------------------------
// The walk: a deserializer that answers every request with a value, recording the path of
// every scalar, list and map entry it is asked for.
// ---------------------------------------------------------------------------------------

/// Every key `T` reads, by dotted path (map keys as `*`), and whether it may be absent.
fn keys_of<T: DeserializeOwned>() -> Keys {
    let found = RefCell::new(Keys::new());
    let walk = Walk {
        path: Vec::new(),
        optional: false,
        found: &found,
    };
    if let Err(error) = T::deserialize(walk) {
        panic!(
            "cannot walk the keys of {}: {error}",
            std::any::type_name::<T>()
        );
    }
    found.into_inner()
}

#[derive(Debug)]
struct WalkError(String);

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl de::Error for WalkError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        WalkError(message.to_string())
    }
}

struct Walk<'a> {
    path: Vec<String>,
    optional: bool,
    found: &'a RefCell<Keys>,
}

impl<'a> Walk<'a> {
    fn at(&self, part: &str) -> Walk<'a> {
        let mut path = self.path.clone();
        path.push(part.to_owned());
        Walk {
            path,
            optional: self.optional,
            found: self.found,
        }
    }

    fn leaf(&self) {
        self.found
            .borrow_mut()
            .insert(self.path.join("."), self.optional);
    }
}

macro_rules! leaves {
    ($($method:ident => $visit:ident($($value:expr)?)),+ $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
                self.leaf();
                visitor.$visit($($value)?)
            }
        )+
    };
}

impl<'de> de::Deserializer<'de> for Walk<'_> {
    type Error = WalkError;

    leaves! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(1),
        deserialize_i16 => visit_i64(1),
        deserialize_i32 => visit_i64(1),
        deserialize_i64 => visit_i64(1),
        deserialize_u8 => visit_u64(1),
        deserialize_u16 => visit_u64(1),
        deserialize_u32 => visit_u64(1),
        deserialize_u64 => visit_u64(1),
        deserialize_f32 => visit_f64(1.0),
        deserialize_f64 => visit_f64(1.0),
        deserialize_char => visit_char('a'),
        // Text that every string key of the configuration takes: a name, a path, a duration.
        deserialize_str => visit_str("1s"),
        deserialize_string => visit_str("1s"),
        deserialize_bytes => visit_bytes(b""),
        deserialize_byte_buf => visit_bytes(b""),
        deserialize_unit => visit_unit(),
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, WalkError> {
        Err(WalkError(format!(
            "{}: a type that reads any value (untagged, flattened) cannot be walked; name its keys here",
            self.path.join(".")
        )))
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, WalkError> {
        self.optional = true;
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.leaf();
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        // A list is one key (`idempotent = ["Exists"]`).
        self.leaf();
        visitor.visit_seq(de::value::SeqDeserializer::<_, WalkError>::new(
            std::iter::empty::<()>(),
        ))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        // One entry, keyed `*`, whose value is walked in turn.
        visitor.visit_map(Entries {
            walk: &self,
            keys: vec!["*"],
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        visitor.visit_map(Entries {
            walk: &self,
            keys: fields.to_vec(),
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        // An enum of names (`backend = "etcd"`) is one key; its first variant is read.
        self.leaf();
        let first = variants.first().copied().unwrap_or_default();
        visitor.visit_enum(first.into_deserializer())
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        visitor.visit_unit()
    }
}

/// A struct's fields, or a map's one entry, each value walked under its key.
struct Entries<'w, 'a> {
    walk: &'w Walk<'a>,
    keys: Vec<&'static str>,
    next: usize,
}

impl<'de> de::MapAccess<'de> for Entries<'_, '_> {
    type Error = WalkError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        let Some(key) = self.keys.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, WalkError> {
        let key = self.keys[self.next];
        self.next += 1;
        seed.deserialize(self.walk.at(key))
    }
}
