//! `GET /openapi.json` on the gateway's public port: an OpenAPI 3.1 document of the
//! cluster's REST routes (a Python node's `google.api.http` annotations) and `/api`
//! methods (a rust-ms `user` node), live as services join, checked by an independent
//! validator (Python's openapi-spec-validator).

use std::time::Duration;

use serde_json::{Value, json};
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

/// `GetBook`'s `/v1/{name=shelves/*/books/*}` as OpenAPI writes it.
const BOOK_PATH: &str = "/v1/shelves/{name.1}/books/{name.3}";

/// The document at `url` once `ready` holds for it, or a failure after [`PATIENCE`].
async fn document_when(url: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let client = HttpClient::default();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = client.get(url).await.expect("the gateway answers");
        if reply.status == 200 && ready(&reply.body) {
            return reply.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} not as expected after {PATIENCE:?}: {} {}",
            reply.status,
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has_path(document: &Value, path: &str) -> bool {
    document["paths"].get(path).is_some()
}

/// Runs openapi-spec-validator on `document`: `Err` with what it said when it refuses.
fn validate(document: &Value) -> Result<(), String> {
    let check = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .status();
    assert!(
        check.is_ok_and(|status| status.success()),
        "this test needs python3 with openapi-spec-validator (scripts/install-deps.sh installs it)"
    );
    let file = std::env::temp_dir().join(format!("rust-ms-openapi-{}.json", std::process::id()));
    std::fs::write(&file, document.to_string()).expect("write the document");
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "from openapi_spec_validator import validate; import json, sys; \
             validate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .expect("run the validator");
    let _ = std::fs::remove_file(&file);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The schema a `#/components/schemas/...` reference names.
fn resolve<'d>(document: &'d Value, reference: &Value) -> &'d Value {
    let name = reference
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("not a schema reference: {reference}"));
    let schema = &document["components"]["schemas"][name];
    assert!(schema.is_object(), "{name} is not in components.schemas");
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn the_gateway_serves_a_live_valid_openapi_document_of_rest_routes_and_api_methods() {
    let etcd = require!(Etcd::start().await);
    let (_python, address) = tests::python::start_node("library_node.py").await;
    let gateway = Node::on_etcd("gateway", "gateway", &etcd.etcd_addr(), &[]);
    let http = gateway.listening("http").await;
    etcd.register_bare("library", "python-1", &address).await;
    let whole = format!("http://{http}/openapi.json");

    // The library's routes show within seconds of it joining.
    let first = document_when(&whole, |doc| has_path(doc, BOOK_PATH)).await;
    assert_eq!(first["openapi"], "3.1.0");
    assert_eq!(first["info"]["title"], "rust-ms gateway");
    assert!(first["info"]["version"].is_string());

    // A service joining later is in the document within seconds too.
    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
    user.listening("rpc").await;
    let document = document_when(&whole, |doc| {
        has_path(doc, "/api/user/Register") && has_path(doc, BOOK_PATH)
    })
    .await;
    if let Err(complaint) = validate(&document) {
        panic!("openapi-spec-validator refuses the document: {complaint}\n{document:#}");
    }

    // GetBook's and UpdateBook's templates (`{name=...}`, `{book.name=...}`) differ only
    // in names: one path, GetBook's names.
    let book = &document["paths"][BOOK_PATH];
    for verb in ["get", "patch", "delete"] {
        assert!(book[verb].is_object(), "no {verb} at {BOOK_PATH}: {book:#}");
    }
    assert!(
        !has_path(&document, "/v1/shelves/{book.name.1}/books/{book.name.3}"),
        "{:#}",
        document["paths"]
    );
    assert!(has_path(
        &document,
        "/v1/shelves/{name.1}/books/{name.3}:move"
    ));
    let list = &document["paths"]["/v1/shelves/{parent.1}/books"]["get"];
    let query: Vec<&str> = list["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(query, ["pageSize", "filter.author", "filter.read", "tags"]);

    // Schema facts: an int64 is a string, a $ref resolves through the messages.
    let get = &document["paths"]["/api/user/Get"];
    assert!(get["get"].is_object(), "Get is NO_SIDE_EFFECTS: GET too");
    assert!(document["paths"]["/api/user/Register"]["get"].is_null());
    let reply = resolve(
        &document,
        &get["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
    );
    let account = resolve(&document, &reply["properties"]["user"]["$ref"]);
    assert_eq!(
        account["properties"]["createdAtMs"],
        json!({ "type": "string", "format": "int64" })
    );
    // A server stream is answered over /api as JSON lines or events, and says so.
    let listing = &document["paths"]["/api/user/List"]["post"]["responses"]["200"]["content"];
    assert!(
        listing["application/x-ndjson"]["schema"]["$ref"].is_string()
            && listing["text/event-stream"].is_object(),
        "{listing:#}"
    );
    // One service's document has that service only, and validates too.
    let users = document_when(&format!("http://{http}/openapi/user.json"), |_| true).await;
    let paths: Vec<&String> = users["paths"].as_object().expect("paths").keys().collect();
    assert!(
        paths.iter().any(|p| *p == "/api/user/Register"),
        "{paths:?}"
    );
    assert!(
        paths.iter().all(|p| p.starts_with("/api/user/")),
        "{paths:?}"
    );
    validate(&users).unwrap_or_else(|complaint| panic!("user.json refused: {complaint}"));
    let library = document_when(&format!("http://{http}/openapi/library.json"), |_| true).await;
    assert!(has_path(&library, BOOK_PATH));
    assert!(!has_path(&library, "/api/user/Register"));
    let nobody = HttpClient::default()
        .get(&format!("http://{http}/openapi/nobody.json"))
        .await
        .expect("the gateway answers");
    assert_eq!(nobody.status, 404, "{}", nobody.text);

    // Turned off, there is no document.
    let closed = Node::on_etcd(
        "gateway",
        "gateway-closed",
        &etcd.etcd_addr(),
        &[("MS_GATEWAY__OPENAPI", "false")],
    );
    let closed_http = closed.listening("http").await;
    for path in ["/openapi.json", "/openapi/user.json"] {
        let reply = HttpClient::default()
            .get(&format!("http://{closed_http}{path}"))
            .await
            .expect("the gateway answers");
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
    }

    closed.sigterm().await;
    user.sigterm().await;
    gateway.sigterm().await;
}
