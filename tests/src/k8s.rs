//! The Kubernetes manifests of `deploy/k8s` as the deploy manifests test reads them:
//! every YAML document, the Deployments with their binary's container, and what a pod
//! would see (its environment, the file mounted at its `--config` path). A manifest that
//! does not fit this model fails the test that asked, naming the file and document.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use config::Flags;
use serde::Deserialize;
use serde_json::Value;

/// What `status.podIP` stands for when a pod's environment is loaded here.
pub const SAMPLE_POD_IP: &str = "10.244.1.7";

/// The workspace this tests crate sits in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// `deploy/k8s`.
pub fn k8s_dir() -> PathBuf {
    workspace_root().join("deploy/k8s")
}

/// One YAML document of one file in deploy/k8s.
pub struct Doc {
    pub file: String,
    pub index: usize,
    pub value: Value,
}

impl Doc {
    /// `kind`, empty when missing.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    /// `metadata.name`, empty when missing.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    /// Where the document is, for messages.
    pub fn at(&self) -> String {
        format!(
            "deploy/k8s/{} document {} ({} {:?})",
            self.file,
            self.index + 1,
            self.kind(),
            self.name()
        )
    }
}

/// Every document of every `*.yaml`/`*.yml` file in deploy/k8s; a file that is not valid
/// YAML fails the test that asked.
pub fn documents() -> Vec<Doc> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s exists")
        .map(|entry| entry.expect("deploy/k8s is readable").path())
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "deploy/k8s holds no YAML file");
    let mut docs = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{file}: document {}: {e}", index + 1));
            // An empty document (a trailing `---`) is no object.
            if value.is_null() {
                continue;
            }
            docs.push(Doc {
                file: file.clone(),
                index,
                value,
            });
        }
    }
    docs
}

/// The document of `kustomization.yaml`.
pub fn kustomization(docs: &[Doc]) -> &Value {
    &docs
        .iter()
        .find(|d| d.file == "kustomization.yaml")
        .expect("deploy/k8s/kustomization.yaml exists")
        .value
}

/// The object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} named {name:?} in deploy/k8s"))
}

/// The string at the JSON `pointer`; `what` names the object in the message.
pub fn str_at<'a>(value: &'a Value, pointer: &str, what: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: no string at {pointer}"))
}

/// The array at the JSON `pointer`, empty when there is none.
pub fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The binaries the project builds: `gateway/src/bin/*.rs` and `services/src/bin/*.rs`.
pub fn project_binaries() -> BTreeSet<String> {
    let mut binaries = BTreeSet::new();
    for dir in ["gateway/src/bin", "services/src/bin"] {
        for entry in std::fs::read_dir(workspace_root().join(dir)).expect("a bin folder") {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                binaries.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    binaries
}

/// A Deployment of one of the project's binaries.
pub struct Workload<'a> {
    pub doc: &'a Doc,
    pub binary: String,
    pub pod: &'a Value,
    pub container: &'a Value,
}

impl Workload<'_> {
    /// Where the Deployment is, for messages.
    pub fn at(&self) -> String {
        self.doc.at()
    }

    /// The container's environment entries.
    pub fn env(&self) -> &[Value] {
        array_at(self.container, "/env")
    }

    /// The container's environment entry `name`.
    pub fn env_var(&self, name: &str) -> Option<&Value> {
        self.env().iter().find(|e| e["name"] == name)
    }

    /// The container port called `name`.
    pub fn port(&self, name: &str) -> u16 {
        array_at(self.container, "/ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{}: no container port named {name:?}", self.at()))
            as u16
    }

    /// The names of the container's ports.
    pub fn port_names(&self) -> BTreeSet<String> {
        array_at(self.container, "/ports")
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// A probe's or Service's port (a name or a number) as a declared container port.
    pub fn resolve_port(&self, port: &Value) -> Option<u16> {
        array_at(self.container, "/ports")
            .iter()
            .find(|p| match port {
                Value::String(name) => p["name"] == name.as_str(),
                Value::Number(number) => p["containerPort"].as_u64() == number.as_u64(),
                _ => false,
            })
            .and_then(|p| p["containerPort"].as_u64())
            .map(|p| p as u16)
    }

    /// The path given to `--config`.
    pub fn config_arg(&self) -> String {
        let args: Vec<&str> = array_at(self.container, "/args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        args.iter()
            .enumerate()
            .find_map(|(i, arg)| match arg.strip_prefix("--config") {
                Some("") => args.get(i + 1).map(|s| s.to_string()),
                Some(rest) => rest.strip_prefix('=').map(str::to_owned),
                None => None,
            })
            .unwrap_or_else(|| panic!("{}: no --config among the args {args:?}", self.at()))
    }
}

/// Every Deployment, each with its binary's container (named after the Deployment).
pub fn workloads(docs: &[Doc]) -> Vec<Workload<'_>> {
    let found: Vec<Workload> = docs
        .iter()
        .filter(|d| d.kind() == "Deployment")
        .map(|doc| {
            let pod = doc
                .value
                .pointer("/spec/template/spec")
                .unwrap_or_else(|| panic!("{}: no pod template", doc.at()));
            let binary = doc.name().to_owned();
            let container = array_at(pod, "/containers")
                .iter()
                .find(|c| c["name"] == binary.as_str())
                .unwrap_or_else(|| panic!("{}: no container named {binary:?}", doc.at()));
            Workload {
                doc,
                binary,
                pod,
                container,
            }
        })
        .collect();
    let deployed: BTreeSet<String> = found.iter().map(|w| w.binary.clone()).collect();
    assert_eq!(
        deployed,
        project_binaries(),
        "deploy/k8s must run one Deployment per binary of the project (named after it)"
    );
    found
}

/// The value a pod would see for an environment entry, with `status.podIP` as
/// [`SAMPLE_POD_IP`] and a Secret's value read from deploy/k8s.
pub fn env_value(docs: &[Doc], workload: &Workload, entry: &Value) -> String {
    let name = entry["name"].as_str().unwrap_or("");
    if let Some(value) = entry.get("value") {
        return value
            .as_str()
            .unwrap_or_else(|| panic!("{}: {name} is not a string", workload.at()))
            .to_owned();
    }
    if let Some(field) = entry.pointer("/valueFrom/fieldRef/fieldPath") {
        return match field.as_str() {
            Some("status.podIP") => SAMPLE_POD_IP.to_owned(),
            other => panic!(
                "{}: {name} from {other:?}: not modelled here",
                workload.at()
            ),
        };
    }
    if let Some(reference) = entry.pointer("/valueFrom/secretKeyRef") {
        let secret = find(docs, "Secret", str_at(reference, "/name", name));
        let key = str_at(reference, "/key", name);
        if let Some(text) = secret.value["stringData"][key].as_str() {
            return text.to_owned();
        }
        let encoded = secret.value["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no key {key:?}", secret.at()));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_else(|e| panic!("{}: {key}: {e}", secret.at()));
        return String::from_utf8(bytes).unwrap();
    }
    panic!(
        "{}: {name} has neither a value nor a known valueFrom",
        workload.at()
    )
}

/// `MS_REGISTRY__ETCD_ADDR` → `registry.etcd_addr`: the `MS_` environment's own rule
/// (prefix off, lower case, `__` nests).
pub fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("MS_")?;
    Some(
        rest.to_lowercase()
            .split("__")
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The pod's `MS_*` environment as the last configuration layer. Values are typed as
/// figment types environment values (numbers and booleans as such, the rest as text).
pub fn env_flags(docs: &[Doc], workload: &Workload) -> Flags {
    let mut flags = Flags::new();
    for entry in workload.env() {
        let name = entry["name"].as_str().unwrap_or("");
        let Some(key) = env_key(name) else { continue };
        let text = env_value(docs, workload, entry);
        let value = match serde_json::from_str::<Value>(&text) {
            Ok(typed @ (Value::Number(_) | Value::Bool(_))) => typed,
            _ => Value::String(text),
        };
        flags.set(&key, &format!("env {name} of {}", workload.at()), value);
    }
    flags
}

/// The file in deploy/k8s that the pod sees at its `--config` path: through a volumeMount
/// of a ConfigMap volume to the kustomization's configMapGenerator entry.
pub fn mounted_config(docs: &[Doc], workload: &Workload) -> PathBuf {
    let path = workload.config_arg();
    let at = workload.at();
    let (mount, relative) = array_at(workload.container, "/volumeMounts")
        .iter()
        .find_map(|mount| {
            let dir = mount["mountPath"].as_str()?;
            let relative = path.strip_prefix(dir)?.strip_prefix('/')?;
            (mount.get("subPath").is_none()).then(|| (mount, relative.to_owned()))
        })
        .unwrap_or_else(|| panic!("{at}: --config {path} is under no volumeMount"));
    let volume_name = str_at(mount, "/name", &at);
    let volume = array_at(workload.pod, "/volumes")
        .iter()
        .find(|v| v["name"] == volume_name)
        .unwrap_or_else(|| panic!("{at}: no volume {volume_name:?}"));
    let map = volume
        .get("configMap")
        .unwrap_or_else(|| panic!("{at}: volume {volume_name:?} is not a ConfigMap"));
    let map_name = str_at(map, "/name", &at);
    let items = array_at(map, "/items");
    let key = if items.is_empty() {
        relative.clone()
    } else {
        items
            .iter()
            .find(|item| item["path"] == relative.as_str())
            .map(|item| str_at(item, "/key", &at).to_owned())
            .unwrap_or_else(|| panic!("{at}: ConfigMap volume has no item at {relative:?}"))
    };
    let generated = generated_files(docs);
    let file = generated
        .get(&(map_name.to_owned(), key.clone()))
        .unwrap_or_else(|| {
            panic!(
                "{at}: {path} is key {key:?} of ConfigMap {map_name:?}, which kustomization.yaml's configMapGenerator does not make (it makes {:?})",
                generated.keys().collect::<Vec<_>>()
            )
        });
    k8s_dir().join(file)
}

/// (ConfigMap name, key) → the file in deploy/k8s it is generated from.
pub fn generated_files(docs: &[Doc]) -> BTreeMap<(String, String), String> {
    let mut files = BTreeMap::new();
    for generator in array_at(kustomization(docs), "/configMapGenerator") {
        let name = str_at(generator, "/name", "configMapGenerator");
        for entry in array_at(generator, "/files") {
            let entry = entry
                .as_str()
                .expect("a configMapGenerator file is a string");
            let (key, file) = match entry.split_once('=') {
                Some((key, file)) => (key.to_owned(), file.to_owned()),
                None => (
                    Path::new(entry)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    entry.to_owned(),
                ),
            };
            files.insert((name.to_owned(), key), file);
        }
    }
    files
}
