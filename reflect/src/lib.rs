//! gRPC server reflection, both sides.
//!
//! [`Reflection`] is a client: the services a server offers and the descriptor files that
//! describe them, imports included. It speaks `grpc.reflection.v1` and falls back to
//! `v1alpha` for a server that has only the older protocol (the stock reflection of
//! several languages, Python's `grpcio-reflection` among them), and remembers which one
//! answered.
//!
//! [`server`] is a server of both protocols. Both sides keep each file's bytes as they
//! were sent ([`ReflectedFile::encoded`]): prost's generated descriptor types drop
//! extension options when they decode, and custom method options (`google.api.http`)
//! are those.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use prost::Message;
use prost_reflect::DescriptorPool;
use prost_reflect::prost_types::FileDescriptorProto;
use tonic_reflection::pb::{v1, v1alpha};

mod encoded;
pub mod server;

pub use encoded::{encode_file_descriptor_set, split_file_descriptor_set};

type StdError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why reflection gave no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReflectError {
    /// The server answers neither protocol.
    #[error("it serves no gRPC reflection (grpc.reflection.v1 or v1alpha)")]
    NotServed,
    /// The call failed with this status (transport errors included, as UNAVAILABLE).
    #[error("{}", describe(.0))]
    Status(tonic::Status),
    /// The server answered the request with an error of its own.
    #[error("{0}")]
    Refused(String),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("a descriptor that cannot be decoded: {0}")]
    BadDescriptor(String),
    #[error("the server does not describe {0}, which its files import")]
    MissingImport(String),
}

impl ReflectError {
    /// The status the server answered with, when it was one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }
}

fn describe(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// A descriptor file read from a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ReflectedFile {
    /// The file decoded, without its extension options (prost's types drop them).
    pub proto: FileDescriptorProto,
    /// The file as the server sent it, extension options included: what
    /// `prost_reflect::DescriptorPool::decode_file_descriptor_proto` should read.
    pub encoded: Bytes,
}

impl ReflectedFile {
    /// Decodes one encoded `FileDescriptorProto`, keeping its bytes.
    pub fn decode(encoded: impl Into<Bytes>) -> Result<Self, ReflectError> {
        let encoded = encoded.into();
        let proto = FileDescriptorProto::decode(encoded.clone())
            .map_err(|error| ReflectError::BadDescriptor(error.to_string()))?;
        Ok(Self { proto, encoded })
    }

    /// Its name, which is its import path (`user/v1/user.proto`).
    pub fn name(&self) -> &str {
        self.proto.name()
    }
}

/// Which reflection protocol a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    V1,
    V1Alpha,
}

/// A reflection client over any tonic channel.
#[derive(Debug, Clone)]
pub struct Reflection<T> {
    channel: T,
    protocol: Protocol,
}

enum Ask<'a> {
    List,
    Containing(&'a str),
    ByName(&'a str),
}

enum Answer {
    Services(Vec<String>),
    Files(Vec<Vec<u8>>),
}

/// One request and its answer in either protocol: v1 and v1alpha are the same messages in
/// two packages, so the code is written once over the package.
macro_rules! one_question {
    ($pb:ident, $channel:expr, $ask:expr) => {{
        use $pb::server_reflection_request::MessageRequest as Request;
        use $pb::server_reflection_response::MessageResponse as Response;
        let request = $pb::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(match $ask {
                Ask::List => Request::ListServices(String::new()),
                Ask::Containing(symbol) => Request::FileContainingSymbol((*symbol).to_owned()),
                Ask::ByName(name) => Request::FileByFilename((*name).to_owned()),
            }),
        };
        let mut client = $pb::server_reflection_client::ServerReflectionClient::new($channel);
        let mut replies = client
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .map_err(ReflectError::Status)?
            .into_inner();
        let reply = replies.message().await.map_err(ReflectError::Status)?;
        match reply.and_then(|reply| reply.message_response) {
            Some(Response::ListServicesResponse(list)) => Ok(Answer::Services(
                list.service.into_iter().map(|s| s.name).collect(),
            )),
            Some(Response::FileDescriptorResponse(files)) => {
                Ok(Answer::Files(files.file_descriptor_proto))
            }
            Some(Response::ErrorResponse(error)) => Err(ReflectError::Refused(error.error_message)),
            Some(Response::AllExtensionNumbersResponse(_)) => Err(unexpected("extension numbers")),
            None => Err(unexpected("no answer")),
        }
    }};
}

impl<T> Reflection<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<StdError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<StdError> + Send,
{
    /// A client that tries v1 first.
    pub fn new(channel: T) -> Self {
        Self::speaking(channel, Protocol::V1)
    }

    /// A client that starts with `protocol` (one learnt earlier from the same server).
    pub fn speaking(channel: T, protocol: Protocol) -> Self {
        Self { channel, protocol }
    }

    /// The protocol the server answered last.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The full names of the gRPC services the server offers (reflection and health
    /// included).
    pub async fn list_services(&mut self) -> Result<Vec<String>, ReflectError> {
        match self.ask(Ask::List).await? {
            Answer::Services(names) => Ok(names),
            Answer::Files(_) => Err(unexpected("files in answer to a list of services")),
        }
    }

    /// The file that declares `symbol` (a service, a message…), and those the server
    /// sends with it.
    pub async fn file_containing(
        &mut self,
        symbol: &str,
    ) -> Result<Vec<ReflectedFile>, ReflectError> {
        let answer = self.ask(Ask::Containing(symbol)).await?;
        decode_files(answer)
    }

    /// The file of that name (`user/v1/user.proto`), and those the server sends with it.
    pub async fn file_by_name(&mut self, name: &str) -> Result<Vec<ReflectedFile>, ReflectError> {
        let answer = self.ask(Ask::ByName(name)).await?;
        decode_files(answer)
    }

    /// Every file `services` need, by name: the files declaring them and everything those
    /// import. A server may send a file without its imports: each missing one is asked
    /// for by name, and the well-known types (`google/protobuf/*.proto`), which some
    /// servers leave out, come from prost-reflect's own copy. Each file comes with the
    /// bytes the server sent (the well-known types with prost-reflect's encoding, which
    /// keeps options too).
    pub async fn files_of(
        &mut self,
        services: &[String],
    ) -> Result<BTreeMap<String, ReflectedFile>, ReflectError> {
        let mut files = BTreeMap::new();
        for service in services {
            for file in self.file_containing(service).await? {
                files.insert(file.name().to_owned(), file);
            }
        }
        let known = DescriptorPool::global();
        loop {
            let missing: BTreeSet<String> = files
                .values()
                .flat_map(|file| file.proto.dependency.iter())
                .filter(|name| !files.contains_key(*name))
                .cloned()
                .collect();
            if missing.is_empty() {
                return Ok(files);
            }
            for name in missing {
                if let Some(file) = known.get_file_by_name(&name) {
                    let reflected = ReflectedFile {
                        proto: file.file_descriptor_proto().clone(),
                        encoded: file.encode_to_vec().into(),
                    };
                    files.insert(name, reflected);
                    continue;
                }
                for file in self.file_by_name(&name).await? {
                    files.insert(file.name().to_owned(), file);
                }
                if !files.contains_key(&name) {
                    return Err(ReflectError::MissingImport(name));
                }
            }
        }
    }

    async fn ask(&mut self, ask: Ask<'_>) -> Result<Answer, ReflectError> {
        let first = self.protocol;
        let answer = self.ask_in(first, &ask).await;
        match answer {
            Err(ReflectError::Status(status)) if status.code() == tonic::Code::Unimplemented => {
                let other = match first {
                    Protocol::V1 => Protocol::V1Alpha,
                    Protocol::V1Alpha => Protocol::V1,
                };
                match self.ask_in(other, &ask).await {
                    Err(ReflectError::Status(status))
                        if status.code() == tonic::Code::Unimplemented =>
                    {
                        Err(ReflectError::NotServed)
                    }
                    answered => {
                        self.protocol = other;
                        answered
                    }
                }
            }
            answered => answered,
        }
    }

    async fn ask_in(&self, protocol: Protocol, ask: &Ask<'_>) -> Result<Answer, ReflectError> {
        match protocol {
            Protocol::V1 => self.ask_v1(ask).await,
            Protocol::V1Alpha => self.ask_v1alpha(ask).await,
        }
    }

    async fn ask_v1(&self, ask: &Ask<'_>) -> Result<Answer, ReflectError> {
        one_question!(v1, self.channel.clone(), ask)
    }

    async fn ask_v1alpha(&self, ask: &Ask<'_>) -> Result<Answer, ReflectError> {
        one_question!(v1alpha, self.channel.clone(), ask)
    }
}

/// Services every node has that are not its own API: reflection and health.
pub fn is_infrastructure(service: &str) -> bool {
    service.starts_with("grpc.reflection.") || service.starts_with("grpc.health.")
}

fn unexpected(what: &str) -> ReflectError {
    ReflectError::Unexpected(what.to_owned())
}

fn decode_files(answer: Answer) -> Result<Vec<ReflectedFile>, ReflectError> {
    let Answer::Files(encoded) = answer else {
        return Err(unexpected("a list of services in answer to a file request"));
    };
    encoded.into_iter().map(ReflectedFile::decode).collect()
}
