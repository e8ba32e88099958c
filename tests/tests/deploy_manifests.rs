//! `deploy/k8s`: the Kubernetes manifests, read as YAML and held to the project's own
//! contract so that they cannot rot silently. The truth comes from the project, not from
//! this file: the binaries are those of `gateway/src/bin` and `services/src/bin`, the ports
//! and the shutdown grace are what the binaries' own config loader makes of the mounted
//! file plus the environment each Deployment sets, and every `MS_*` variable must name a
//! key of the node's configuration type. No cluster is needed.

use std::collections::BTreeSet;
use std::path::Path;

use config::{ConfigError, Flags, NodeConfig};
use serde::Serialize;
use serde_json::Value;
use tests::k8s::{
    Doc, SAMPLE_POD_IP, Workload, array_at, documents, env_flags, env_key, env_value, find,
    generated_files, k8s_dir, kustomization, mounted_config, str_at, workloads, workspace_root,
};

/// The sections a binary adds to [`NodeConfig`], as `config::load` is called for it.
/// A new binary needs a line in both functions below.
fn load_node(binary: &str, file: &Path, flags: &Flags) -> Result<NodeLoaded, ConfigError> {
    fn keep<S: Serialize>(loaded: config::Loaded<S>) -> NodeLoaded {
        let mut sections = serde_json::to_value(&loaded.service).expect("sections serialize");
        let node = serde_json::to_value(&loaded.node).expect("the node's keys serialize");
        merge(&mut sections, node);
        NodeLoaded {
            node: loaded.node,
            all: sections,
        }
    }
    match binary {
        "gateway" => {
            config::load::<gateway::settings::GatewaySettings>(Some(file), flags).map(keep)
        }
        "user" => config::load::<services::user::UserSettings>(Some(file), flags).map(keep),
        "order" => config::load::<config::NoSections>(Some(file), flags).map(keep),
        other => panic!("no settings type known for binary {other:?}: add it to load_node"),
    }
}

/// Every key a binary's configuration has: [`NodeConfig`]'s defaults and its own sections'.
fn default_keys(binary: &str) -> Value {
    let mut keys = serde_json::to_value(NodeConfig::default()).unwrap();
    let sections = match binary {
        "gateway" => serde_json::to_value(gateway::settings::GatewaySettings::default()),
        "user" => serde_json::to_value(services::user::UserSettings::default()),
        "order" => serde_json::to_value(config::NoSections::default()),
        other => panic!("no settings type known for binary {other:?}: add it to default_keys"),
    };
    merge(&mut keys, sections.unwrap());
    keys
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// A loaded configuration: the shared keys, and everything (shared and the binary's own)
/// as serialized.
struct NodeLoaded {
    node: NodeConfig,
    all: Value,
}

/// The effective configuration of a workload's pod: its mounted file and its environment,
/// through the binary's own loader.
fn effective(docs: &[Doc], workload: &Workload) -> NodeLoaded {
    let file = mounted_config(docs, workload);
    load_node(&workload.binary, &file, &env_flags(docs, workload)).unwrap_or_else(|e| {
        panic!(
            "{}: the pod's configuration does not load: {e}",
            workload.at()
        )
    })
}

fn port_of(listen: &str) -> u16 {
    listen
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{listen:?}: {e}"))
        .port()
}

#[test]
fn every_manifest_parses_and_every_object_sits_in_the_namespace_it_declares() {
    let docs = documents();
    let namespace = str_at(kustomization(&docs), "/namespace", "kustomization.yaml");
    find(&docs, "Namespace", namespace);
    for doc in &docs {
        assert!(
            doc.value["apiVersion"].is_string() && !doc.kind().is_empty(),
            "{}: no apiVersion or kind",
            doc.at()
        );
        if matches!(doc.kind(), "Kustomization" | "Namespace") {
            continue;
        }
        assert!(!doc.name().is_empty(), "{}: no metadata.name", doc.at());
        assert_eq!(
            doc.value["metadata"]["namespace"].as_str(),
            Some(namespace),
            "{}: not in namespace {namespace} (kustomization.yaml's)",
            doc.at()
        );
    }
}

#[test]
fn kustomization_lists_every_manifest_and_generates_from_files_that_exist() {
    let docs = documents();
    let files: BTreeSet<String> = docs
        .iter()
        .map(|d| d.file.clone())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    let resources: BTreeSet<String> = array_at(kustomization(&docs), "/resources")
        .iter()
        .map(|r| r.as_str().expect("a resource is a path").to_owned())
        .collect();
    assert_eq!(
        resources, files,
        "kustomization.yaml's resources must be exactly the manifests in deploy/k8s"
    );
    let generated = generated_files(&docs);
    assert!(
        !generated.is_empty(),
        "kustomization.yaml generates no ConfigMap"
    );
    for file in generated.values() {
        assert!(
            k8s_dir().join(file).is_file(),
            "configMapGenerator: no file {file}"
        );
    }
}

#[test]
fn generated_config_files_are_byte_identical_to_the_repos_config_toml() {
    let docs = documents();
    for ((map, key), file) in generated_files(&docs) {
        let original = workspace_root().join("config").join(&key);
        let copy = k8s_dir().join(&file);
        assert!(
            std::fs::read(&copy).unwrap() == std::fs::read(&original).unwrap_or_default(),
            "deploy/k8s/{file} (ConfigMap {map}, key {key}) is not a copy of config/{key}; \
             after editing config/*.toml run: cp config/{{gateway,user,order}}.toml deploy/k8s/config/"
        );
    }
}

#[test]
fn each_pods_config_file_and_environment_load_with_the_binarys_own_loader() {
    let docs = documents();
    for workload in workloads(&docs) {
        let loaded = effective(&docs, &workload);
        // The environment did reach the loader: the pod's own IP is what gets registered.
        assert_eq!(
            loaded.node.advertise_host,
            SAMPLE_POD_IP,
            "{}",
            workload.at()
        );
        assert_eq!(
            loaded.node.registry.backend,
            config::Backend::Etcd,
            "{}: the cluster runs on etcd",
            workload.at()
        );
    }
}

#[test]
fn every_ms_variable_names_a_key_of_the_binarys_configuration() {
    let docs = documents();
    for workload in workloads(&docs) {
        let keys = default_keys(&workload.binary);
        for entry in workload.env() {
            let name = entry["name"].as_str().unwrap_or("");
            let Some(key) = env_key(name) else { continue };
            let mut table = &keys;
            for segment in key.split('.') {
                table = table.get(segment).unwrap_or_else(|| {
                    panic!(
                        "{}: {name} sets {key}, which is no key of NodeConfig or of {}'s own sections",
                        workload.at(),
                        workload.binary
                    )
                });
            }
            assert!(
                !table.is_object(),
                "{}: {name} sets {key}, a whole table, not a value",
                workload.at()
            );
        }
    }
}

#[test]
fn container_ports_are_the_ports_of_config_toml_and_the_admin_listen_address() {
    let docs = documents();
    for workload in workloads(&docs) {
        let at = workload.at();
        let file = workspace_root().join(format!("config/{}.toml", workload.binary));
        let from_file = load_node(&workload.binary, &file, &Flags::new())
            .unwrap_or_else(|e| panic!("config/{}.toml: {e}", workload.binary))
            .node;
        let pod = effective(&docs, &workload).node;
        // The manifest's env must not move a port away from what the file says.
        assert_eq!(
            pod.rpc_port, from_file.rpc_port,
            "{at}: rpc_port differs from the file's"
        );
        assert_eq!(
            workload.port("rpc"),
            pod.rpc_port,
            "{at}: the rpc container port"
        );
        let mut expected: BTreeSet<String> = ["rpc", "admin"].map(str::to_owned).into();
        // Only the gateway serves HTTP (NodeConfig::http_port: other nodes ignore it).
        if workload.binary == "gateway" {
            assert_eq!(
                pod.http_port, from_file.http_port,
                "{at}: http_port differs from the file's"
            );
            assert_eq!(
                workload.port("http"),
                pod.http_port,
                "{at}: the http container port"
            );
            expected.insert("http".to_owned());
        }
        let listen = workload.env_var("MS_ADMIN__LISTEN").unwrap_or_else(|| {
            panic!("{at}: no MS_ADMIN__LISTEN (the admin port is on loopback by default)")
        });
        let listen = env_value(&docs, &workload, listen);
        assert_eq!(
            pod.admin.listen, listen,
            "{at}: the admin address in effect"
        );
        assert_eq!(
            workload.port("admin"),
            port_of(&listen),
            "{at}: the admin container port"
        );
        assert_eq!(
            workload.port_names(),
            expected,
            "{at}: the container's named ports"
        );
    }
}

#[test]
fn probes_use_declared_ports_readyz_on_admin_and_grpc_health_on_rpc() {
    let docs = documents();
    for workload in workloads(&docs) {
        let at = workload.at();
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let Some(probe_spec) = workload.container.get(probe) else {
                continue;
            };
            for handler in ["httpGet", "tcpSocket", "grpc"] {
                if let Some(port) = probe_spec.pointer(&format!("/{handler}/port")) {
                    assert!(
                        workload.resolve_port(port).is_some(),
                        "{at}: {probe}.{handler}.port {port} is no declared container port"
                    );
                }
            }
        }
        let readiness = workload
            .container
            .get("readinessProbe")
            .unwrap_or_else(|| panic!("{at}: no readinessProbe"));
        assert_eq!(
            readiness.pointer("/httpGet/path").and_then(Value::as_str),
            Some("/readyz"),
            "{at}: readiness is the node's /readyz (registered, registry seen, not draining)"
        );
        let admin = workload.port("admin");
        assert_eq!(
            readiness
                .pointer("/httpGet/port")
                .and_then(|p| workload.resolve_port(p)),
            Some(admin),
            "{at}: /readyz is served on the admin port"
        );
        let rpc = workload.port("rpc");
        let liveness = workload
            .container
            .get("livenessProbe")
            .unwrap_or_else(|| panic!("{at}: no livenessProbe"));
        let grpc = liveness
            .get("grpc")
            .unwrap_or_else(|| panic!("{at}: liveness is not the native grpc probe"));
        assert_eq!(
            grpc["port"].as_u64(),
            Some(u64::from(rpc)),
            "{at}: liveness grpc port"
        );
        assert!(
            matches!(grpc.get("service"), None | Some(Value::String(_)))
                && grpc["service"].as_str().unwrap_or("").is_empty(),
            "{at}: liveness asks grpc.health.v1 about service \"\", which every node serves"
        );
    }
}

#[test]
fn etcd_addr_names_every_member_of_the_etcd_statefulset() {
    let docs = documents();
    let set = docs
        .iter()
        .find(|d| d.kind() == "StatefulSet" && d.name() == "etcd")
        .expect("etcd.yaml's StatefulSet etcd");
    let at = set.at();
    let service_name = str_at(&set.value, "/spec/serviceName", &at);
    let service = find(&docs, "Service", service_name);
    assert_eq!(
        service.value["spec"]["clusterIP"],
        "None",
        "{}: not headless",
        service.at()
    );
    assert_eq!(
        service.value["spec"]["publishNotReadyAddresses"],
        true,
        "{}: members must resolve each other before there is a quorum",
        service.at()
    );
    let replicas = set.value["spec"]["replicas"].as_u64().expect("replicas");
    let container = &array_at(&set.value, "/spec/template/spec/containers")[0];
    let port = |name: &str| {
        array_at(container, "/ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{at}: no {name} port"))
    };
    let (client, peer) = (port("client"), port("peer"));
    // Pod etcd-0 of the StatefulSet is etcd-0.etcd through its headless Service.
    let members: Vec<(String, String)> = (0..replicas)
        .map(|i| {
            let pod = format!("{}-{i}", set.name());
            let host = format!("{pod}.{service_name}");
            (pod, host)
        })
        .collect();
    let expected = members
        .iter()
        .map(|(_, host)| format!("{host}:{client}"))
        .collect::<Vec<_>>()
        .join(",");
    registry::parse_endpoints(&expected).expect("the member list is a valid etcd_addr");
    // etcd's own view of its members must be the same.
    let args: Vec<&str> = array_at(container, "/args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let initial = members
        .iter()
        .map(|(pod, host)| format!("{pod}=http://{host}:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        args.contains(&format!("--initial-cluster={initial}").as_str()),
        "{at}: --initial-cluster must be {initial}"
    );
    for workload in workloads(&docs) {
        let entry = workload
            .env_var("MS_REGISTRY__ETCD_ADDR")
            .unwrap_or_else(|| panic!("{}: no MS_REGISTRY__ETCD_ADDR", workload.at()));
        assert_eq!(
            env_value(&docs, &workload, entry),
            expected,
            "{}: MS_REGISTRY__ETCD_ADDR",
            workload.at()
        );
    }
}

#[test]
fn advertise_host_is_the_pod_ip() {
    let docs = documents();
    for workload in workloads(&docs) {
        let entry = workload
            .env_var("MS_ADVERTISE_HOST")
            .unwrap_or_else(|| panic!("{}: no MS_ADVERTISE_HOST", workload.at()));
        assert_eq!(
            entry
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str),
            Some("status.podIP"),
            "{}: peers must dial the pod's own IP",
            workload.at()
        );
    }
}

/// Leaves of a serialized configuration as (dotted key, value).
fn leaves(value: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(table) => {
            for (key, inner) in table {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(inner, &key, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

#[test]
fn every_secret_the_pods_use_comes_from_a_secret_never_a_plain_value() {
    let docs = documents();
    for workload in workloads(&docs) {
        let at = workload.at();
        // No MS_* variable naming a secret carries it in the manifest.
        for entry in workload.env() {
            let name = entry["name"].as_str().unwrap_or("");
            let Some(key) = env_key(name) else { continue };
            if config::is_secret(key.rsplit('.').next().unwrap()) {
                assert!(
                    entry.pointer("/valueFrom/secretKeyRef").is_some(),
                    "{at}: {name} is a secret: take it from a Secret (valueFrom.secretKeyRef)"
                );
                env_value(&docs, &workload, entry); // the Secret and its key exist
            }
        }
        // A secret the config file sets (a placeholder in git) is replaced from a Secret.
        let file = mounted_config(&docs, &workload);
        let from_file = load_node(&workload.binary, &file, &Flags::new())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut all = Vec::new();
        leaves(&from_file.all, "", &mut all);
        for (key, value) in all {
            let set = value.as_str().is_some_and(|v| !v.is_empty());
            if set && config::is_secret(key.rsplit('.').next().unwrap()) {
                let variable = format!("MS_{}", key.replace('.', "__").to_uppercase());
                let entry = workload.env_var(&variable).unwrap_or_else(|| {
                    panic!("{at}: the config file's {key} is a placeholder; set {variable} from a Secret")
                });
                assert!(
                    entry.pointer("/valueFrom/secretKeyRef").is_some(),
                    "{at}: {variable} must come from a Secret"
                );
            }
        }
    }
}

#[test]
fn termination_grace_outlasts_the_prestop_sleep_plus_shutdown_grace() {
    let docs = documents();
    for workload in workloads(&docs) {
        let at = workload.at();
        let grace = effective(&docs, &workload).node.shutdown_grace;
        let pre_stop = workload
            .container
            .pointer("/lifecycle/preStop")
            .unwrap_or_else(|| panic!("{at}: no preStop hook"));
        assert!(
            pre_stop.get("exec").is_none(),
            "{at}: the images are FROM scratch, with no shell or sleep binary: use preStop.sleep"
        );
        let sleep = pre_stop
            .pointer("/sleep/seconds")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{at}: preStop is not a sleep of some seconds"));
        assert!(sleep > 0, "{at}: preStop sleeps 0s");
        let termination = workload
            .pod
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{at}: no terminationGracePeriodSeconds"));
        assert!(
            termination as f64 > grace.as_secs_f64() + sleep as f64,
            "{at}: terminationGracePeriodSeconds {termination} must exceed preStop {sleep}s + shutdown_grace {grace:?}"
        );
    }
}

#[test]
fn images_are_the_local_builds_and_args_name_the_mounted_config() {
    let docs = documents();
    for workload in workloads(&docs) {
        let at = workload.at();
        let binary = &workload.binary;
        assert_eq!(
            workload.container["image"].as_str(),
            Some(format!("rust-ms/{binary}:local").as_str()),
            "{at}: image"
        );
        assert_eq!(
            workload.config_arg(),
            format!("/etc/rust-ms/{binary}.toml"),
            "{at}: --config"
        );
        // The path resolves through a volumeMount to the binary's own generated file.
        let file = mounted_config(&docs, &workload);
        assert_eq!(
            file.file_name().and_then(|f| f.to_str()),
            Some(format!("{binary}.toml").as_str()),
            "{at}: --config is another binary's file"
        );
    }
}

#[test]
fn every_container_runs_as_non_root_with_a_read_only_root_and_no_capabilities() {
    let docs = documents();
    for doc in docs
        .iter()
        .filter(|d| matches!(d.kind(), "Deployment" | "StatefulSet"))
    {
        let pod = doc.value.pointer("/spec/template/spec").unwrap();
        for container in array_at(pod, "/containers") {
            let at = format!("{} container {}", doc.at(), container["name"]);
            // The container's own setting wins over the pod's.
            let setting = |key: &str| {
                container
                    .pointer(&format!("/securityContext/{key}"))
                    .or_else(|| pod.pointer(&format!("/securityContext/{key}")))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            assert_eq!(setting("runAsNonRoot"), true, "{at}: runAsNonRoot");
            assert!(
                setting("runAsUser").as_u64().is_some_and(|u| u != 0),
                "{at}: runAsUser must be set and not 0"
            );
            let own = |key: &str| {
                container
                    .pointer(&format!("/securityContext/{key}"))
                    .cloned()
            };
            assert_eq!(
                own("readOnlyRootFilesystem"),
                Some(Value::Bool(true)),
                "{at}: readOnlyRootFilesystem"
            );
            assert_eq!(
                own("allowPrivilegeEscalation"),
                Some(Value::Bool(false)),
                "{at}: allowPrivilegeEscalation"
            );
            assert!(
                array_at(container, "/securityContext/capabilities/drop")
                    .contains(&Value::from("ALL")),
                "{at}: capabilities.drop must hold ALL"
            );
        }
    }
}

#[test]
fn services_select_their_pods_and_target_declared_container_ports() {
    let docs = documents();
    let workloads = workloads(&docs);
    for service in docs.iter().filter(|d| d.kind() == "Service") {
        let at = service.at();
        let selector = service.value["spec"]["selector"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no selector"));
        // Deployments of the binaries; the etcd StatefulSet's ports are its own business.
        let Some(selected) = workloads.iter().find(|w| {
            let labels = &w.doc.value["spec"]["template"]["metadata"]["labels"];
            selector.iter().all(|(k, v)| &labels[k] == v)
        }) else {
            assert!(
                docs.iter().any(|d| d.kind() == "StatefulSet"
                    && selector
                        .iter()
                        .all(|(k, v)| &d.value["spec"]["template"]["metadata"]["labels"][k] == v)),
                "{at}: selects no pods"
            );
            continue;
        };
        let mut targets = BTreeSet::new();
        for port in array_at(&service.value, "/spec/ports") {
            let target = port.get("targetPort").unwrap_or(&port["port"]);
            let number = selected.resolve_port(target).unwrap_or_else(|| {
                panic!(
                    "{at}: targetPort {target} is no container port of {}",
                    selected.at()
                )
            });
            let name = array_at(selected.container, "/ports")
                .iter()
                .find(|p| p["containerPort"].as_u64() == Some(u64::from(number)))
                .and_then(|p| p["name"].as_str())
                .unwrap_or("")
                .to_owned();
            targets.insert(name);
        }
        // Callers' ports only: the gateway's HTTP and gRPC, a service's gRPC; the admin port
        // is for probes and Prometheus, pod by pod.
        let expected: BTreeSet<String> = if selected.binary == "gateway" {
            ["http", "rpc"].map(str::to_owned).into()
        } else {
            ["rpc".to_owned()].into()
        };
        assert_eq!(targets, expected, "{at}: the ports it exposes");
    }
}

#[test]
fn prometheus_scrapes_each_pod_on_its_admin_port() {
    let docs = documents();
    for workload in workloads(&docs) {
        let at = workload.at();
        let annotations = &workload.doc.value["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/scrape"], "true",
            "{at}: prometheus.io/scrape"
        );
        assert_eq!(
            annotations["prometheus.io/port"],
            workload.port("admin").to_string(),
            "{at}: prometheus.io/port is the admin port"
        );
        assert_eq!(
            annotations["prometheus.io/path"], "/metrics",
            "{at}: prometheus.io/path"
        );
    }
}
