//! Nodes written in Python with grpcio (`tests/python/*.py`): services of another
//! language, with its stock reflection, for what the gateway must do with them.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::outside::workspace_root;

const PATIENCE: Duration = Duration::from_secs(60);

/// Starts `tests/python/{script}`, which prints its port first, and returns the process
/// (killed when dropped) and its address on loopback.
pub async fn start_node(script: &str) -> (tokio::process::Child, String) {
    let modules = std::process::Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_reflection, grpc_health, google.api.annotations_pb2",
        ])
        .status();
    assert!(
        modules.is_ok_and(|status| status.success()),
        "this test needs python3 with grpcio, grpcio-reflection, grpcio-health-checking and \
         googleapis-common-protos (scripts/install-deps.sh installs them)"
    );
    let mut child = tokio::process::Command::new("python3")
        .arg(workspace_root().join("tests/python").join(script))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python node");
    let stdout = child.stdout.take().expect("its stdout");
    let mut first = String::new();
    tokio::time::timeout(PATIENCE, BufReader::new(stdout).read_line(&mut first))
        .await
        .expect("the Python node says its port")
        .expect("read its port");
    let port: u16 = first
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{script} printed {first:?}, not a port"));
    (child, format!("127.0.0.1:{port}"))
}
