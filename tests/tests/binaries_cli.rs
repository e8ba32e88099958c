//! Start-up of the real binaries: version, bad flags, bad configuration and an unreachable
//! etcd each end the process with a non-zero code and one clear line, never a panic.

use std::time::Duration;

use tests::process::{Node, Output, run_to_end};

const PATIENCE: Duration = Duration::from_secs(60);

fn last_line(output: &Output) -> &str {
    output.stderr.lines().last().unwrap_or("")
}

fn assert_clean_failure(output: &Output, code: i32, wanted: &[&str]) {
    assert_eq!(output.code, Some(code), "stderr: {}", output.stderr);
    assert!(
        !output.stderr.contains("panicked"),
        "panicked: {}",
        output.stderr
    );
    assert!(
        !output.stderr.contains("RUST_BACKTRACE"),
        "{}",
        output.stderr
    );
    let line = last_line(output);
    for part in wanted {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
}

#[tokio::test]
async fn version_prints_the_name_the_version_and_the_commit() {
    for binary in ["gateway", "user", "order", "dev-stack"] {
        let output = run_to_end(binary, &["--version"], &[], PATIENCE).await;
        assert_eq!(output.code, Some(0));
        let line = output.stdout.trim();
        assert!(
            line.starts_with(&format!("{binary} {}", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
        assert!(line.contains("commit "), "{line}");
    }
}

#[tokio::test]
async fn help_shows_the_services_about_line_and_nothing_of_the_shared_flags_doc_comment() {
    for (binary, about) in [
        ("gateway", "The rust-ms API gateway"),
        ("user", "The rust-ms example account service"),
        (
            "order",
            "The rust-ms example order service, which calls user",
        ),
        ("greeter", "The rust-ms example greeter: Hello, {name}!"),
    ] {
        for flag in ["--help", "-h"] {
            let output = run_to_end(binary, &[flag], &[], PATIENCE).await;
            assert_eq!(output.code, Some(0), "{binary} {flag}: {}", output.stderr);
            let first = output.stdout.lines().next().unwrap_or_default();
            assert_eq!(first, about, "{binary} {flag}:\n{}", output.stdout);
            // The doc comment of node::CommonArgs is for its readers, not the user.
            for internal in [
                "Flags shared by every node binary",
                "subcommand takes them too",
            ] {
                assert!(
                    !output.stdout.contains(internal),
                    "{binary} {flag}:\n{}",
                    output.stdout
                );
            }
        }
    }
}

#[tokio::test]
async fn a_bad_flag_exits_2_with_one_line_naming_it() {
    let output = run_to_end("user", &["--rpc-port", "seventy"], &[], PATIENCE).await;
    assert_clean_failure(&output, 2, &["seventy", "--rpc-port"]);
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);

    let output = run_to_end("gateway", &["--no-such-flag"], &[], PATIENCE).await;
    assert_clean_failure(&output, 2, &["--no-such-flag"]);

    let output = run_to_end("gateway", &["--registry", "zookeeper"], &[], PATIENCE).await;
    assert_clean_failure(&output, 2, &["zookeeper"]);
}

#[tokio::test]
async fn bad_configuration_names_the_key_and_where_it_was_set() {
    let dir = std::env::temp_dir().join(format!("rust-ms-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("user.toml");
    std::fs::write(
        &file,
        "rpc_port = 0\n[registry]\nttl = \"5s\"\netcd_adr = \"x:1\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();

    let output = run_to_end("user", &["--config", path], &[], PATIENCE).await;
    assert_clean_failure(
        &output,
        1,
        &["unknown key registry.etcd_adr", "user.toml line 4"],
    );

    let output = run_to_end(
        "user",
        &["--config", "/nonexistent/user.toml"],
        &[],
        PATIENCE,
    )
    .await;
    assert_clean_failure(&output, 1, &["/nonexistent/user.toml", "no such file"]);

    let output = run_to_end("gateway", &[], &[("MS_REGISTRY__TTL", "soon")], PATIENCE).await;
    assert_clean_failure(&output, 1, &["registry.ttl", "MS_REGISTRY__TTL"]);

    let output = run_to_end("order", &["--etcd-addr", "127.0.0.1"], &[], PATIENCE).await;
    assert_clean_failure(&output, 1, &["registry.etcd_addr", "--etcd-addr"]);
}

#[tokio::test]
async fn an_unreachable_etcd_ends_start_up_naming_every_endpoint() {
    // Ports 1 and 2 on loopback: nothing listens there.
    let output = run_to_end(
        "user",
        &["--etcd-addr", "127.0.0.1:1|127.0.0.1:2", "--rpc-port", "0"],
        &[
            ("MS_REGISTRY__CONNECT_TIMEOUT", "2s"),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
        ],
        PATIENCE,
    )
    .await;
    assert_clean_failure(&output, 1, &["unreachable", "127.0.0.1:1, 127.0.0.1:2"]);
}

#[tokio::test]
async fn an_admin_port_already_taken_ends_start_up_naming_the_admin_listen_flag_that_shares_the_host()
 {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = taken.local_addr().expect("its address").to_string();
    let output = run_to_end(
        "gateway",
        &["--registry", "memory"],
        &[
            ("MS_ADMIN__LISTEN", address.as_str()),
            ("MS_HTTP_PORT", "0"),
            ("MS_RPC_PORT", "0"),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
        ],
        PATIENCE,
    )
    .await;
    assert_clean_failure(
        &output,
        1,
        &[
            &address,
            "admin.listen",
            "--admin-listen 127.0.0.1:0",
            "in use",
        ],
    );
    // What the line says works: the flag beats the environment and the OS picks a port.
    let mut shared = Node::start(
        "gateway",
        "gateway",
        &["--registry", "memory", "--admin-listen", "127.0.0.1:0"],
        &[
            ("MS_ADMIN__LISTEN", address.as_str()),
            ("MS_HTTP_PORT", "0"),
            ("MS_RPC_PORT", "0"),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
        ],
    );
    let admin = shared.listening("admin").await;
    assert_ne!(admin, address);
    shared.sigterm().await;
    assert_eq!(shared.exit_code(PATIENCE).await, Some(0));

    let flagged = run_to_end(
        "user",
        &["--print-config", "--admin-listen", "localhost:9900"],
        &[],
        PATIENCE,
    )
    .await;
    assert_clean_failure(&flagged, 1, &["admin.listen", "--admin-listen"]);
    let bad = run_to_end(
        "user",
        &["--print-config"],
        &[("MS_ADMIN__LISTEN", "localhost:9900")],
        PATIENCE,
    )
    .await;
    assert_clean_failure(&bad, 1, &["admin.listen", "MS_ADMIN__LISTEN"]);
}

#[tokio::test]
async fn an_admin_address_set_in_a_file_or_by_a_flag_that_is_taken_still_ends_start_up_naming_it() {
    // Only the default gives way to a free port; what the operator set is kept or fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = taken.local_addr().expect("its address").to_string();
    let dir = std::env::temp_dir().join(format!("rust-ms-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, format!("[admin]\nlisten = \"{address}\"\n")).unwrap();
    let memory = [
        ("MS_REGISTRY__BACKEND", "memory"),
        ("MS_HTTP_PORT", "0"),
        ("MS_RPC_PORT", "0"),
        ("MS_ADVERTISE_HOST", "127.0.0.1"),
    ];
    for (label, args) in [
        ("file", ["--config", file.to_str().unwrap()]),
        ("flag", ["--admin-listen", address.as_str()]),
    ] {
        let mut node = Node::start_with_default_admin("gateway", label, &args, &memory);
        let line = node.wait_for("cannot listen on", PATIENCE).await;
        for part in [address.as_str(), "admin.listen", "in use"] {
            assert!(
                line.contains(part),
                "{label}: {part:?} missing from {line:?}"
            );
        }
        assert_eq!(node.exit_code(PATIENCE).await, Some(1), "{label}");
        assert_eq!(node.count("admin listening on"), 0, "{label}");
    }
}

#[tokio::test]
async fn print_config_shows_the_effective_layers() {
    let output = run_to_end(
        "gateway",
        &["--print-config", "--http_port", "9999"],
        &[("MS_REGISTRY__NAMESPACE", "other")],
        PATIENCE,
    )
    .await;
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    assert!(
        output.stdout.contains("http_port = 9999"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("namespace = \"other\""),
        "{}",
        output.stdout
    );
}

#[tokio::test]
async fn print_config_never_shows_a_secret() {
    let output = run_to_end(
        "user",
        &["--print-config"],
        &[
            ("MS_SECURITY__CALL_KEY", "call-key-do-not-print"),
            ("MS_USER__TOKEN_SECRET", "token-secret-do-not-print"),
            ("MS_REGISTRY__PASSWORD", "etcd-password-do-not-print"),
            ("MS_ADMIN__TOKEN", "admin-token-do-not-print"),
        ],
        PATIENCE,
    )
    .await;
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    assert!(!output.stdout.contains("do-not-print"), "{}", output.stdout);
    for key in ["call_key", "token_secret", "password", "token"] {
        assert!(
            output.stdout.contains(&format!("{key} = \"<redacted>\"")),
            "{key}: {}",
            output.stdout
        );
    }
    // Settings that are no secret stay as they are.
    assert!(
        output.stdout.contains("min_password_len = 8"),
        "{}",
        output.stdout
    );
}

#[tokio::test]
async fn every_checked_in_config_loads() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    for (binary, file) in [
        ("gateway", "gateway.toml"),
        ("user", "user.toml"),
        ("order", "order.toml"),
        ("dev-stack", "dev-stack.toml"),
    ] {
        let path = format!("{root}/{file}");
        let output = run_to_end(
            binary,
            &["--config", &path, "--print-config"],
            &[],
            PATIENCE,
        )
        .await;
        assert_eq!(output.code, Some(0), "{file}: {}", output.stderr);
    }
}

#[tokio::test]
async fn a_node_logs_the_address_it_bound_and_warns_when_anyone_can_call_it() {
    let memory = [
        ("MS_REGISTRY__BACKEND", "memory"),
        ("MS_RPC_PORT", "0"),
        ("MS_ADVERTISE_HOST", "127.0.0.1"),
    ];
    // Every interface, no call key, no mutual TLS: it says so.
    let open = tests::process::Node::start("user", "user-open", &[], &memory);
    let line = open.wait_for("rpc listening on 0.0.0.0:", PATIENCE).await;
    assert!(
        line.ends_with(&format!(" as 127.0.0.1:{}", port_of(&line))),
        "{line}"
    );
    open.wait_for("accepts calls from anyone on 0.0.0.0:", PATIENCE)
        .await;
    open.sigterm().await;

    // Bound to loopback only: nothing to warn about.
    let mut env = memory.to_vec();
    env.push(("MS_LISTEN_HOST", "127.0.0.1"));
    let mut closed = tests::process::Node::start("user", "user-loopback", &[], &env);
    closed
        .wait_for("rpc listening on 127.0.0.1:", PATIENCE)
        .await;
    closed.wait_for("registered as", PATIENCE).await;
    assert_eq!(
        closed.count("accepts calls from anyone"),
        0,
        "{:?}",
        closed.lines()
    );
    closed.sigterm().await;
    assert_eq!(closed.exit_code(PATIENCE).await, Some(0));
}

/// The port of the last `host:port` on a log line.
fn port_of(line: &str) -> String {
    line.rsplit(':').next().unwrap_or_default().to_owned()
}
