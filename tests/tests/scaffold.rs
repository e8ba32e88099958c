//! `rust-ms new`, installed with `cargo install --path cli` and run outside the checkout:
//! the crate it writes builds against this workspace by path, passes its own tests (its
//! stream's included), registers on real etcd, and its method answers through the gateway's `/api`
//! with no gateway configuration at all (the gateway learns it by reflection).

use std::time::Duration;

use tests::etcd::Etcd;
use tests::http::HttpClient;
use tests::outside::{cargo, fresh_dir, take_the_workspace_lock, target_dir, workspace_root};
use tests::process::Node;
use tests::require;

const STARTUP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_scaffolded_service_builds_registers_on_etcd_and_answers_through_the_gateway() {
    let etcd = require!(Etcd::start().await);
    let root = workspace_root();

    // As the guide says: install the command from the checkout, then use it from a
    // folder outside the checkout, with no flags.
    let outside = fresh_dir("scaffold-test");
    let prefix = outside.join("installed");
    std::fs::create_dir_all(&outside).expect("make the folder outside the checkout");
    let cli = root.join("cli");
    cargo(
        &outside,
        &[
            "install",
            "--path",
            cli.to_str().expect("a UTF-8 workspace path"),
            "--root",
            prefix.to_str().expect("a UTF-8 temp path"),
            "--debug",
            "--offline",
            "--locked",
            "--quiet",
        ],
    )
    .await;
    let written = tokio::process::Command::new(prefix.join("bin/rust-ms"))
        .args(["new", "greeter"])
        .current_dir(&outside)
        .output()
        .await
        .expect("run the installed rust-ms");
    let stdout = String::from_utf8_lossy(&written.stdout);
    assert!(
        written.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&written.stderr)
    );
    // It takes rust-ms from the checkout it was installed from, and says so.
    assert!(
        stdout.contains(&format!("from the checkout at {}", root.display())),
        "{stdout}"
    );
    let dir = outside.join("greeter");
    assert!(dir.join("proto/greeter/v1/greeter.proto").is_file());
    take_the_workspace_lock(&dir);

    cargo(&dir, &["test", "--offline", "--quiet"]).await;
    cargo(&dir, &["build", "--offline", "--quiet", "--bin", "greeter"]).await;
    let greeter_binary = target_dir().join("debug/greeter");

    let etcd_addr = etcd.etcd_addr();
    let gateway = Node::start(
        "gateway",
        "gateway",
        &[
            "--http-port",
            "0",
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd_addr,
        ],
        &[("MS_ADVERTISE_HOST", "127.0.0.1")],
    );
    let config = dir.join("config/greeter.toml");
    let greeter = Node::start_program(
        &greeter_binary,
        "greeter",
        &[
            "--config",
            config.to_str().expect("a UTF-8 config path"),
            "--etcd-addr",
            &etcd_addr,
            "--advertise-host",
            "127.0.0.1",
        ],
        &[],
    );
    let greeter_address = greeter.listening("rpc").await;
    let http = gateway.listening("http").await;
    gateway
        .wait_for(
            &format!("Server [greeter] cluster [{greeter_address}] join"),
            STARTUP,
        )
        .await;

    let client = HttpClient::default();
    let reply = client
        .post_until(
            &format!("http://{http}/api/greeter/Hello"),
            &serde_json::json!({ "name": "Ada" }),
            200,
            STARTUP,
        )
        .await;
    assert_eq!(reply.body["message"], "Hello, Ada!");
    assert_eq!(reply.header("x-served-by"), Some(greeter_address.as_str()));

    // The REST route its proto declares, from the proto alone (the gateway takes a new
    // service's routes up within seconds).
    let deadline = tokio::time::Instant::now() + STARTUP;
    let rest = loop {
        let rest = client
            .get(&format!("http://{http}/v1/greeter/hello/Grace"))
            .await
            .expect("a reply");
        if rest.status == 200 || tokio::time::Instant::now() > deadline {
            break rest;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rest.status, 200, "{}", rest.text);
    assert_eq!(rest.body["message"], "Hello, Grace!");

    // The service's own validation reaches the caller as a 400 with its message.
    let refused = client
        .post(
            &format!("http://{http}/api/greeter/Hello"),
            &serde_json::json!({ "name": "" }),
        )
        .await
        .expect("a reply");
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.text.contains("name must not be empty"),
        "{}",
        refused.text
    );

    greeter.sigterm().await;
    gateway.sigterm().await;
    let _ = std::fs::remove_dir_all(&outside);
}
