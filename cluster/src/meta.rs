//! The metadata keys a rust-ms node registers beside its address, and the typed fields a
//! caller reads from them once, when the node joins.

use registry::Instance;

/// The gRPC services a node serves, comma-separated (`user.v1.UserService`).
pub const GRPC_SERVICES: &str = "grpc.services";
/// The address of a node's HTTP server beside gRPC (the gateway's public port).
pub const HTTP: &str = "http";
/// Where a node's process serves its admin port (`host:port`), for the operator and
/// the dashboard's links; absent when the admin port is off.
pub const ADMIN: &str = "admin";
/// A node's share of traffic under the weighted balancer; 0 drains it under every
/// balancer. 1 when absent or unreadable.
pub const WEIGHT: &str = "weight";

/// What callers need of a node's metadata, parsed when it joins, never per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMeta {
    /// The gRPC services it serves; empty when it does not say.
    pub grpc_services: Vec<String>,
    /// Whether the node registered the list at all (older or foreign nodes may not).
    pub says_what_it_serves: bool,
    pub weight: u64,
}

impl NodeMeta {
    pub fn of(instance: &Instance) -> Self {
        let listed = instance.metadata.get(GRPC_SERVICES);
        Self {
            grpc_services: listed
                .map(|list| {
                    list.split(',')
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            says_what_it_serves: listed.is_some(),
            weight: instance
                .metadata
                .get(WEIGHT)
                .and_then(|w| w.trim().parse().ok())
                .unwrap_or(1),
        }
    }
}

/// Orders versions so that `0.10.2` comes after `0.9.7`: numeric parts compare as
/// numbers, the rest as text.
pub fn version_order(version: &str) -> Vec<(u64, &str)> {
    version
        .split(['.', '-', '+'])
        .map(|part| (part.parse().unwrap_or(0), part))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_order_after_older_ones_numerically() {
        let mut versions = vec!["0.10.0", "0.9.1", "1.0.0", "0.9.0"];
        versions.sort_by_key(|v| version_order(v));
        assert_eq!(versions, ["0.9.0", "0.9.1", "0.10.0", "1.0.0"]);
    }

    #[test]
    fn metadata_is_read_into_typed_fields_with_defaults_for_what_is_missing_or_unreadable() {
        let mut instance = Instance::new("user", "127.0.0.1:1");
        let meta = NodeMeta::of(&instance);
        assert_eq!(meta.weight, 1);
        assert!(meta.grpc_services.is_empty() && !meta.says_what_it_serves);

        instance.metadata.insert(WEIGHT.into(), "heavy".into());
        instance.metadata.insert(
            GRPC_SERVICES.into(),
            "user.v1.UserService,,admin.v1.Admin".into(),
        );
        let meta = NodeMeta::of(&instance);
        assert_eq!(meta.weight, 1, "an unreadable weight counts as 1");
        assert_eq!(
            meta.grpc_services,
            ["user.v1.UserService", "admin.v1.Admin"]
        );
        assert!(meta.says_what_it_serves);

        instance.metadata.insert(WEIGHT.into(), "0".into());
        assert_eq!(NodeMeta::of(&instance).weight, 0);
    }
}
