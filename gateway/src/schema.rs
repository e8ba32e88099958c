//! Learning a service's methods from its nodes through gRPC server reflection, so that no
//! descriptor file or generated code is needed. Cached per service and version: a node
//! with a new version brings a fresh read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node::client::ServiceChannel as Channel;
use prost::Message;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use tokio::sync::OnceCell;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::cluster::NodeHandle;

const REFLECTION_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub async fn of(&self, node: &NodeHandle) -> Result<Arc<Schema>, String> {
        let key = (node.instance.service.clone(), node.instance.version.clone());
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            cells.entry(key).or_default().clone()
        };
        // A node names the gRPC services it offers; reflection may know of more types.
        let offered: Option<Vec<String>> = node
            .instance
            .metadata
            .get("grpc.services")
            .map(|list| list.split(',').map(str::to_owned).collect());
        cell.get_or_try_init(|| async {
            tokio::time::timeout(
                REFLECTION_TIMEOUT,
                read_schema(node.channel.clone(), offered),
            )
            .await
            .map_err(|_| format!("no reflection answer within {REFLECTION_TIMEOUT:?}"))?
            .map(Arc::new)
        })
        .await
        .cloned()
    }
}

async fn ask(channel: &Channel, request: MessageRequest) -> Result<MessageResponse, String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .map_err(|s| format!("reflection: {}", s.message()))?
        .into_inner();
    let reply = replies
        .message()
        .await
        .map_err(|s| format!("reflection: {}", s.message()))?
        .ok_or("reflection: no reply")?;
    match reply.message_response {
        Some(MessageResponse::ErrorResponse(e)) => Err(format!("reflection: {}", e.error_message)),
        Some(other) => Ok(other),
        None => Err("reflection: empty reply".into()),
    }
}

/// Services every node has and that are not the node's own API.
fn is_infrastructure(service: &str) -> bool {
    service.starts_with("grpc.reflection.") || service.starts_with("grpc.health.")
}

async fn read_schema(channel: Channel, offered: Option<Vec<String>>) -> Result<Schema, String> {
    let MessageResponse::ListServicesResponse(list) =
        ask(&channel, MessageRequest::ListServices(String::new())).await?
    else {
        return Err("reflection: unexpected answer to ListServices".into());
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
            return Err(format!("reflection: unexpected answer for {service}"));
        };
        for bytes in found.file_descriptor_proto {
            let file = FileDescriptorProto::decode(bytes.as_slice())
                .map_err(|e| format!("reflection: bad descriptor: {e}"))?;
            files.insert(file.name().to_owned(), file);
        }
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.values().cloned())
        .map_err(|e| format!("reflection: {e}"))?;
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
