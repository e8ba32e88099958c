//! `rust-ms proto pull`: a team without a service's source pulls its `.proto` files from a
//! running cluster (through a gateway's rpc port, or from a node itself, here a node of
//! another language registered by a bare JSON value), compiles them with `rust-ms-build`
//! in a crate of its own, and calls the services with the client it got.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tests::etcd::Etcd;
use tests::outside::{cargo, fresh_dir, take_the_workspace_lock, target_dir, workspace_root};
use tests::process::{Node, run_to_end};
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

/// The calling program: registers `grace` with user through the gateway, asks whether she
/// exists, and has the probe echo a note.
const MAIN: &str = r#"
mod user {
    tonic::include_proto!("user.v1");
}
mod probe {
    tonic::include_proto!("probe.v1");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let gateway = args.next().ok_or("the gateway's rpc address")?;
    let probe_at = args.next().ok_or("the probe's address")?;

    let mut users =
        user::user_service_client::UserServiceClient::connect(format!("http://{gateway}")).await?;
    users
        .register(user::RegisterRequest {
            username: "grace".into(),
            password: "correct horse battery".into(),
        })
        .await?;
    let exists = users
        .exists(user::ExistsRequest { username: "grace".into() })
        .await?
        .into_inner()
        .exists;
    println!("grace exists: {exists}");

    let mut probe =
        probe::probe_service_client::ProbeServiceClient::connect(format!("http://{probe_at}"))
            .await?;
    let note = probe.echo(probe::Note { text: "pulled".into() }).await?.into_inner();
    println!("probe echoes: {}", note.text);
    Ok(())
}
"#;

/// Compiles what was pulled as clients only, as the guide tells a caller to.
const BUILD: &str = r#"
fn main() -> Result<(), Box<dyn std::error::Error>> {
    rust_ms_build::Protos::new(&["proto"])
        .calls(&["proto/user/v1/user.proto", "proto/probe.proto"])
        .compile()?;
    Ok(())
}
"#;

fn manifest() -> String {
    let build = workspace_root().join("rust-ms-build").display().to_string();
    format!(
        "[package]\nname = \"puller\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n[dependencies]\nprost = \"0.14\"\ntonic = \"0.14\"\ntonic-prost = \"0.14\"\n\
         tokio = {{ version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }}\n\n\
         [build-dependencies]\nrust-ms-build = {{ path = {build:?} }}\n",
    )
}

async fn pull(service: &str, from: &str, out: &Path) -> tests::process::Output {
    run_to_end(
        "rust-ms",
        &[
            "proto",
            "pull",
            service,
            "--from",
            from,
            "--out",
            out.to_str().expect("a UTF-8 temp path"),
        ],
        &[],
        PATIENCE,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn protos_pulled_from_a_running_cluster_compile_into_clients_that_call_its_services() {
    let etcd = require!(Etcd::start().await);
    let etcd_addr = etcd.etcd_addr();
    let user = Node::on_etcd("user", "user", &etcd_addr, &[]);
    let gateway = Node::on_etcd("gateway", "gateway", &etcd_addr, &[]);
    let user_address = user.listening("rpc").await;
    let rpc = gateway.listening("rpc").await;
    gateway
        .wait_for(
            &format!("Server [user] cluster [{user_address}] join"),
            PATIENCE,
        )
        .await;

    // A node of another language: a gRPC server with reflection, registered by a value
    // holding only its address. (It registers nowhere but a private in-memory registry.)
    let private = std::sync::Arc::new(registry_memory::MemoryRegistry::new());
    let foreign = tests::probe::start(private, None).await;
    let value = json!({ "address": foreign.address }).to_string();
    let mut client = etcd.client().await;
    client
        .put("go-ms/services/probe/written-by-hand", value, None)
        .await
        .expect("write the bare value");

    let dir = fresh_dir("proto-pull-test");
    std::fs::create_dir_all(dir.join("src")).expect("a crate folder");
    let protos = dir.join("proto");

    // user through the gateway's rpc port, which answers reflection for the cluster.
    let pulled = pull("user", &rpc, &protos).await;
    assert_eq!(pulled.code, Some(0), "{}", pulled.stderr);
    assert!(
        pulled.stdout.contains("user.v1.UserService"),
        "{}",
        pulled.stdout
    );
    let user_proto = std::fs::read_to_string(protos.join("user/v1/user.proto"))
        .expect("user.proto written at its import path");
    assert!(user_proto.contains("service UserService"), "{user_proto}");
    assert!(
        user_proto.contains("option idempotency_level = NO_SIDE_EFFECTS;"),
        "what is safe to repeat travels with the file:\n{user_proto}"
    );

    // The probe from the node itself.
    let pulled = pull("probe", &foreign.address, &protos).await;
    assert_eq!(pulled.code, Some(0), "{}", pulled.stderr);
    assert!(protos.join("probe.proto").is_file(), "{}", pulled.stdout);

    // Pulling again finds the same files; a service nobody serves is refused, naming
    // what there is; nothing is written over without --force.
    let again = pull("user", &rpc, &protos).await;
    assert!(again.stdout.contains("unchanged"), "{}", again.stdout);
    let unknown = pull("inventory", &rpc, &protos).await;
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown
            .stderr
            .contains("serves no gRPC service of \"inventory\"")
            && unknown.stderr.contains("user.v1.UserService"),
        "{}",
        unknown.stderr
    );
    std::fs::write(protos.join("probe.proto"), "// edited by hand\n").expect("edit");
    let kept = pull("probe", &foreign.address, &protos).await;
    assert_eq!(kept.code, Some(1), "{}", kept.stdout);
    assert!(kept.stderr.contains("--force"), "{}", kept.stderr);
    let forced = run_to_end(
        "rust-ms",
        &[
            "proto",
            "pull",
            "probe",
            "--from",
            &foreign.address,
            "--out",
            protos.to_str().expect("a UTF-8 temp path"),
            "--force",
        ],
        &[],
        PATIENCE,
    )
    .await;
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);

    // A crate of the calling team, built from nothing but the pulled files.
    std::fs::write(dir.join("Cargo.toml"), manifest()).expect("write Cargo.toml");
    std::fs::write(dir.join("build.rs"), BUILD).expect("write build.rs");
    std::fs::write(dir.join("src/main.rs"), MAIN).expect("write main.rs");
    take_the_workspace_lock(&dir);
    cargo(&dir, &["build", "--offline", "--quiet", "--bin", "puller"]).await;

    let called = tokio::process::Command::new(target_dir().join("debug/puller"))
        .args([rpc.as_str(), foreign.address.as_str()])
        .kill_on_drop(true)
        .output();
    let called = tokio::time::timeout(PATIENCE, called)
        .await
        .expect("the caller ends")
        .expect("run the caller");
    let stdout = String::from_utf8_lossy(&called.stdout);
    assert!(
        called.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&called.stderr)
    );
    assert!(stdout.contains("grace exists: true"), "{stdout}");
    assert!(stdout.contains("probe echoes: pulled"), "{stdout}");

    gateway.sigterm().await;
    user.sigterm().await;
    foreign.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
