//! A service of someone else's, outside this workspace, calls `user` with the client
//! rust-ms ships (`rust-ms-clients`): it builds without the user service's server code,
//! and its call is answered by a real user node on real etcd.

use std::time::Duration;

use services::proto::user::v1::RegisterRequest;
use services::proto::user::v1::user_service_client::UserServiceClient;
use tests::etcd::Etcd;
use tests::outside::{cargo, fresh_dir, take_the_workspace_lock, target_dir, workspace_root};
use tests::process::Node;
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

/// The calling service: at start-up it asks `user` whether `ada` exists, says what it
/// heard, and serves on.
const MAIN: &str = r#"
use clients::user::v1::ExistsRequest;
use clients::user::v1::user_service_client::UserServiceClient;
use rust_ms::{Serve, Service};

fn main() -> std::process::ExitCode {
    Service::new("stock", "0.1.0")
        .calls(clients::DESCRIPTORS)
        .setup(|context| async move {
            let mut users = UserServiceClient::new(context.client("user").await?);
            let reply = users.exists(ExistsRequest { username: "ada".into() }).await?;
            eprintln!("user says ada exists: {}", reply.into_inner().exists);
            Ok(Serve::new())
        })
        .run()
}
"#;

fn manifest() -> String {
    let root = workspace_root();
    let path = |dir: &str| format!("{:?}", root.join(dir).display().to_string());
    format!(
        "[package]\nname = \"stock\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n[dependencies]\nrust-ms = {{ path = {} }}\nrust-ms-clients = {{ path = {} }}\n",
        path("rust-ms"),
        path("clients"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_crate_outside_the_workspace_calls_user_with_the_shipped_client_and_no_user_server_code()
{
    let etcd = require!(Etcd::start().await);
    let dir = fresh_dir("clients-test");
    std::fs::create_dir_all(dir.join("src")).expect("a crate folder");
    std::fs::write(dir.join("Cargo.toml"), manifest()).expect("write Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), MAIN).expect("write main.rs");
    take_the_workspace_lock(&dir);

    let tree = cargo(
        &dir,
        &["tree", "--offline", "-e", "normal", "--prefix", "none"],
    )
    .await;
    assert!(tree.contains("rust-ms-clients"), "{tree}");
    for server_only in ["argon2", "jsonwebtoken", "rust-ms-services"] {
        assert!(
            !tree.contains(server_only),
            "{server_only} in the caller's tree:\n{tree}"
        );
    }
    cargo(&dir, &["build", "--offline", "--quiet", "--bin", "stock"]).await;

    let etcd_addr = etcd.etcd_addr();
    let user = Node::on_etcd("user", "user", &etcd_addr, &[]);
    let channel = tests::grpc::channel(&user.listening("rpc").await).await;
    UserServiceClient::new(channel)
        .register(RegisterRequest {
            username: "ada".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("ada registers");

    let stock = Node::start_program(
        &target_dir().join("debug/stock"),
        "stock",
        &[
            "--rpc-port",
            "0",
            "--etcd-addr",
            &etcd_addr,
            "--advertise-host",
            "127.0.0.1",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    stock.wait_for("user says ada exists: true", PATIENCE).await;
}
