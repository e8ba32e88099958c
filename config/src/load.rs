use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ConfigError, NodeConfig};

const ENV_PREFIX: &str = "MS_";
const ENV_NESTING: &str = "__";

/// Environment variables with the `MS_` prefix that belong to the test harness, not a node.
const NOT_NODE_KEYS: &[&str] = &["etcd_image", "test_etcd_endpoints"];

/// The one key of the table a TOML datetime is read as; not a key anyone wrote.
const TOML_DATETIME: &str = "$__toml_private_datetime";

/// Values given on the command line, the last and strongest layer.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// Dotted key → (flag as typed, value or why it has none).
    entries: BTreeMap<String, (String, Result<serde_json::Value, String>)>,
}

impl Flags {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (dotted, `registry.etcd_addr`) from the flag `flag` (`--etcd-addr`).
    pub fn set(&mut self, key: &str, flag: &str, value: impl Serialize) -> &mut Self {
        // Kept, not turned into null (which would quietly unset the key): `load` refuses it.
        let value = serde_json::to_value(value).map_err(|e| e.to_string());
        self.entries
            .insert(key.to_owned(), (flag.to_owned(), value));
        self
    }

    /// Adds every entry of `other`, which wins where both set a key.
    pub fn extend(&mut self, other: &Flags) -> &mut Self {
        self.entries
            .extend(other.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// The first flag whose value could not be serialized, as an error naming it.
    fn unusable(&self) -> Option<ConfigError> {
        self.entries.iter().find_map(|(key, (flag, value))| {
            let reason = value.as_ref().err()?;
            Some(ConfigError::Invalid {
                key: key.clone(),
                origin: format!("command-line flag {flag}"),
                message: format!("the value cannot be used: {reason}"),
            })
        })
    }

    fn as_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (key, (_, value)) in &self.entries {
            // Refused by `load` before the layers are read.
            let Ok(value) = value else { continue };
            let mut segments: Vec<&str> = key.split('.').collect();
            let Some(last) = segments.pop() else { continue };
            let mut table = &mut root;
            for segment in segments {
                let entry = table
                    .entry(segment.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if !entry.is_object() {
                    *entry = serde_json::Value::Object(Default::default());
                }
                let serde_json::Value::Object(next) = entry else {
                    unreachable!()
                };
                table = next;
            }
            table.insert(last.to_owned(), value.clone());
        }
        serde_json::Value::Object(root)
    }
}

impl Provider for Flags {
    fn metadata(&self) -> Metadata {
        let flags: BTreeMap<String, String> = self
            .entries
            .iter()
            .map(|(key, (flag, _))| (key.clone(), flag.clone()))
            .collect();
        Metadata::named("command-line flags").interpolater(move |_: &Profile, path: &[&str]| {
            flags
                .get(&path.join("."))
                .cloned()
                .unwrap_or_else(|| path.join("."))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(self.as_json()).data()
    }
}

/// A node's configuration that passed every check: the shared keys, the service's own
/// sections, and the layers they came from.
#[derive(Debug, Clone)]
pub struct Loaded<S = NoSections> {
    pub node: NodeConfig,
    pub service: S,
    figment: Figment,
}

/// For nodes that add no sections of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoSections {}

impl Validate for NoSections {
    fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

impl<S> Loaded<S> {
    /// Where `key` (dotted) got its value: a file and line, an environment variable, a flag.
    pub fn origin(&self, key: &str) -> String {
        let path: Vec<&str> = key.split('.').collect();
        origin(self.figment.find_metadata(key), &path)
    }

    /// Whether `key` (dotted) was set by the file, the environment or a flag, rather than
    /// left at its default; a value set to what the default is counts as set.
    pub fn given(&self, key: &str) -> bool {
        self.figment
            .find_metadata(key)
            .is_some_and(|metadata| !matches!(layer(metadata), Layer::Defaults))
    }

    /// An error about `key`'s value, naming where it was set.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            origin: self.origin(key),
            message: message.into(),
        }
    }
}

impl<S: Serialize> Loaded<S> {
    /// The effective configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let failed = |e: &dyn std::fmt::Display| ConfigError::File {
            path: "effective configuration".to_owned(),
            message: e.to_string(),
        };
        let mut table = toml::Table::try_from(&self.node).map_err(|e| failed(&e))?;
        table.extend(toml::Table::try_from(&self.service).map_err(|e| failed(&e))?);
        redact(&mut table);
        toml::to_string(&table).map_err(|e| failed(&e))
    }
}

/// What stands in for a secret wherever configuration is shown.
pub const REDACTED: &str = "<redacted>";

/// Whether a key names a secret: the call key, passwords, tokens (the admin token) and
/// any `…secret`.
pub fn is_secret(key: &str) -> bool {
    key == "call_key"
        || key == "token"
        || key.ends_with("_token")
        || key.ends_with("password")
        || key.ends_with("secret")
}

/// Replaces every non-empty secret's value, at any depth, with [`REDACTED`]: shown
/// configuration (`--print-config`) is pasted into tickets and chats.
pub fn redact(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        match value {
            toml::Value::Table(inner) => redact(inner),
            toml::Value::String(text) if is_secret(key) && !text.is_empty() => {
                *text = REDACTED.to_owned();
            }
            _ => {}
        }
    }
}

/// Checks a loaded value beyond its types.
pub trait Validate {
    /// `Err((dotted key, reason))` for the first value that cannot be used. Types alone
    /// are checked when this is left as it is.
    fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

/// Loads a node's configuration (the shared keys and the sections `S` adds) from the
/// defaults, `file` (if any), the `MS_` environment and `flags`.
pub fn load<S>(file: Option<&Path>, flags: &Flags) -> Result<Loaded<S>, ConfigError>
where
    S: DeserializeOwned + Serialize + Default + Validate,
{
    if let Some(error) = flags.unusable() {
        return Err(error);
    }
    let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()))
        .merge(Serialized::defaults(S::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                message: "no such file".to_owned(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment
        .merge(
            Env::prefixed(ENV_PREFIX)
                .split(ENV_NESTING)
                .ignore(NOT_NODE_KEYS),
        )
        .merge(flags.clone());

    // Extracted apart so that figment can name the key of any error in either.
    let node: NodeConfig = figment.extract().map_err(|e| from_figment(file, e))?;
    let service: S = figment.extract().map_err(|e| from_figment(file, e))?;
    // What was understood is what the values serialize back to; without it no key could be
    // told apart from a typo, so failing to serialize is an error, not a skipped check.
    let mut understood = read_back("the shared keys", serde_json::to_value(&node))?;
    let more = read_back("the service's sections", serde_json::to_value(&service))?;
    understood.extend(more);
    refuse_unknown_keys(file, &figment, &understood)?;
    let loaded = Loaded {
        node,
        service,
        figment,
    };
    let checked = loaded
        .node
        .validate()
        .and_then(|()| loaded.service.validate());
    if let Err((key, message)) = checked {
        return Err(loaded.invalid(&key, message));
    }
    Ok(loaded)
}

/// A loaded value serialized back as a table, or why it cannot be.
fn read_back(
    what: &str,
    value: Result<serde_json::Value, serde_json::Error>,
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    let failed = |message: String| ConfigError::NotReadBack {
        what: what.to_owned(),
        message,
    };
    match value {
        Ok(serde_json::Value::Object(table)) => Ok(table),
        Ok(other) => Err(failed(format!("serialized as {other}, not a table"))),
        Err(e) => Err(failed(e.to_string())),
    }
}

fn from_figment(file: Option<&Path>, error: figment::Error) -> ConfigError {
    let error = error
        .into_iter()
        .next()
        .unwrap_or_else(|| figment::Error::from("unknown error".to_owned()));
    if error.path.is_empty() {
        // Not about one key: the file did not parse.
        return ConfigError::File {
            path: file.map(|p| p.display().to_string()).unwrap_or_default(),
            message: error.kind.to_string(),
        };
    }
    let path: Vec<&str> = error.path.iter().map(String::as_str).collect();
    ConfigError::Invalid {
        key: error.path.join("."),
        origin: origin(error.metadata.as_ref(), &path),
        message: error.kind.to_string(),
    }
}

/// Every key given must be one the configuration type reads back: compare what came in with
/// what the parsed value serializes to.
fn refuse_unknown_keys(
    file: Option<&Path>,
    figment: &Figment,
    understood: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ConfigError> {
    // Read as figment's own values, which hold whatever the layers hold (JSON cannot hold
    // every number): not being able to read them is an error, never a skipped check.
    let given: Dict = figment.extract().map_err(|e| from_figment(file, e))?;
    let mut unknown = Vec::new();
    unknown_paths(&given, understood, &mut Vec::new(), &mut unknown);
    match unknown.into_iter().next() {
        None => Ok(()),
        Some(path) => {
            let key = path.join(".");
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            Err(ConfigError::UnknownKey {
                origin: origin(figment.find_metadata(&key), &segments),
                key,
            })
        }
    }
}

fn unknown_paths(
    given: &Dict,
    understood: &serde_json::Map<String, serde_json::Value>,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    for (key, value) in given {
        path.push(key.clone());
        match understood.get(key) {
            // Name the full key of the first value set under an unknown table, so that the
            // origin is the exact variable or line (MS_USER__TOKEN_SECRET, not MS_USER).
            None => {
                let mut leaf = path.clone();
                let mut value = value;
                while let Some((inner, next)) = value
                    .as_dict()
                    .and_then(|d| d.iter().next())
                    .filter(|(inner, _)| *inner != TOML_DATETIME)
                {
                    leaf.push(inner.clone());
                    value = next;
                }
                out.push(leaf);
            }
            Some(serde_json::Value::Object(known)) => {
                if let Value::Dict(_, value) = value {
                    unknown_paths(value, known, path, out);
                }
            }
            Some(_) => {}
        }
        path.pop();
    }
}

/// The layer a value came from.
enum Layer<'a> {
    File(&'a PathBuf),
    Environment,
    Flags,
    Defaults,
}

fn layer(metadata: &Metadata) -> Layer<'_> {
    match &metadata.source {
        Some(Source::File(file)) => Layer::File(file),
        _ if metadata.name.contains("environment") => Layer::Environment,
        _ if metadata.name == "command-line flags" => Layer::Flags,
        _ => Layer::Defaults,
    }
}

fn origin(metadata: Option<&Metadata>, path: &[&str]) -> String {
    let Some(metadata) = metadata else {
        return "an unknown source".to_owned();
    };
    match layer(metadata) {
        Layer::File(file) => match find_line(file, path) {
            Some(line) => format!("{} line {line}", file.display()),
            None => file.display().to_string(),
        },
        Layer::Environment => format!(
            "environment variable {ENV_PREFIX}{}",
            path.join(ENV_NESTING).to_uppercase()
        ),
        Layer::Flags => format!(
            "command-line flag {}",
            metadata.interpolate(&Profile::Default, path)
        ),
        Layer::Defaults => "the defaults".to_owned(),
    }
}

/// The 1-based line of a TOML file that sets the dotted `path`, found by reading tables and
/// keys the simple way (good for the hand-written files configs are).
fn find_line(file: &PathBuf, path: &[&str]) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let wanted = path.join(".");
    let mut table = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = header.trim().trim_start_matches('[').to_owned();
            if table == wanted {
                return Some(index + 1);
            }
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key: String = key
            .trim()
            .split('.')
            .map(|k| k.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join(".");
        let full = if table.is_empty() {
            key
        } else {
            format!("{table}.{key}")
        };
        if full == wanted || wanted.starts_with(&format!("{full}.")) {
            return Some(index + 1);
        }
    }
    None
}
