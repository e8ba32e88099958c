//! A gRPC server reflection, `grpc.reflection.v1` and `v1alpha`, that answers with each
//! descriptor file's own bytes: a file decoded into prost's types and encoded again
//! would lose its extension options (custom method options such as `google.api.http`),
//! and a reader of the API needs them.
//!
//! Files are indexed once, when built. A file answer holds the file asked for, then the
//! files it imports, directly or not, that the server holds and has not yet sent on the
//! same call (as the reflection of grpc-go and grpc-java does). A name the server does
//! not know ends the call with NOT_FOUND, as tonic-reflection's does.
//!
//! ```no_run
//! # fn routes(set: &'static [u8]) -> Result<(), reflect::server::BuildError> {
//! let reflection = reflect::server::Builder::new().register_encoded_file_descriptor_set(set);
//! let v1 = reflection.clone().build_v1()?;
//! let v1alpha = reflection.build_v1alpha()?;
//! # let _ = (v1, v1alpha);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use prost::Message;
use prost_reflect::prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};
use tonic::Status;
use tonic_reflection::pb::{v1, v1alpha};

use crate::encoded::split_file_descriptor_set;

/// Why a reflection server could not be built from what was registered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    #[error("an encoded FileDescriptorSet that cannot be decoded: {0}")]
    BadSet(prost::DecodeError),
    #[error("an encoded FileDescriptorProto that cannot be decoded: {0}")]
    BadFile(prost::DecodeError),
    #[error("a FileDescriptorProto without a name")]
    Unnamed,
}

/// The `grpc.reflection.v1` service, ready for a tonic router.
pub type V1Server = v1::server_reflection_server::ServerReflectionServer<V1>;
/// The `grpc.reflection.v1alpha` service, ready for a tonic router.
pub type V1AlphaServer = v1alpha::server_reflection_server::ServerReflectionServer<V1Alpha>;

#[derive(Debug, Clone)]
enum Source {
    Set(Bytes),
    File(Bytes),
}

/// The files a reflection server describes, and the services it lists.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    sources: Vec<Source>,
    /// `None`: every service of the files.
    services: Option<Vec<String>>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The files of an encoded `google.protobuf.FileDescriptorSet` (a `&'static [u8]`
    /// from `include_bytes!`, a `Vec<u8>`…), served as they are encoded in it. Of two
    /// files with the same name, the one registered first is served.
    pub fn register_encoded_file_descriptor_set(mut self, set: impl Into<Bytes>) -> Self {
        self.sources.push(Source::Set(set.into()));
        self
    }

    /// One encoded `google.protobuf.FileDescriptorProto`, served as it is.
    pub fn register_encoded_file(mut self, file: impl Into<Bytes>) -> Self {
        self.sources.push(Source::File(file.into()));
        self
    }

    /// Lists `name` among the services. Without a call to it, every service the files
    /// declare is listed, the reflection service itself included.
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.services.get_or_insert_default().push(name.into());
        self
    }

    /// The `grpc.reflection.v1` service over the files, which describes itself too.
    pub fn build_v1(self) -> Result<V1Server, BuildError> {
        let index = self.index(v1::FILE_DESCRIPTOR_SET)?;
        Ok(V1Server::new(V1 {
            index: Arc::new(index),
        }))
    }

    /// The `grpc.reflection.v1alpha` service over the files, which describes itself too.
    pub fn build_v1alpha(self) -> Result<V1AlphaServer, BuildError> {
        let index = self.index(v1alpha::FILE_DESCRIPTOR_SET)?;
        Ok(V1AlphaServer::new(V1Alpha {
            index: Arc::new(index),
        }))
    }

    /// The index of the registered files, then of the reflection protocol's own.
    fn index(self, reflection: &'static [u8]) -> Result<Index, BuildError> {
        let list_all = self.services.is_none();
        let mut index = Index {
            services: self.services.unwrap_or_default(),
            ..Index::default()
        };
        let sources = self
            .sources
            .into_iter()
            .chain([Source::Set(reflection.into())]);
        for source in sources {
            match source {
                Source::Set(set) => {
                    for file in split_file_descriptor_set(set).map_err(BuildError::BadSet)? {
                        index.add(file, list_all)?;
                    }
                }
                Source::File(file) => index.add(file, list_all)?,
            }
        }
        Ok(index)
    }
}

/// A served file: its bytes as registered, and the names of the files it imports.
#[derive(Debug)]
struct Served {
    encoded: Bytes,
    imports: Vec<String>,
}

/// What the server answers from, each name pointing at the file that declares it.
#[derive(Debug, Default)]
struct Index {
    files: HashMap<String, Served>,
    /// Packages are not symbols: services, methods, messages (nested ones too), fields,
    /// oneofs, enums, enum values and extensions, by full name.
    symbols: HashMap<String, String>,
    /// Extensions by the full name of the message they extend, then by number.
    extensions: HashMap<String, BTreeMap<i32, String>>,
    services: Vec<String>,
}

impl Index {
    fn add(&mut self, encoded: Bytes, list_services: bool) -> Result<(), BuildError> {
        // Decoded to be indexed only: what is served is `encoded`.
        let file = FileDescriptorProto::decode(encoded.clone()).map_err(BuildError::BadFile)?;
        let name = file.name.clone().ok_or(BuildError::Unnamed)?;
        if self.files.contains_key(&name) {
            return Ok(());
        }
        let package = file.package();
        for message in &file.message_type {
            self.message(&name, package, message);
        }
        for enumeration in &file.enum_type {
            self.enumeration(&name, package, enumeration);
        }
        for extension in &file.extension {
            self.extension(&name, package, extension);
        }
        for service in &file.service {
            let service_name = join(package, service.name());
            for method in &service.method {
                self.symbol(join(&service_name, method.name()), &name);
            }
            self.symbol(service_name.clone(), &name);
            if list_services && !self.services.contains(&service_name) {
                self.services.push(service_name);
            }
        }
        let imports = file.dependency;
        self.files.insert(name, Served { encoded, imports });
        Ok(())
    }

    /// The first file to declare a name keeps it.
    fn symbol(&mut self, symbol: String, file: &str) {
        self.symbols
            .entry(symbol)
            .or_insert_with(|| file.to_owned());
    }

    fn message(&mut self, file: &str, scope: &str, message: &DescriptorProto) {
        let full = join(scope, message.name());
        for field in &message.field {
            self.symbol(join(&full, field.name()), file);
        }
        for oneof in &message.oneof_decl {
            self.symbol(join(&full, oneof.name()), file);
        }
        for nested in &message.nested_type {
            self.message(file, &full, nested);
        }
        for enumeration in &message.enum_type {
            self.enumeration(file, &full, enumeration);
        }
        for extension in &message.extension {
            self.extension(file, &full, extension);
        }
        self.symbol(full, file);
    }

    fn enumeration(&mut self, file: &str, scope: &str, enumeration: &EnumDescriptorProto) {
        let full = join(scope, enumeration.name());
        for value in &enumeration.value {
            // Protobuf scopes a value beside its enum; tonic-reflection found it under the
            // enum: both names are answered.
            self.symbol(join(scope, value.name()), file);
            self.symbol(join(&full, value.name()), file);
        }
        self.symbol(full, file);
    }

    fn extension(&mut self, file: &str, scope: &str, extension: &FieldDescriptorProto) {
        self.symbol(join(scope, extension.name()), file);
        let extendee = extension.extendee().trim_start_matches('.');
        self.extensions
            .entry(extendee.to_owned())
            .or_default()
            .entry(extension.number())
            .or_insert_with(|| file.to_owned());
    }

    fn answer(&self, question: Question, sent: &mut HashSet<String>) -> Result<Found, Status> {
        match question {
            Question::File(name) => self
                .file_with_imports(&name, sent)
                .ok_or_else(|| Status::not_found(format!("file '{name}' not found"))),
            Question::Containing(symbol) => self
                .symbols
                .get(symbol.trim_start_matches('.'))
                .and_then(|file| self.file_with_imports(file, sent))
                .ok_or_else(|| Status::not_found(format!("symbol '{symbol}' not found"))),
            Question::Extension { of, number } => self
                .extensions
                .get(of.trim_start_matches('.'))
                .and_then(|numbers| numbers.get(&number))
                .and_then(|file| self.file_with_imports(file, sent))
                .ok_or_else(|| {
                    Status::not_found(format!("extension {number} of '{of}' not found"))
                }),
            // Never refused, even for a type the server does not know: some clients
            // (grpcurl) fail when this fails, which is why tonic-reflection answers it.
            Question::ExtensionNumbers(of) => {
                let numbers = self
                    .extensions
                    .get(of.trim_start_matches('.'))
                    .map(|numbers| numbers.keys().copied().collect())
                    .unwrap_or_default();
                Ok(Found::Numbers { of, numbers })
            }
            Question::Services => Ok(Found::Services(self.services.clone())),
        }
    }

    /// The file `name`, then every file it imports (directly or not) that the server
    /// holds and the call has not sent yet; `None` for a file it does not hold.
    fn file_with_imports<'a>(&'a self, name: &'a str, sent: &mut HashSet<String>) -> Option<Found> {
        let asked = self.files.get(name)?;
        sent.insert(name.to_owned());
        let mut files = vec![asked.encoded.to_vec()];
        let mut seen = HashSet::from([name]);
        let mut queue: VecDeque<&str> = asked.imports.iter().map(String::as_str).collect();
        while let Some(next) = queue.pop_front() {
            if !seen.insert(next) {
                continue;
            }
            // An import it lacks (often a well-known type) is left to the client.
            let Some(file) = self.files.get(next) else {
                continue;
            };
            if sent.insert(next.to_owned()) {
                files.push(file.encoded.to_vec());
            }
            queue.extend(file.imports.iter().map(String::as_str));
        }
        Some(Found::Files(files))
    }
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// A request of either protocol (the same messages in two packages).
enum Question {
    File(String),
    Containing(String),
    Extension { of: String, number: i32 },
    ExtensionNumbers(String),
    Services,
}

/// An answer of either protocol.
enum Found {
    Files(Vec<Vec<u8>>),
    Numbers { of: String, numbers: Vec<i32> },
    Services(Vec<String>),
}

type Answer<Q, A> = fn(&Index, &mut HashSet<String>, Q) -> Result<A, Status>;

/// One answer per request, in order, until the client ends its stream or a request is
/// refused (with that status, which ends the call).
fn answers<Q, A>(
    requests: tonic::Streaming<Q>,
    index: Arc<Index>,
    answer: Answer<Q, A>,
) -> BoxStream<'static, Result<A, Status>>
where
    Q: Send + 'static,
    A: Send + 'static,
{
    let state = Some((requests, index, HashSet::new()));
    futures_util::stream::unfold(state, move |state| async move {
        let (mut requests, index, mut sent) = state?;
        // A request stream that broke has no one left to answer.
        let request = requests.next().await?.ok()?;
        match answer(&index, &mut sent, request) {
            Ok(reply) => Some((Ok(reply), Some((requests, index, sent)))),
            Err(status) => Some((Err(status), None)),
        }
    })
    .boxed()
}

/// The service of one protocol, written once over its package.
macro_rules! protocol {
    ($name:ident, $pb:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name {
            index: Arc<Index>,
        }

        #[tonic::async_trait]
        impl $pb::server_reflection_server::ServerReflection for $name {
            type ServerReflectionInfoStream =
                BoxStream<'static, Result<$pb::ServerReflectionResponse, Status>>;

            async fn server_reflection_info(
                &self,
                request: tonic::Request<tonic::Streaming<$pb::ServerReflectionRequest>>,
            ) -> Result<tonic::Response<Self::ServerReflectionInfoStream>, Status> {
                use $pb::server_reflection_request::MessageRequest as Request;
                use $pb::server_reflection_response::MessageResponse as Response;
                let answer = |index: &Index,
                              sent: &mut HashSet<String>,
                              request: $pb::ServerReflectionRequest| {
                    let question = match request.message_request.clone() {
                        Some(Request::FileByFilename(name)) => Question::File(name),
                        Some(Request::FileContainingSymbol(symbol)) => Question::Containing(symbol),
                        Some(Request::FileContainingExtension(extension)) => Question::Extension {
                            of: extension.containing_type,
                            number: extension.extension_number,
                        },
                        Some(Request::AllExtensionNumbersOfType(of)) => {
                            Question::ExtensionNumbers(of)
                        }
                        Some(Request::ListServices(_)) => Question::Services,
                        None => return Err(Status::invalid_argument("invalid MessageRequest")),
                    };
                    let response = match index.answer(question, sent)? {
                        Found::Files(files) => {
                            Response::FileDescriptorResponse($pb::FileDescriptorResponse {
                                file_descriptor_proto: files,
                            })
                        }
                        Found::Numbers { of, numbers } => {
                            Response::AllExtensionNumbersResponse($pb::ExtensionNumberResponse {
                                base_type_name: of,
                                extension_number: numbers,
                            })
                        }
                        Found::Services(names) => {
                            Response::ListServicesResponse($pb::ListServiceResponse {
                                service: names
                                    .into_iter()
                                    .map(|name| $pb::ServiceResponse { name })
                                    .collect(),
                            })
                        }
                    };
                    Ok($pb::ServerReflectionResponse {
                        valid_host: request.host.clone(),
                        original_request: Some(request),
                        message_response: Some(response),
                    })
                };
                Ok(tonic::Response::new(answers(
                    request.into_inner(),
                    Arc::clone(&self.index),
                    answer,
                )))
            }
        }
    };
}

protocol!(
    V1,
    v1,
    "`grpc.reflection.v1.ServerReflection` over the files of a [`Builder`]."
);
protocol!(
    V1Alpha,
    v1alpha,
    "`grpc.reflection.v1alpha.ServerReflection` over the files of a [`Builder`]."
);
