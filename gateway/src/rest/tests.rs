//! Rules read from a real annotated proto (compiled with protox, options kept) and
//! requests bound to its messages as grpc-gateway's documentation describes them.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::{Value, json};

use super::binding::{request_message, response_json};
use super::rule::{BodyRule, HttpRule, RuleError, rules_of};
use super::template::RouteTable;

const LIBRARY: &str = r#"
syntax = "proto3";
package library.v1;
import "google/api/annotations.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";

service Library {
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/{name=shelves/*/books/*}" };
  }
  rpc ListBooks(ListBooksRequest) returns (ListBooksResponse) {
    option (google.api.http) = {
      get: "/v1/{parent=shelves/*}/books"
      response_body: "books"
      additional_bindings { get: "/v1/books" }
    };
  }
  rpc CreateBook(CreateBookRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/{parent=shelves/*}/books" body: "book" };
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = { patch: "/v1/{book.name=shelves/*/books/*}" body: "book" };
  }
  rpc MoveBook(MoveBookRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/{name=shelves/*/books/*}:move" body: "*" };
  }
  rpc DeleteBook(GetBookRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = { delete: "/v1/{name=shelves/*/books/*}" };
  }
  rpc Check(GetBookRequest) returns (Book) {
    option (google.api.http) = { custom: { kind: "HEAD" path: "/v1/{name=shelves/*/books/*}" } };
  }
  rpc Broken(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/{missing}" };
  }
  rpc Plain(GetBookRequest) returns (Book);
}

message Book {
  string name = 1;
  string title = 2;
  Author author = 3;
  repeated string tags = 4;
  int64 pages = 5;
  bool read = 6;
}
message Author { string name = 1; int32 born = 2; }
message GetBookRequest { string name = 1; }
message Filter { string author = 1; bool read = 2; }
message ListBooksRequest {
  string parent = 1;
  int32 page_size = 2;
  Filter filter = 3;
  repeated string tags = 4;
}
message ListBooksResponse { repeated Book books = 1; string next_page_token = 2; }
message CreateBookRequest { string parent = 1; Book book = 2; }
message UpdateBookRequest { Book book = 1; google.protobuf.FieldMask update_mask = 2; }
message MoveBookRequest { string name = 1; string other_shelf = 2; }
"#;

/// The library proto, compiled once for all the tests (they run in parallel).
fn library() -> DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rust-ms-rest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("library.proto"), LIBRARY).unwrap();
        let annotations = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-ms-build/proto");
        let pool = protox::Compiler::new([dir.as_path(), std::path::Path::new(annotations)])
            .unwrap()
            .include_imports(true)
            .open_file("library.proto")
            .unwrap()
            .descriptor_pool();
        let _ = std::fs::remove_dir_all(&dir);
        pool
    })
    .clone()
}

fn method(pool: &DescriptorPool, name: &str) -> MethodDescriptor {
    let service = pool.get_service_by_name("library.v1.Library").unwrap();
    service.methods().find(|m| m.name() == name).unwrap()
}

/// Every rule of the service in one table, as the gateway builds it.
fn table(pool: &DescriptorPool) -> RouteTable<(MethodDescriptor, HttpRule)> {
    let service = pool.get_service_by_name("library.v1.Library").unwrap();
    let mut table = RouteTable::new();
    for method in service.methods() {
        for rule in rules_of(&method).into_iter().flatten() {
            let verb = rule.method.clone();
            let template = rule.template.clone();
            table
                .insert(verb, template, (method.clone(), rule))
                .unwrap();
        }
    }
    table
}

/// The JSON of the message a request becomes.
fn bound(verb: Method, path_and_query: &str, body: Option<Value>) -> Result<Value, String> {
    let pool = library();
    let routes = table(&pool);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let ((method, rule), bindings) = routes
        .find(&verb, path)
        .ok_or_else(|| format!("no route for {verb} {path}"))?;
    let message = request_message(&method.input(), rule, bindings, query, body)
        .map_err(|failure| failure.message.clone())?;
    crate::transcode::to_json(&message).map_err(|f| f.message.clone())
}

#[test]
fn rules_are_read_from_the_option_with_their_additional_bindings_and_bad_ones_named() {
    let pool = library();
    let get = rules_of(&method(&pool, "GetBook"));
    let [Ok(rule)] = get.as_slice() else {
        panic!("{get:?}")
    };
    assert_eq!(rule.method, Method::GET);
    assert_eq!(rule.template.as_str(), "/v1/{name=shelves/*/books/*}");
    assert_eq!(rule.body, BodyRule::None);

    let list = rules_of(&method(&pool, "ListBooks"));
    assert_eq!(list.len(), 2);
    let paths: Vec<String> = list
        .iter()
        .map(|rule| rule.as_ref().unwrap().template.as_str().to_owned())
        .collect();
    assert_eq!(paths, ["/v1/{parent=shelves/*}/books", "/v1/books"]);
    assert_eq!(
        list[0].as_ref().unwrap().response_body.as_deref(),
        Some("books")
    );

    let custom = rules_of(&method(&pool, "Check"));
    assert_eq!(custom[0].as_ref().unwrap().method, Method::HEAD);

    let broken = rules_of(&method(&pool, "Broken"));
    assert!(
        matches!(&broken[..], [Err(RuleError::NoSuchPathField { path, .. })] if path == "missing"),
        "{broken:?}"
    );
    assert!(rules_of(&method(&pool, "Plain")).is_empty());
}

#[test]
fn a_nested_path_variable_fills_the_field_it_names() {
    let book = bound(Method::GET, "/v1/shelves/1/books/2", None).unwrap();
    assert_eq!(book["name"], "shelves/1/books/2");
}

#[test]
fn fields_bound_neither_by_path_nor_body_come_from_the_query_nested_and_repeated() {
    let request = bound(
        Method::GET,
        "/v1/shelves/s1/books?pageSize=10&filter.author=ada%20l&filter.read=true&tags=a&tags=b",
        None,
    )
    .unwrap();
    assert_eq!(request["parent"], "shelves/s1");
    assert_eq!(request["pageSize"], 10);
    assert_eq!(
        request["filter"],
        json!({ "author": "ada l", "read": true })
    );
    assert_eq!(request["tags"], json!(["a", "b"]));
}

#[test]
fn an_additional_binding_reaches_the_same_method() {
    let request = bound(Method::GET, "/v1/books?page_size=3", None).unwrap();
    assert_eq!(request["parent"], "");
    assert_eq!(request["pageSize"], 3);
}

#[test]
fn a_body_field_takes_the_body_and_the_path_the_rest() {
    let body = json!({ "title": "Dune", "pages": "412" });
    let request = bound(Method::POST, "/v1/shelves/s1/books", Some(body)).unwrap();
    assert_eq!(request["parent"], "shelves/s1");
    assert_eq!(request["book"]["title"], "Dune");
    assert_eq!(request["book"]["pages"], "412");
}

#[test]
fn a_patch_without_a_mask_gets_one_naming_the_body_fields_sent() {
    let body = json!({ "title": "Dune", "author": { "name": "Herbert" } });
    let request = bound(Method::PATCH, "/v1/shelves/1/books/2", Some(body.clone())).unwrap();
    assert_eq!(request["book"]["name"], "shelves/1/books/2");
    assert_eq!(request["updateMask"], "author.name,title");

    // A mask the caller sent is the caller's.
    let request = bound(
        Method::PATCH,
        "/v1/shelves/1/books/2?updateMask=title",
        Some(body),
    )
    .unwrap();
    assert_eq!(request["updateMask"], "title");
}

#[test]
fn body_star_with_a_verb_takes_every_field_but_the_path_from_the_body() {
    let body = json!({ "otherShelf": "shelves/9" });
    let request = bound(Method::POST, "/v1/shelves/1/books/2:move", Some(body)).unwrap();
    assert_eq!(request["name"], "shelves/1/books/2");
    assert_eq!(request["otherShelf"], "shelves/9");
}

#[test]
fn a_response_body_field_is_the_whole_reply() {
    let pool = library();
    let list = method(&pool, "ListBooks");
    let rule = rules_of(&list).remove(0).unwrap();
    let json = json!({ "books": [{ "title": "Dune" }], "nextPageToken": "t" });
    let reply = DynamicMessage::deserialize(list.output(), json).unwrap();
    let body = response_json(&reply, &rule).unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body[0]["title"], "Dune");
}

#[test]
fn bad_query_parameters_are_refused_naming_them() {
    let unknown = bound(Method::GET, "/v1/shelves/s1/books?color=red", None).unwrap_err();
    assert!(unknown.contains("\"color\""), "{unknown}");
    let not_a_bool = bound(Method::GET, "/v1/books?filter.read=yes", None).unwrap_err();
    assert!(
        not_a_bool.contains("filter.read") && not_a_bool.contains("true or false"),
        "{not_a_bool}"
    );
    let taken = bound(Method::GET, "/v1/shelves/s1/books?parent=x", None).unwrap_err();
    assert!(taken.contains("bound by the path"), "{taken}");
    let not_a_number = bound(Method::GET, "/v1/books?pageSize=many", None).unwrap_err();
    assert!(not_a_number.contains("pageSize"), "{not_a_number}");
}

#[test]
fn two_services_with_one_route_resolve_by_name_and_the_loser_is_listed_with_the_owner() {
    let pool = library();
    let methods: Vec<MethodDescriptor> = pool
        .get_service_by_name("library.v1.Library")
        .unwrap()
        .methods()
        .collect();
    let services = [
        ("beta".to_owned(), methods.clone()),
        ("alpha".to_owned(), methods),
    ]
    .into_iter()
    .collect();
    let table = super::table::RestTable::build(&services);
    let (route, _) = table.find(&Method::GET, "/v1/shelves/1/books/2").unwrap();
    assert_eq!(route.service, "alpha");
    let lost: Vec<_> = table
        .refused()
        .iter()
        .filter(|refused| {
            refused.service == "beta" && refused.route == "GET /v1/{name=shelves/*/books/*}"
        })
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", table.refused());
    assert!(
        lost[0]
            .reason
            .contains("library.v1.Library.GetBook of alpha"),
        "{:?}",
        lost[0]
    );
    // The rule that names no field is refused once per service, saying why.
    let broken = table
        .refused()
        .iter()
        .filter(|refused| refused.method == "library.v1.Library.Broken")
        .count();
    assert_eq!(broken, 2);
    assert_eq!(
        table.methods_at("/v1/shelves/1/books/2"),
        [Method::GET, Method::HEAD, Method::PATCH, Method::DELETE]
    );
}
