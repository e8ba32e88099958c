//! Compiles the test-only protos with protox: a later release of the user service (an
//! upgrade without a second binary) and a probe service with streams and failures.
//!
//! Also decides, at build time, whether the tests can have an etcd, because libtest cannot
//! mark a test ignored once it runs: a test that needs etcd and returned early would be
//! reported as passed. The tests carry
//! `#[cfg_attr(no_etcd, ignore = "...")]` or `#[cfg_attr(no_etcd_container, ignore = "...")]`:
//!
//! - `MS_TEST_ETCD_ENDPOINTS` set: an etcd already runs (external). Tests that must stop,
//!   pause, replace or cluster etcd cannot: `no_etcd_container`.
//! - else `docker info` answers within [`DOCKER_TIMEOUT`]: etcd runs in containers; nothing
//!   is ignored.
//! - else (no Docker engine, no `docker` binary, or it hangs): `no_etcd` and
//!   `no_etcd_container`, so every etcd test shows as `ignored`.
//!
//! `MS_TEST_NO_DOCKER=1` forces "no Docker engine", to see the tests ignored on a machine
//! that has one. Under `CI=true` nothing is ignored for a missing Docker engine: the etcd
//! tests run and fail saying so, since CI must never skip them.
//!
//! The trade-off: a build script reruns only when one of its inputs changes, so the answer
//! is kept until then. The inputs are the variables above (and `DOCKER_HOST`,
//! `MS_ETCD_IMAGE`, `CI`) and the Docker socket's file (`DOCKER_HOST`'s `unix://` path,
//! else `/var/run/docker.sock`): the engine (re)starting or stopping recreates or removes
//! it. While Docker is absent the socket is watched even if missing, which makes the
//! script rerun on every build (the test crate, alone, is then rebuilt each time on
//! machines without Docker: seconds) so that starting Docker is seen at once. What the
//! socket does not show — Docker over TCP, through `DOCKER_CONTEXT` or on another socket
//! (rootless, Docker Desktop) stopping or coming up, an engine stopped behind a socket
//! systemd keeps, a user added to the `docker` group — needs `touch tests/build.rs` (or
//! `cargo clean -p rust-ms-tests`) to be seen; until then a test built as runnable fails
//! saying so, and one built as ignored stays ignored.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `docker info` may take before Docker counts as absent.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for name in ["user_next", "probe"] {
        // google/api/annotations.proto, for the probe's REST route, from rust-ms-build.
        let mut compiler = protox::Compiler::new(["proto", "../rust-ms-build/proto"])?;
        compiler
            .include_imports(true)
            .open_file(format!("{name}.proto"))?;
        // Encoded by the compiler, not through prost's types: those drop custom options
        // such as google.api.http, which the gateway reads from the served descriptors.
        std::fs::write(
            out.join(format!("{name}_descriptor.bin")),
            compiler.encode_file_descriptor_set(),
        )?;
        tonic_prost_build::configure().compile_fds(compiler.file_descriptor_set())?;
    }
    println!("cargo::rerun-if-changed=proto");
    detect_etcd();
    detect_chromium();
    Ok(())
}

/// Whether a headless Chromium is there for the dashboard tests (`MS_CHROMIUM`, or
/// `chromium` on PATH): `no_chromium` otherwise, so they show as ignored, except under
/// `CI=true`, where they run and fail saying so.
fn detect_chromium() {
    println!("cargo::rustc-check-cfg=cfg(no_chromium)");
    println!("cargo::rerun-if-env-changed=MS_CHROMIUM");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-changed=/usr/bin/chromium");
    let found = match std::env::var_os("MS_CHROMIUM") {
        Some(path) => PathBuf::from(path).is_file(),
        None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|dir| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .any(|name| dir.join(name).is_file())
        }),
    };
    if !found && std::env::var_os("CI").is_none() {
        println!("cargo::rustc-cfg=no_chromium");
    }
}

/// Where etcd comes from for the tests, as `Etcd::start` in src/etcd.rs chooses it.
enum EtcdSource {
    External,
    Docker,
    None,
}

fn detect_etcd() {
    println!("cargo::rustc-check-cfg=cfg(no_etcd)");
    println!("cargo::rustc-check-cfg=cfg(no_etcd_container)");
    for var in [
        "MS_TEST_ETCD_ENDPOINTS",
        "MS_ETCD_IMAGE",
        "MS_TEST_NO_DOCKER",
        "DOCKER_HOST",
        "CI",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let source = if std::env::var_os("MS_TEST_ETCD_ENDPOINTS").is_some() {
        EtcdSource::External
    } else if docker_answers() {
        EtcdSource::Docker
    } else {
        EtcdSource::None
    };
    // See the trade-off above. A missing socket is watched only while Docker is absent
    // (it makes the script rerun on every build): an engine that answers on another
    // socket (rootless, Docker Desktop) would otherwise rebuild the tests every time.
    if let Some(socket) = docker_socket()
        && (socket.exists() || matches!(source, EtcdSource::None))
    {
        println!("cargo::rerun-if-changed={}", socket.display());
    }
    match source {
        EtcdSource::Docker => {}
        EtcdSource::External => println!("cargo::rustc-cfg=no_etcd_container"),
        EtcdSource::None if ci => println!(
            "cargo::warning=no Docker engine answers `docker info` and MS_TEST_ETCD_ENDPOINTS is unset; under CI=true the etcd tests are not ignored and will fail"
        ),
        EtcdSource::None => {
            println!("cargo::rustc-cfg=no_etcd");
            println!("cargo::rustc-cfg=no_etcd_container");
        }
    }
}

/// The socket the Docker CLI talks to by default, or the one `DOCKER_HOST` names; none
/// when `DOCKER_HOST` names something else (TCP, SSH).
fn docker_socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(PathBuf::from),
        _ => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

/// Whether `docker info` succeeds within [`DOCKER_TIMEOUT`]; no `docker` binary is a no.
fn docker_answers() -> bool {
    if std::env::var_os("MS_TEST_NO_DOCKER").is_some_and(|v| !v.is_empty() && v != "0") {
        return false;
    }
    let Ok(mut child) = Command::new("docker")
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + DOCKER_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                println!(
                    "cargo::warning=`docker info` did not answer within {DOCKER_TIMEOUT:?}: the etcd tests are built as ignored"
                );
                return false;
            }
        }
    }
}
