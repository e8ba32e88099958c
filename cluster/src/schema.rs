//! Learning a service's methods from its nodes through gRPC server reflection, so that no
//! descriptor file or generated code is needed. Cached per service and version: a node
//! with a new version brings a fresh read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use tokio::sync::OnceCell;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

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
}

impl Schemas {
    /// Drops the schemas of `service` versions that no node runs any more.
    pub fn forget_versions_except(&self, service: &str, live: &BTreeSet<String>) {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.retain(|(cached_service, version), _| {
            cached_service != service || live.contains(version)
        });
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
        cell.get_or_try_init(|| async {
            tokio::time::timeout(
                REFLECTION_TIMEOUT,
                read_schema(node.channel.clone(), offered),
            )
            .await
            .map_err(|_| SchemaError::TimedOut(REFLECTION_TIMEOUT))?
            .map(Arc::new)
        })
        .await
        .cloned()
    }
}

fn failed(reason: impl Into<String>) -> SchemaError {
    SchemaError::Reflection(reason.into())
}

async fn ask(channel: &Channel, request: MessageRequest) -> Result<MessageResponse, SchemaError> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .map_err(|s| failed(s.message()))?
        .into_inner();
    let reply = replies
        .message()
        .await
        .map_err(|s| failed(s.message()))?
        .ok_or_else(|| failed("no reply"))?;
    match reply.message_response {
        Some(MessageResponse::ErrorResponse(e)) => Err(failed(e.error_message)),
        Some(other) => Ok(other),
        None => Err(failed("empty reply")),
    }
}

/// Services every node has and that are not the node's own API.
fn is_infrastructure(service: &str) -> bool {
    service.starts_with("grpc.reflection.") || service.starts_with("grpc.health.")
}

/// Adds every file that `files` import and lack: the well-known types
/// (`google/protobuf/*.proto`) from prost-reflect's own copy, since a node's reflection
/// may leave them out, and any other by name from the node.
async fn add_imports(
    channel: &Channel,
    files: &mut BTreeMap<String, FileDescriptorProto>,
) -> Result<(), SchemaError> {
    let known = DescriptorPool::global();
    loop {
        let missing: BTreeSet<String> = files
            .values()
            .flat_map(|file| file.dependency.iter())
            .filter(|name| !files.contains_key(*name))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for name in missing {
            if let Some(file) = known.get_file_by_name(&name) {
                files.insert(name, file.file_descriptor_proto().clone());
                continue;
            }
            let MessageResponse::FileDescriptorResponse(found) =
                ask(channel, MessageRequest::FileByFilename(name.clone())).await?
            else {
                return Err(failed(format!("unexpected answer for the file {name}")));
            };
            for bytes in found.file_descriptor_proto {
                let file = FileDescriptorProto::decode(bytes.as_slice())
                    .map_err(|e| failed(format!("bad descriptor: {e}")))?;
                files.insert(file.name().to_owned(), file);
            }
            if !files.contains_key(&name) {
                return Err(failed(format!(
                    "the node does not describe {name}, which its files import"
                )));
            }
        }
    }
}

async fn read_schema(
    channel: Channel,
    offered: Option<Vec<String>>,
) -> Result<Schema, SchemaError> {
    let MessageResponse::ListServicesResponse(list) =
        ask(&channel, MessageRequest::ListServices(String::new())).await?
    else {
        return Err(failed("unexpected answer to ListServices"));
    };
    let services: Vec<String> = list
        .service
        .into_iter()
        .map(|s| s.name)
        .filter(|name| !is_infrastructure(name))
        .filter(|name| offered.as_ref().is_none_or(|list| list.contains(name)))
        .collect();
    let mut files: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
    for service in &services {
        let MessageResponse::FileDescriptorResponse(found) = ask(
            &channel,
            MessageRequest::FileContainingSymbol(service.clone()),
        )
        .await?
        else {
            return Err(failed(format!("unexpected answer for {service}")));
        };
        for bytes in found.file_descriptor_proto {
            let file = FileDescriptorProto::decode(bytes.as_slice())
                .map_err(|e| failed(format!("bad descriptor: {e}")))?;
            files.insert(file.name().to_owned(), file);
        }
    }
    add_imports(&channel, &mut files).await?;
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
    Ok(Schema { methods, files })
}
