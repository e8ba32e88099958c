use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ConfigError, NodeConfig};

const ENV_PREFIX: &str = "MS_";
const ENV_NESTING: &str = "__";

/// Environment variables with the `MS_` prefix that belong to the test harness, not a node.
const NOT_NODE_KEYS: &[&str] = &["etcd_image", "test_etcd_endpoints"];

/// Values given on the command line, the last and strongest layer.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// Dotted key → (flag as typed, value).
    entries: BTreeMap<String, (String, serde_json::Value)>,
}

impl Flags {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (dotted, `registry.etcd_addr`) from the flag `flag` (`--etcd-addr`).
    pub fn set(&mut self, key: &str, flag: &str, value: impl Serialize) -> &mut Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
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

    fn as_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (key, (_, value)) in &self.entries {
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
        toml::to_string(&table).map_err(|e| failed(&e))
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
    let mut understood = serde_json::to_value(&node).unwrap_or_default();
    if let (Some(all), serde_json::Value::Object(more)) = (
        understood.as_object_mut(),
        serde_json::to_value(&service).unwrap_or_default(),
    ) {
        all.extend(more);
    }
    refuse_unknown_keys(&figment, &understood)?;
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
    figment: &Figment,
    understood: &serde_json::Value,
) -> Result<(), ConfigError> {
    let given: serde_json::Value = figment.extract().unwrap_or(serde_json::Value::Null);
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
    given: &serde_json::Value,
    understood: &serde_json::Value,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let (serde_json::Value::Object(given), serde_json::Value::Object(understood)) =
        (given, understood)
    else {
        return;
    };
    for (key, value) in given {
        path.push(key.clone());
        match understood.get(key) {
            // Name the full key of the first value set under an unknown table, so that the
            // origin is the exact variable or line (MS_USER__TOKEN_SECRET, not MS_USER).
            None => {
                let mut leaf = path.clone();
                let mut value = value;
                while let Some((inner, next)) = value.as_object().and_then(|o| o.iter().next()) {
                    leaf.push(inner.clone());
                    value = next;
                }
                out.push(leaf);
            }
            Some(known) => unknown_paths(value, known, path, out),
        }
        path.pop();
    }
}

fn origin(metadata: Option<&Metadata>, path: &[&str]) -> String {
    let Some(metadata) = metadata else {
        return "an unknown source".to_owned();
    };
    match &metadata.source {
        Some(Source::File(file)) => match find_line(file, path) {
            Some(line) => format!("{} line {line}", file.display()),
            None => file.display().to_string(),
        },
        _ if metadata.name.contains("environment") => format!(
            "environment variable {ENV_PREFIX}{}",
            path.join(ENV_NESTING).to_uppercase()
        ),
        _ if metadata.name == "command-line flags" => format!(
            "command-line flag {}",
            metadata.interpolate(&Profile::Default, path)
        ),
        _ => "the defaults".to_owned(),
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
