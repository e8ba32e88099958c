#![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
//! Random configuration files and `MS_` variables: loading succeeds or fails with an error
//! that names a key, and never panics.

use std::collections::BTreeSet;

use config::{ConfigError, Flags, load};
use figment::Jail;
use proptest::prelude::*;

mod common;

/// A service section beside the shared keys, as real nodes have.
type Sections = common::UserLike;

/// Keys the configuration reads, so that most generated keys reach the typed values.
const KNOWN: &[&str] = &[
    "http_port",
    "rpc_port",
    "advertise_host",
    "shutdown_grace",
    "registry",
    "registry.backend",
    "registry.etcd_addr",
    "registry.namespace",
    "registry.ttl",
    "registry.connect_timeout",
    "registry.username",
    "registry.tls",
    "registry.tls.ca",
    "log",
    "log.format",
    "log.level",
    "security.call_key",
    "security.max_clock_skew",
    "security.mtls",
    "security.mtls.cert",
    "user.min_password_len",
];

const TABLES: &[&str] = &["registry", "registry.tls", "log", "security", "user"];

/// Words that some known key accepts, and some that none does.
const WORDS: &[&str] = &[
    "etcd",
    "memory",
    "zookeeper",
    "json",
    "pretty",
    "5s",
    "0s",
    "500ms",
    "1h",
    "-1s",
    "never",
    "auto",
    "127.0.0.1",
    "127.0.0.1:2379",
    "a:1|b:2",
    "",
    "info",
    "[1, 2]",
    "{ a = 1 }",
    "340282366920938463463374607431768211456",
    "1e400",
];

/// Values that known keys accept, so that whole configurations load too.
const GOOD: &[(&str, &str)] = &[
    ("http_port", "0"),
    ("http_port", "8080"),
    ("rpc_port", "65535"),
    ("advertise_host", "\"10.0.0.7\""),
    ("shutdown_grace", "\"3s\""),
    ("registry.backend", "\"memory\""),
    ("registry.backend", "\"etcd\""),
    ("registry.etcd_addr", "\"a:1|b:2\""),
    ("registry.namespace", "\"shop\""),
    ("registry.ttl", "\"1h\""),
    ("registry.ttl", "\"2s 500ms\""),
    ("registry.connect_timeout", "\"250ms\""),
    ("registry.username", "\"root\""),
    ("log.format", "\"json\""),
    ("log.format", "\"pretty\""),
    ("log.level", "\"debug\""),
    ("security.call_key", "\"k\""),
    ("security.max_clock_skew", "\"90s\""),
    ("user.min_password_len", "12"),
];

fn good_entry() -> impl Strategy<Value = (Vec<String>, toml::Value)> {
    prop::sample::select(GOOD).prop_map(|(key, value)| {
        let value: toml::Table = format!("v = {value}").parse().unwrap();
        (split(key), value["v"].clone())
    })
}

fn any_entry() -> impl Strategy<Value = (Vec<String>, toml::Value)> {
    prop_oneof![3 => good_entry(), 1 => (key_path(), value())]
}

fn env_entry() -> impl Strategy<Value = (Vec<String>, String)> {
    prop_oneof![
        2 => good_entry().prop_map(|(path, value)| {
            let text = match value {
                toml::Value::String(text) => text,
                other => other.to_string(),
            };
            (path, text)
        }),
        1 => (key_path(), env_value()),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    // No "__": that would nest in an environment variable's name.
    "[a-z][a-z0-9]{0,5}(_[a-z0-9]{1,4})?"
}

fn split(key: &str) -> Vec<String> {
    key.split('.').map(str::to_owned).collect()
}

fn key_path() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        4 => prop::sample::select(KNOWN).prop_map(split),
        1 => (prop::sample::select(TABLES), segment()).prop_map(|(table, key)| {
            let mut path = split(table);
            path.push(key);
            path
        }),
        1 => prop::collection::vec(segment(), 1..4),
    ]
}

fn scalar() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (-2i64..70_000).prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        prop::sample::select(WORDS).prop_map(|word| toml::Value::String(word.to_owned())),
        "[ -~]{0,12}".prop_map(toml::Value::String),
        Just(toml::Value::Datetime(
            "1979-05-27T07:32:00Z".parse().unwrap()
        )),
    ]
}

fn value() -> impl Strategy<Value = toml::Value> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map(segment(), inner, 0..4)
                .prop_map(|table| toml::Value::Table(table.into_iter().collect())),
        ]
    })
}

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..70_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}",
    ]
}

/// Sets `path` in `table`, replacing whatever stood where a table is needed.
fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let [first, rest @ ..] = path else { return };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(inner) = entry {
        insert(inner, rest, value);
    }
}

/// Loads `file` (when given) under the environment `env` alone.
fn load_in_jail(file: Option<&str>, env: &[(Vec<String>, String)]) -> Result<String, ConfigError> {
    let mut outcome = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        if let Some(text) = file {
            jail.create_file("node.toml", text)?;
        }
        for (path, value) in env {
            jail.set_env(format!("MS_{}", path.join("__").to_uppercase()), value);
        }
        let loaded = load::<Sections>(file.map(|_| "node.toml".as_ref()), &Flags::new());
        // What --print-config would print must come out of anything that loaded.
        outcome = Some(loaded.and_then(|loaded| loaded.to_toml()));
        Ok(())
    });
    outcome.expect("the jail ran")
}

/// The error names a key that was given, or one the configuration knows.
fn names_a_key(error: &ConfigError, given: &BTreeSet<String>) -> Result<(), String> {
    let key = match error {
        ConfigError::Invalid { key, .. } | ConfigError::UnknownKey { key, .. } => key,
        other => return Err(format!("no key named: {other}")),
    };
    let top = key.split('.').next().unwrap_or_default();
    let known = KNOWN.iter().any(|k| k.split('.').next() == Some(top));
    if key.is_empty() || !(known || given.contains(top)) {
        return Err(format!("names {key:?}, which nobody set: {error}"));
    }
    if !error.to_string().contains(key.as_str()) {
        return Err(format!("the message leaves out {key:?}: {error}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_files_and_environment_load_or_fail_naming_a_key(
        entries in prop::collection::vec(any_entry(), 0..8),
        env in prop::collection::vec(env_entry(), 0..4),
    ) {
        let mut table = toml::Table::new();
        for (path, value) in entries {
            insert(&mut table, &path, value);
        }
        let Ok(text) = toml::to_string(&table) else {
            return Err(TestCaseError::reject("toml cannot write this table"));
        };
        let given: BTreeSet<String> = table
            .keys()
            .cloned()
            .chain(env.iter().map(|(path, _)| path[0].clone()))
            .collect();
        match load_in_jail(Some(&text), &env) {
            Ok(printed) => prop_assert!(!printed.is_empty()),
            Err(error) => {
                if let Err(why) = names_a_key(&error, &given) {
                    return Err(TestCaseError::fail(format!("{why}\nfile:\n{text}\nenv: {env:?}")));
                }
            }
        }
    }

    #[test]
    fn any_text_as_a_file_loads_or_fails_naming_the_file_or_a_key(text in "[ -~\n]{0,80}") {
        let given: BTreeSet<String> = text
            .parse::<toml::Table>()
            .map(|table| table.keys().cloned().collect())
            .unwrap_or_default();
        match load_in_jail(Some(&text), &[]) {
            Ok(_) => {}
            Err(ConfigError::File { path, .. }) => prop_assert_eq!(path, "node.toml"),
            Err(error) => {
                if let Err(why) = names_a_key(&error, &given) {
                    return Err(TestCaseError::fail(format!("{why}\nfile:\n{text}")));
                }
            }
        }
    }
}
