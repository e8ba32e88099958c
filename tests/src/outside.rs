//! Crates built outside the workspace, as a user's own would be: on the workspace's lock
//! file versions and a target folder of their own that the tests share, so that
//! rust-ms's dependencies are compiled once for all of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one `cargo` command may take: a first build compiles rust-ms itself.
pub const BUILD_PATIENCE: Duration = Duration::from_secs(900);

/// The rust-ms checkout the tests run in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// Where crates built outside the workspace put what they compile.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target").join("scaffold")
}

/// A fresh folder for a crate outside the workspace, named after `what`.
pub fn fresh_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rust-ms-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Gives the crate in `dir` the workspace's versions, so that compiled dependencies
/// serve again and nothing is fetched.
pub fn take_the_workspace_lock(dir: &Path) {
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock"))
        .expect("copy Cargo.lock");
}

/// Runs `cargo ARGS` in `dir` on [`target_dir`]; its stdout, or a panic with cargo's
/// output on failure.
pub async fn cargo(dir: &Path, args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = tokio::process::Command::new(cargo);
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BUILD_PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("cargo {args:?} still running after {BUILD_PATIENCE:?}"))
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo {args:?} failed in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
