//! `/api-docs` on the gateway's admin port: a page compiled into the binary that lists
//! the operations of the cluster's OpenAPI document and sends calls through the gateway,
//! read over plain HTTP and used from Chromium, in front of a real `user` node on etcd.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tests::browser::Browser;
use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::process::Node;
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

const ADMIN_TOKEN: &str = "admin-page-token";

/// A user node and a gateway whose admin port wants [`ADMIN_TOKEN`]; the gateway's
/// admin address.
async fn user_behind_a_gateway(etcd: &Etcd) -> (Node, Node, String) {
    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
    let gateway = Node::on_etcd(
        "gateway",
        "gateway",
        &etcd.etcd_addr(),
        &[("MS_ADMIN__TOKEN", ADMIN_TOKEN)],
    );
    let user_address = user.listening("rpc").await;
    let admin = gateway.listening("admin").await;
    gateway
        .wait_for(
            &format!("Server [user] cluster [{user_address}] join"),
            PATIENCE,
        )
        .await;
    (user, gateway, admin)
}

fn with_token() -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {ADMIN_TOKEN}"))]
}

async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> tests::http::Reply {
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if body.is_some() {
        all.push(("content-type", "application/json"));
    }
    let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
    HttpClient::default()
        .send(method, url, &all, body)
        .await
        .expect("the admin port answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn the_admin_port_serves_a_self_contained_api_page_and_passes_its_calls_to_the_gateway_behind_the_admin_token()
 {
    let etcd = require!(Etcd::start().await);
    let (user, gateway, admin) = user_behind_a_gateway(&etcd).await;

    // The page itself is open, as the dashboard is, and brings everything it needs.
    let page = send("GET", &format!("http://{admin}/api-docs"), &[], None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(
        page.text.contains("/admin/api-docs/openapi.json"),
        "not the API page"
    );
    for fetched_from_elsewhere in [
        "<script src",
        "<link rel=\"stylesheet\"",
        "http://",
        "https://",
    ] {
        assert!(
            !page.text.contains(fetched_from_elsewhere),
            "the page fetches {fetched_from_elsewhere:?} from elsewhere"
        );
    }
    let index = send("GET", &format!("http://{admin}/admin"), &with_token(), None).await;
    assert_eq!(index.body["pages"], json!(["/api-docs"]), "{}", index.text);
    let missing = send("GET", &format!("http://{admin}/no-such-page"), &[], None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.text.contains("/api-docs"), "{}", missing.text);

    // What it reads and sends is the operator's: behind the admin token.
    let document_url = format!("http://{admin}/admin/api-docs/openapi.json");
    assert_eq!(send("GET", &document_url, &[], None).await.status, 401);
    let document = send("GET", &document_url, &with_token(), None).await;
    assert_eq!(document.status, 200, "{}", document.text);
    assert_eq!(document.body["openapi"], "3.1.0", "{}", document.text);
    assert!(
        document.body["paths"]["/api/user/Register"]["post"].is_object(),
        "{}",
        document.text
    );
    let register = format!("http://{admin}/admin/api-docs/try/api/user/Register");
    let account = json!({ "username": "pat", "password": "page-password" });
    assert_eq!(
        send("POST", &register, &[], Some(&account)).await.status,
        401
    );

    // A call from the page is the public port's call: same path, same answers.
    let registered = send("POST", &register, &with_token(), Some(&account)).await;
    assert_eq!(registered.status, 200, "{}", registered.text);
    assert!(registered.body["id"].is_string(), "{}", registered.text);
    let again = send("POST", &register, &with_token(), Some(&account)).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.body["code"], 6, "{}", again.text);
    let exists = send(
        "GET",
        &format!("http://{admin}/admin/api-docs/try/api/user/Exists?username=pat"),
        &with_token(),
        None,
    )
    .await;
    assert_eq!(exists.status, 200, "{}", exists.text);
    assert_eq!(exists.body, json!({ "exists": true }));

    gateway.sigterm().await;
    user.sigterm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
#[cfg_attr(no_chromium, ignore = "needs chromium (apt-get install chromium)")]
async fn an_operator_lists_the_operations_in_chromium_and_sends_calls_and_a_stream_from_the_page() {
    let etcd = require!(Etcd::start().await);
    let (user, gateway, admin) = user_behind_a_gateway(&etcd).await;
    let mut browser = Browser::launch(&format!("http://{admin}/api-docs#token={ADMIN_TOKEN}"))
        .await
        .expect("chromium opens the page");
    let listed = r#"document.body.dataset.loaded === "true"
        && !!document.querySelector('details.op[data-op="POST /api/user/Register"]')"#;
    browser
        .wait_for(listed, PATIENCE)
        .await
        .expect("the page lists the user service's operations");
    let services = browser
        .eval(r#"[...document.querySelectorAll("section.tag")].map((s) => s.dataset.tag)"#)
        .await
        .expect("the sections");
    assert!(
        services
            .as_array()
            .is_some_and(|tags| tags.contains(&json!("user"))),
        "{services}"
    );

    // Opens an operation, fills it in with `fill` and sends it; what the page shows.
    let call = |op: &str, fill: &str| {
        format!(
            r#"new Promise((resolve) => {{
  const op = document.querySelector('details.op[data-op="{op}"]');
  delete op.dataset.answered;
  op.open = true;
  setTimeout(() => {{
    const form = op.querySelector(".form");
    {fill}
    form.querySelector("button.send").click();
    const wait = setInterval(() => {{
      if (!op.dataset.answered) return;
      clearInterval(wait);
      resolve({{
        answered: op.dataset.answered,
        status: form.querySelector(".status").textContent,
        reply: form.querySelector("pre.reply").textContent,
      }});
    }}, 50);
  }}, 100);
}})"#
        )
    };

    // The body starts as the message's skeleton; the operator fills it in.
    let skeleton = browser
        .eval(&call("POST /api/user/Register", ""))
        .await
        .expect("the page's call");
    assert_eq!(skeleton["answered"], "400", "{skeleton}");
    let registered = browser
        .eval(&call(
            "POST /api/user/Register",
            r#"form.querySelector("textarea.body").value = JSON.stringify({ username: "quinn", password: "from-the-page" });"#,
        ))
        .await
        .expect("the page's call");
    assert_eq!(registered["answered"], "200", "{registered}");
    let reply: Value =
        serde_json::from_str(registered["reply"].as_str().unwrap_or_default()).expect("JSON");
    assert!(reply["id"].is_string(), "{registered}");

    // A method safe to repeat, on GET with its field in the query.
    let exists = browser
        .eval(&call(
            "GET /api/user/Exists",
            r#"form.querySelector('input[data-param="username"]').value = "quinn";"#,
        ))
        .await
        .expect("the page's call");
    assert_eq!(exists["answered"], "200", "{exists}");
    assert!(
        exists["reply"].as_str().is_some_and(|r| r.contains("true")),
        "{exists}"
    );

    // A server stream as events, shown as it comes.
    let listed = browser
        .eval(&call(
            "GET /api/user/List",
            r#"form.querySelector('input[data-param="prefix"]').value = "q";
    form.querySelector("select.accept").value = "text/event-stream";"#,
        ))
        .await
        .expect("the page's stream");
    assert_eq!(listed["answered"], "200", "{listed}");
    assert!(
        listed["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("data: ") && r.contains("quinn")),
        "{listed}"
    );

    drop(browser);
    gateway.sigterm().await;
    user.sigterm().await;
}
