//! REST routes from `google.api.http`, served by the gateway with no configuration: a
//! Python node (`tests/python/library_node.py`, grpcio, stock v1alpha reflection,
//! registered by a bare JSON value) annotates its methods as grpc-gateway's documentation
//! writes them, and the gateway's public port answers those paths.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tests::etcd::Etcd;
use tests::http::{HttpClient, Reply};
use tests::process::Node;
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

struct Rest {
    client: HttpClient,
    base: String,
}

impl Rest {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.client
            .send(method, &format!("{}{path}", self.base), &[], body)
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let reply = self.send(method, path, body).await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text);
        reply.body
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn annotated_methods_of_a_python_node_answer_their_rest_paths_through_the_gateway() {
    let etcd = require!(Etcd::start().await);
    let (_python, address) = tests::python::start_node("library_node.py").await;
    let gateway = Node::on_etcd("gateway", "gateway", &etcd.etcd_addr(), &[]);
    let http = gateway.listening("http").await;
    let admin = gateway.listening("admin").await;
    etcd.register_bare("library", "python-1", &address).await;
    let rest = Rest {
        client: HttpClient::default(),
        base: format!("http://{http}"),
    };

    // The routes appear within seconds of the node joining.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let book = loop {
        let reply = rest.send("GET", "/v1/shelves/1/books/2", None).await;
        if reply.status == 200 {
            break reply.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no REST route after {PATIENCE:?}: {} {}",
            reply.status,
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A path variable spanning segments fills its field whole.
    assert_eq!(book["name"], "shelves/1/books/2");
    assert_eq!(book["title"], "Dune");

    // Fields neither path nor body binds come from the query: nested, repeated, camelCase
    // or proto names; `response_body` makes one field the whole reply.
    let books = rest
        .ok(
            "GET",
            "/v1/shelves/s1/books?pageSize=3&filter.author=Le%20Guin&tags=a&tags=b",
            None,
        )
        .await;
    let books = books.as_array().expect("response_body: books is a list");
    assert_eq!(books.len(), 3);
    assert_eq!(books[0]["name"], "shelves/s1/books/0");
    assert_eq!(books[0]["author"], "Le Guin");
    assert_eq!(books[0]["tags"], json!(["a", "b"]));
    // An additional binding reaches the same method; it has no response_body of its own,
    // so its reply is the whole message.
    let unparented = rest.ok("GET", "/v1/books?page_size=1", None).await;
    assert_eq!(unparented["books"][0]["name"], "/books/0");
    assert_eq!(unparented["nextPageToken"], "more");

    // `body: "book"`: the body is that field; the path fills the rest.
    let created = rest
        .ok(
            "POST",
            "/v1/shelves/s1/books",
            Some(json!({ "title": "The Dispossessed", "author": "Le Guin" })),
        )
        .await;
    assert_eq!(created["name"], "shelves/s1/books/new");
    assert_eq!(created["title"], "The Dispossessed");

    // PATCH without an update_mask: the gateway fills it from the body's keys.
    let patched = rest
        .ok(
            "PATCH",
            "/v1/shelves/1/books/2",
            Some(json!({ "title": "x", "author": "y" })),
        )
        .await;
    assert_eq!(patched["name"], "shelves/1/books/2");
    assert_eq!(patched["title"], "author,title", "the mask the service saw");

    // `body: "*"` with a custom verb.
    let moved = rest
        .ok(
            "POST",
            "/v1/shelves/1/books/2:move",
            Some(json!({ "otherShelf": "shelves/9" })),
        )
        .await;
    assert_eq!(moved["name"], "shelves/9/books/2");

    assert_eq!(
        rest.ok("DELETE", "/v1/shelves/1/books/2", None).await,
        json!({})
    );

    // The service's status maps as on /api; a verb the path does not take is 405 with
    // what it takes; a path no route has is 404; a bad query parameter is 400 naming it.
    let missing = rest.send("GET", "/v1/shelves/1/books/missing", None).await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_eq!(missing.body["message"], "no book shelves/1/books/missing");
    let put = rest.send("PUT", "/v1/shelves/1/books/2", None).await;
    assert_eq!(put.status, 405, "{}", put.text);
    assert_eq!(put.header("allow"), Some("GET, PATCH, DELETE"));
    let nowhere = rest.send("GET", "/v2/nothing", None).await;
    assert_eq!(nowhere.status, 404, "{}", nowhere.text);
    assert!(
        nowhere.text.contains("no route for GET /v2/nothing"),
        "{}",
        nowhere.text
    );
    let bad = rest.send("GET", "/v1/books?pageSize=many", None).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("pageSize"), "{}", bad.text);

    // /admin/routes lists the REST routes and where they go.
    let routes = HttpClient::default()
        .get(&format!("http://{admin}/admin/routes"))
        .await
        .expect("the admin port answers");
    let listed = routes.body["rest"]["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|route| route["path"] == "/v1/{name=shelves/*/books/*}"
                && route["method"] == "GET"
                && route["service"] == "library"
                && route["rpc"] == "library.v1.Library.GetBook"),
        "{}",
        routes.text
    );

    gateway.sigterm().await;
}
