//! The reflection server of this crate on loopback, read by the client of this crate and
//! by raw requests: a file's custom options reach the reader, both protocols answer, and
//! names it does not know are NOT_FOUND.

use prost_reflect::{DescriptorPool, Value};
use reflect::server::Builder;
use reflect::{Protocol, ReflectedFile, Reflection};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic_reflection::pb::v1;
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

const LIBRARY: &str = "tagged/v1/library.proto";
const DESCRIPTOR: &str = "google/protobuf/descriptor.proto";

/// A method with a custom option (an extension of `MethodOptions`, as `google.api.http`
/// is), and a nested message.
const LIBRARY_SOURCE: &str = r#"
syntax = "proto3";
package tagged.v1;

import "google/protobuf/descriptor.proto";

extend google.protobuf.MethodOptions {
  string tag = 50001;
}

message Shelf {
  message Book {
    string title = 1;
  }
  repeated Book books = 1;
}

service Library {
  rpc Lend(Shelf) returns (Shelf) {
    option (tag) = "x";
  }
}
"#;

/// The library file, from memory; the well-known files from protox's own copy.
struct Sources;

impl protox::file::FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == LIBRARY {
            protox::file::File::from_source(name, LIBRARY_SOURCE)
        } else {
            protox::file::GoogleFileResolver::new().open_file(name)
        }
    }
}

/// The library and its imports, encoded by protox with their options.
fn encoded_set() -> Vec<u8> {
    let mut compiler = protox::Compiler::with_file_resolver(Sources);
    compiler
        .include_imports(true)
        .open_file(LIBRARY)
        .expect("the test proto compiles");
    compiler.encode_file_descriptor_set()
}

/// Both protocols of `builder` on a loopback port the OS picks, and a channel to them.
async fn serve(builder: Builder) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Server::builder()
        .add_service(builder.clone().build_v1().unwrap())
        .add_service(builder.build_v1alpha().unwrap());
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn library_server() -> Channel {
    serve(Builder::new().register_encoded_file_descriptor_set(encoded_set())).await
}

/// The answers to `requests` sent on one v1 call, up to the first refusal.
async fn ask_v1(
    channel: Channel,
    requests: Vec<MessageRequest>,
) -> Vec<Result<MessageResponse, tonic::Status>> {
    let requests = requests
        .into_iter()
        .map(|request| v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        });
    let mut replies = v1::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(futures_util::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    loop {
        match replies.message().await {
            Ok(Some(reply)) => answers.push(
                reply
                    .message_response
                    .ok_or_else(|| tonic::Status::internal("a reply without an answer")),
            ),
            Ok(None) => return answers,
            Err(status) => {
                answers.push(Err(status));
                return answers;
            }
        }
    }
}

fn names(files: &[ReflectedFile]) -> Vec<&str> {
    files.iter().map(ReflectedFile::name).collect()
}

fn file_names(answer: &Result<MessageResponse, tonic::Status>) -> Vec<String> {
    match answer {
        Ok(MessageResponse::FileDescriptorResponse(found)) => found
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                ReflectedFile::decode(bytes.clone())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect(),
        other => panic!("not files: {other:?}"),
    }
}

#[tokio::test]
async fn a_custom_method_option_served_is_read_back_by_the_client_with_its_value() {
    let mut reflection = Reflection::new(library_server().await);
    let files = reflection
        .files_of(&["tagged.v1.Library".to_owned()])
        .await
        .unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), [DESCRIPTOR, LIBRARY]);

    let set = reflect::encode_file_descriptor_set(files.values().map(|f| f.encoded.clone()));
    let mut pool = DescriptorPool::new();
    pool.decode_file_descriptor_set(set.as_slice()).unwrap();
    let tag = pool.get_extension_by_name("tagged.v1.tag").unwrap();
    let lend = pool
        .get_service_by_name("tagged.v1.Library")
        .and_then(|service| service.methods().find(|m| m.name() == "Lend"))
        .unwrap();
    let options = lend.options();
    assert!(options.has_extension(&tag), "{options:?}");
    assert_eq!(*options.get_extension(&tag), Value::String("x".to_owned()));
}

#[tokio::test]
async fn both_protocols_list_the_services_with_their_own_reflection_service() {
    let channel = library_server().await;
    for (protocol, itself) in [
        (Protocol::V1, "grpc.reflection.v1.ServerReflection"),
        (
            Protocol::V1Alpha,
            "grpc.reflection.v1alpha.ServerReflection",
        ),
    ] {
        let mut reflection = Reflection::speaking(channel.clone(), protocol);
        let services = reflection.list_services().await.unwrap();
        assert_eq!(services, ["tagged.v1.Library", itself], "{protocol:?}");
        let files = reflection
            .file_containing("tagged.v1.Library")
            .await
            .unwrap();
        assert_eq!(names(&files), [LIBRARY, DESCRIPTOR], "{protocol:?}");
        assert_eq!(reflection.protocol(), protocol);
    }
}

#[tokio::test]
async fn named_services_are_the_only_ones_listed() {
    let builder = Builder::new()
        .register_encoded_file_descriptor_set(encoded_set())
        .with_service_name("tagged.v1.Library");
    let mut reflection = Reflection::new(serve(builder).await);
    let services = reflection.list_services().await.unwrap();
    assert_eq!(services, ["tagged.v1.Library"]);
}

#[tokio::test]
async fn a_method_and_a_nested_message_are_found_in_their_file_with_its_imports() {
    let mut reflection = Reflection::new(library_server().await);
    for symbol in [
        "tagged.v1.Library.Lend",
        "tagged.v1.Shelf.Book",
        "tagged.v1.tag",
    ] {
        let files = reflection.file_containing(symbol).await.unwrap();
        assert_eq!(names(&files), [LIBRARY, DESCRIPTOR], "{symbol}");
    }
    let files = reflection.file_by_name(LIBRARY).await.unwrap();
    assert_eq!(names(&files), [LIBRARY, DESCRIPTOR]);
}

#[tokio::test]
async fn unknown_symbols_files_and_extensions_are_not_found_by_name() {
    let mut reflection = Reflection::new(library_server().await);
    let refused = reflection
        .file_containing("nothing.v1.Nowhere")
        .await
        .unwrap_err();
    let status = refused.status().unwrap();
    assert_eq!(status.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(
        status.message().contains("nothing.v1.Nowhere"),
        "{status:?}"
    );

    let refused = reflection.file_by_name("nowhere.proto").await.unwrap_err();
    let code = refused.status().map(tonic::Status::code);
    assert_eq!(code, Some(tonic::Code::NotFound), "{refused:?}");

    let answers = ask_v1(
        library_server().await,
        vec![MessageRequest::FileContainingExtension(
            v1::ExtensionRequest {
                containing_type: "google.protobuf.MethodOptions".into(),
                extension_number: 50002,
            },
        )],
    )
    .await;
    let [Err(status)] = answers.as_slice() else {
        panic!("not refused: {answers:?}");
    };
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn an_extension_is_found_by_the_type_it_extends_and_its_number() {
    let answers = ask_v1(
        library_server().await,
        vec![
            MessageRequest::AllExtensionNumbersOfType("google.protobuf.MethodOptions".into()),
            MessageRequest::FileContainingExtension(v1::ExtensionRequest {
                containing_type: "google.protobuf.MethodOptions".into(),
                extension_number: 50001,
            }),
            // A type nothing extends has none, as tonic-reflection answers, not an error.
            MessageRequest::AllExtensionNumbersOfType("tagged.v1.Shelf".into()),
        ],
    )
    .await;
    let [numbers, file, none] = answers.as_slice() else {
        panic!("three answers expected: {answers:?}");
    };
    let Ok(MessageResponse::AllExtensionNumbersResponse(numbers)) = numbers else {
        panic!("not numbers: {numbers:?}");
    };
    assert_eq!(numbers.base_type_name, "google.protobuf.MethodOptions");
    assert_eq!(numbers.extension_number, [50001]);
    assert_eq!(file_names(file), [LIBRARY, DESCRIPTOR]);
    let Ok(MessageResponse::AllExtensionNumbersResponse(none)) = none else {
        panic!("not numbers: {none:?}");
    };
    assert!(none.extension_number.is_empty(), "{none:?}");
}

#[tokio::test]
async fn a_file_already_sent_on_the_call_is_not_sent_again_as_an_import() {
    let answers = ask_v1(
        library_server().await,
        vec![
            MessageRequest::FileContainingSymbol("tagged.v1.Library".into()),
            MessageRequest::FileContainingSymbol("tagged.v1.Shelf".into()),
            MessageRequest::FileByFilename(DESCRIPTOR.into()),
        ],
    )
    .await;
    let names: Vec<Vec<String>> = answers.iter().map(file_names).collect();
    assert_eq!(
        names,
        [vec![LIBRARY, DESCRIPTOR], vec![LIBRARY], vec![DESCRIPTOR]]
    );
}

#[test]
fn bytes_that_are_no_descriptor_set_are_refused_when_built() {
    let built = Builder::new()
        .register_encoded_file_descriptor_set(vec![0x0a, 0x05, b'a'])
        .build_v1();
    assert!(
        matches!(built, Err(reflect::server::BuildError::BadSet(_))),
        "{built:?}"
    );
}
