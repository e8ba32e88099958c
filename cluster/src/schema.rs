//! Learning a service's methods from its nodes through gRPC server reflection, so that no
//! descriptor file or generated code is needed. Cached per service and version: a node
//! with a new version brings a fresh read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use reflect::{Protocol, Reflection};
use tokio::sync::OnceCell;

use crate::credentials::NodeChannel as Channel;
use crate::node::Node;

const REFLECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a service's methods could not be learnt from one of its nodes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    #[error("no reflection answer within {0:?}")]
    TimedOut(Duration),
    /// The node's reflection failed or said something unusable.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// The methods one version of a service offers, by their simple name (`Exists`).
#[derive(Debug)]
pub struct Schema {
    methods: BTreeMap<String, MethodDescriptor>,
    /// The files the service's API is described in, dependencies included, by name.
    files: BTreeMap<String, FileDescriptorProto>,
}

impl Schema {
    pub fn method(&self, name: &str) -> Option<&MethodDescriptor> {
        self.methods.get(name)
    }

    pub fn method_names(&self) -> Vec<&str> {
        self.methods.keys().map(String::as_str).collect()
    }

    /// The descriptor files of the service's API, dependencies included.
    pub fn files(&self) -> impl Iterator<Item = &FileDescriptorProto> {
        self.files.values()
    }
}

type Key = (String, String);

#[derive(Default)]
pub struct Schemas {
    cells: Mutex<HashMap<Key, Arc<OnceCell<Arc<Schema>>>>>,
    /// The reflection protocol each node (by address) answered, for its next read: a
    /// node with only v1alpha is not asked v1 again.
    protocols: Mutex<HashMap<String, Protocol>>,
}

impl Schemas {
    /// Drops the schemas of `service` versions that no node runs any more.
    pub fn forget_versions_except(&self, service: &str, live: &BTreeSet<String>) {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.retain(|(cached_service, version), _| {
            cached_service != service || live.contains(version)
        });
    }

    fn protocol_of(&self, address: &str) -> Protocol {
        let protocols = self.protocols.lock().unwrap_or_else(|p| p.into_inner());
        protocols.get(address).copied().unwrap_or(Protocol::V1)
    }

    /// The schema of `node`'s service at `node`'s version, read once and shared.
    pub async fn of(&self, node: &Node) -> Result<Arc<Schema>, SchemaError> {
        let key = (node.instance.service.clone(), node.instance.version.clone());
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            cells.entry(key).or_default().clone()
        };
        // A node names the gRPC services it offers; reflection may know of more types.
        let offered = node
            .meta
            .says_what_it_serves
            .then(|| node.meta.grpc_services.clone());
        let address = &node.instance.address;
        cell.get_or_try_init(|| async {
            let protocol = self.protocol_of(address);
            let (schema, answered) = tokio::time::timeout(
                REFLECTION_TIMEOUT,
                read_schema(node.channel.clone(), offered, protocol),
            )
            .await
            .map_err(|_| SchemaError::TimedOut(REFLECTION_TIMEOUT))??;
            if answered != protocol {
                let mut protocols = self.protocols.lock().unwrap_or_else(|p| p.into_inner());
                protocols.insert(address.clone(), answered);
            }
            Ok(Arc::new(schema))
        })
        .await
        .cloned()
    }
}

fn failed(reason: impl Into<String>) -> SchemaError {
    SchemaError::Reflection(reason.into())
}

/// Reads the schema through reflection in the protocol the node answered last (v1 first
/// for a node not seen before), and says which protocol answered.
async fn read_schema(
    channel: Channel,
    offered: Option<Vec<String>>,
    protocol: Protocol,
) -> Result<(Schema, Protocol), SchemaError> {
    let mut reflection = Reflection::speaking(channel, protocol);
    let services: Vec<String> = reflection
        .list_services()
        .await
        .map_err(|e| failed(e.to_string()))?
        .into_iter()
        .filter(|name| !reflect::is_infrastructure(name))
        .filter(|name| offered.as_ref().is_none_or(|list| list.contains(name)))
        .collect();
    let files = reflection
        .files_of(&services)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.values().cloned())
        .map_err(|e| failed(e.to_string()))?;
    let mut methods = BTreeMap::new();
    for service in &services {
        if let Some(descriptor) = pool.get_service_by_name(service) {
            for method in descriptor.methods() {
                methods.entry(method.name().to_owned()).or_insert(method);
            }
        }
    }
    Ok((Schema { methods, files }, reflection.protocol()))
}
