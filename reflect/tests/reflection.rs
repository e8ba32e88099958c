//! The client against real tonic reflection servers on loopback: one speaking only v1,
//! one only v1alpha (as several languages' stock servers do), and one with none.

use prost::Message;
use prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    MethodDescriptorProto, ServiceDescriptorProto, field_descriptor_proto,
};
use reflect::{Protocol, ReflectError, Reflection};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

/// `shelf.v1.Shelf`, whose message imports a well-known type the server does not hold.
fn shelf_file() -> FileDescriptorProto {
    let stamp = FieldDescriptorProto {
        name: Some("at".into()),
        number: Some(1),
        label: Some(field_descriptor_proto::Label::Optional as i32),
        r#type: Some(field_descriptor_proto::Type::Message as i32),
        type_name: Some(".google.protobuf.Timestamp".into()),
        json_name: Some("at".into()),
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some("shelf/v1/shelf.proto".into()),
        package: Some("shelf.v1".into()),
        dependency: vec!["google/protobuf/timestamp.proto".into()],
        message_type: vec![DescriptorProto {
            name: Some("Stamp".into()),
            field: vec![stamp],
            ..Default::default()
        }],
        service: vec![ServiceDescriptorProto {
            name: Some("Shelf".into()),
            method: vec![MethodDescriptorProto {
                name: Some("Touch".into()),
                input_type: Some(".shelf.v1.Stamp".into()),
                output_type: Some(".shelf.v1.Stamp".into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

fn encoded_set() -> Vec<u8> {
    FileDescriptorSet {
        file: vec![shelf_file()],
    }
    .encode_to_vec()
}

enum Speaks {
    V1,
    V1Alpha,
    Nothing,
}

/// A server on a loopback port the OS picks, and a channel to it.
async fn serve(speaks: Speaks) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let set: &'static [u8] = Box::leak(encoded_set().into_boxed_slice());
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(set)
            .with_service_name("shelf.v1.Shelf")
    };
    let router = match speaks {
        Speaks::V1 => Server::builder().add_service(builder().build_v1().unwrap()),
        Speaks::V1Alpha => Server::builder().add_service(builder().build_v1alpha().unwrap()),
        Speaks::Nothing => Server::builder().add_service(
            tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer::new(
                Unanswering,
            ),
        ),
    };
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A v1 reflection service that answers every call UNIMPLEMENTED, as a server without
/// reflection does.
struct Unanswering;

#[tonic::async_trait]
impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection for Unanswering {
    type ServerReflectionInfoStream = tokio_stream::Empty<
        Result<tonic_reflection::pb::v1::ServerReflectionResponse, tonic::Status>,
    >;

    async fn server_reflection_info(
        &self,
        _request: tonic::Request<
            tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionRequest>,
        >,
    ) -> Result<tonic::Response<Self::ServerReflectionInfoStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
}

#[tokio::test]
async fn a_v1_server_lists_its_services_and_its_files_come_with_the_well_known_imports() {
    let mut reflection = Reflection::new(serve(Speaks::V1).await);
    let services = reflection.list_services().await.unwrap();
    assert!(
        services.contains(&"shelf.v1.Shelf".to_owned()),
        "{services:?}"
    );
    let files = reflection
        .files_of(&["shelf.v1.Shelf".to_owned()])
        .await
        .unwrap();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["google/protobuf/timestamp.proto", "shelf/v1/shelf.proto"]
    );
    assert_eq!(reflection.protocol(), Protocol::V1);
}

#[tokio::test]
async fn a_server_with_only_v1alpha_is_read_through_it_and_the_client_remembers() {
    let mut reflection = Reflection::new(serve(Speaks::V1Alpha).await);
    let services = reflection.list_services().await.unwrap();
    assert!(
        services.contains(&"shelf.v1.Shelf".to_owned()),
        "{services:?}"
    );
    assert_eq!(reflection.protocol(), Protocol::V1Alpha);
    let files = reflection
        .files_of(&["shelf.v1.Shelf".to_owned()])
        .await
        .unwrap();
    assert!(files.contains_key("shelf/v1/shelf.proto"));
}

#[tokio::test]
async fn a_server_without_reflection_is_said_to_serve_none() {
    let mut reflection = Reflection::new(serve(Speaks::Nothing).await);
    let refused = reflection.list_services().await.unwrap_err();
    assert!(matches!(refused, ReflectError::NotServed), "{refused:?}");
    assert!(refused.to_string().contains("v1alpha"), "{refused}");
}

#[tokio::test]
async fn a_symbol_the_server_does_not_know_is_refused_naming_it() {
    let mut reflection = Reflection::new(serve(Speaks::V1Alpha).await);
    let refused = reflection
        .file_containing("nothing.v1.Nowhere")
        .await
        .unwrap_err();
    let code = refused.status().map(tonic::Status::code);
    assert_eq!(code, Some(tonic::Code::NotFound), "{refused:?}");
    assert!(
        refused.to_string().contains("nothing.v1.Nowhere"),
        "{refused}"
    );
}
