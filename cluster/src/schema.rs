//! Learning a service's methods from its nodes through gRPC server reflection, so that no
//! descriptor file or generated code is needed. Cached per service and version: a node
//! with a new version brings a fresh read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use reflect::{Protocol, ReflectedFile, Reflection};
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

/// The methods one version of a service offers, by their simple name (`Exists`). Their
/// options (`MethodDescriptor::options`) hold the custom ones the node's files declare,
/// such as `google.api.http`, when the files that define them came along (as
/// `google/api/annotations.proto` does with a file that imports it).
#[derive(Debug)]
pub struct Schema {
    methods: BTreeMap<String, MethodDescriptor>,
    /// The files the service's API is described in, dependencies included, by name.
    files: BTreeMap<String, ReflectedFile>,
}

impl Schema {
    pub fn method(&self, name: &str) -> Option<&MethodDescriptor> {
        self.methods.get(name)
    }

    pub fn method_names(&self) -> Vec<&str> {
        self.methods.keys().map(String::as_str).collect()
    }

    /// The descriptor files of the service's API, dependencies included, decoded: without
    /// their extension options (see [`Schema::encoded_files`]).
    pub fn files(&self) -> impl Iterator<Item = &FileDescriptorProto> {
        self.files.values().map(|file| &file.proto)
    }

    /// The same files by name, each encoded as the node sent it, extension options
    /// included: what a reflection server of the API should serve.
    pub fn encoded_files(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.files
            .iter()
            .map(|(name, file)| (name.as_str(), &file.encoded))
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
    // From the bytes, not from prost's types, which have dropped the extension options.
    let set = reflect::encode_file_descriptor_set(files.values().map(|file| file.encoded.clone()));
    let mut pool = DescriptorPool::new();
    pool.decode_file_descriptor_set(set.as_slice())
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::Value;
    use registry::Instance;

    const TAGGED: &str = "tagged/v1/tagged.proto";

    /// A method with a custom option, as `google.api.http` is one.
    const TAGGED_SOURCE: &str = r#"
syntax = "proto3";
package tagged.v1;

import "google/protobuf/descriptor.proto";

extend google.protobuf.MethodOptions {
  string tag = 50001;
}

message Word {
  string text = 1;
}

service Tagged {
  rpc Say(Word) returns (Word) {
    option (tag) = "x";
  }
}
"#;

    struct Sources;

    impl protox::file::FileResolver for Sources {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            if name == TAGGED {
                protox::file::File::from_source(name, TAGGED_SOURCE)
            } else {
                protox::file::GoogleFileResolver::new().open_file(name)
            }
        }
    }

    /// A node serving only the reflection of the tagged file (compiled without its
    /// imports: descriptor.proto comes from the client's own copy).
    async fn tagged_node() -> Node {
        let mut compiler = protox::Compiler::with_file_resolver(Sources);
        compiler.open_file(TAGGED).unwrap();
        let reflection = reflect::server::Builder::new()
            .register_encoded_file_descriptor_set(compiler.encode_file_descriptor_set())
            .build_v1()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tonic::transport::Server::builder()
            .add_service(reflection)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        Node::for_tests(Instance::new("tagged", &address)).unwrap()
    }

    #[tokio::test]
    async fn a_methods_custom_option_is_in_its_schema_options_and_its_files_bytes() {
        let node = tagged_node().await;
        let schema = Schemas::default().of(&node).await.unwrap();
        let say = schema.method("Say").unwrap();
        let tag = say
            .parent_pool()
            .get_extension_by_name("tagged.v1.tag")
            .unwrap();
        assert_eq!(
            *say.options().get_extension(&tag),
            Value::String("x".to_owned())
        );

        let names: Vec<&str> = schema.files().map(|file| file.name()).collect();
        assert_eq!(names, ["google/protobuf/descriptor.proto", TAGGED]);
        let encoded: Vec<&str> = schema.encoded_files().map(|(name, _)| name).collect();
        assert_eq!(encoded, names);
        // The bytes of the file alone carry the option too (for a reflection server).
        let (_, tagged) = schema
            .encoded_files()
            .find(|(name, _)| *name == TAGGED)
            .unwrap();
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_proto(
            DescriptorPool::global()
                .get_file_by_name("google/protobuf/descriptor.proto")
                .unwrap()
                .file_descriptor_proto()
                .clone(),
        )
        .unwrap();
        pool.decode_file_descriptor_proto(tagged.clone()).unwrap();
        let say = pool.get_service_by_name("tagged.v1.Tagged").unwrap();
        let say = say.methods().next().unwrap();
        let tag = pool.get_extension_by_name("tagged.v1.tag").unwrap();
        assert!(say.options().has_extension(&tag));
    }
}
