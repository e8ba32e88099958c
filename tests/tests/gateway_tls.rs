//! The gateway's public port over TLS (`[http.tls]`) and cleartext HTTP/2, checked with
//! curl: HTTP/2 and HTTP/1.1 by ALPN, a renewed certificate served without a restart, a
//! bad certificate file refused at start-up in one line, and HTTP/2 with prior knowledge
//! on a cleartext port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::etcd::Etcd;
use tests::outside::fresh_dir;
use tests::process::{Node, run_to_end};
use tests::require;

const PATIENCE: Duration = Duration::from_secs(60);

fn pem(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/mtls")
        .join(name)
}

/// curl's exit code, the HTTP version it spoke and the body.
async fn curl(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--write-out", "\n%{http_version}"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run curl (Debian's curl)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn the_public_port_speaks_tls_with_h2_and_http1_and_serves_a_renewed_certificate() {
    let etcd = require!(Etcd::start().await);
    let dir = fresh_dir("gateway-tls");
    std::fs::create_dir_all(&dir).expect("a folder for the certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(pem("node.pem"), &cert).expect("copy the certificate");
    std::fs::copy(pem("node.key"), &key).expect("copy the key");
    let user = Node::on_etcd("user", "user", &etcd.etcd_addr(), &[]);
    let gateway = Node::on_etcd(
        "gateway",
        "gateway",
        &etcd.etcd_addr(),
        &[
            ("MS_HTTP__TLS__CERT", cert.to_str().expect("UTF-8")),
            ("MS_HTTP__TLS__KEY", key.to_str().expect("UTF-8")),
        ],
    );
    let http = gateway.listening("http").await;
    let user_address = user.listening("rpc").await;
    gateway
        .wait_for(
            &format!("Server [user] cluster [{user_address}] join"),
            PATIENCE,
        )
        .await;
    let port = http.rsplit(':').next().expect("a port");
    let url = format!("https://127.0.0.1:{port}/api/user/Exists?username=nobody");
    let cluster_ca = pem("cluster-ca.pem");
    let cluster_ca = cluster_ca.to_str().expect("UTF-8");

    let (code, out) = curl(&["--http2", "--cacert", cluster_ca, &url]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with(r#"{"exists":false}"#), "{out}");
    assert!(out.ends_with("\n2"), "ALPN chose HTTP/2: {out}");
    let (code, out) = curl(&["--http1.1", "--cacert", cluster_ca, &url]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("\n1.1"), "{out}");
    // Cleartext to the TLS port is no request at all.
    let (code, _) = curl(&[&url.replace("https://", "http://")]).await;
    assert_ne!(code, Some(0));

    // A renewed certificate (here from another CA) is served without a restart.
    std::fs::copy(pem("outsider.pem"), &cert).expect("renew the certificate");
    std::fs::copy(pem("outsider.key"), &key).expect("renew the key");
    gateway
        .wait_for("http.tls: certificate reloaded", PATIENCE)
        .await;
    let outsider_ca = pem("outsider-ca.pem");
    let (code, out) = curl(&["--cacert", outsider_ca.to_str().expect("UTF-8"), &url]).await;
    assert_eq!(code, Some(0), "the renewed certificate: {out}");
    let (code, _) = curl(&["--cacert", cluster_ca, &url]).await;
    assert_ne!(code, Some(0), "the old certificate is no longer served");

    gateway.sigterm().await;
    user.sigterm().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_etcd, ignore = "needs Docker (or MS_TEST_ETCD_ENDPOINTS) for etcd")]
async fn a_cleartext_port_takes_http2_with_prior_knowledge() {
    let etcd = require!(Etcd::start().await);
    let gateway = Node::on_etcd("gateway", "gateway", &etcd.etcd_addr(), &[]);
    let http = gateway.listening("http").await;
    let port = http.rsplit(':').next().expect("a port");
    let (code, out) = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{port}/healthz"),
    ])
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("\n2"), "{out}");
    gateway.sigterm().await;
}

#[tokio::test]
async fn a_certificate_file_that_cannot_be_read_stops_start_up_in_one_line() {
    let missing = std::env::temp_dir().join("rust-ms-no-such-cert.pem");
    let key = pem("node.key");
    let ended = run_to_end(
        "gateway",
        &[
            "--registry",
            "memory",
            "--http-port",
            "0",
            "--rpc-port",
            "0",
        ],
        &[
            ("MS_HTTP__TLS__CERT", missing.to_str().expect("UTF-8")),
            ("MS_HTTP__TLS__KEY", key.to_str().expect("UTF-8")),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
            ("MS_ADMIN__LISTEN", ""),
        ],
        PATIENCE,
    )
    .await;
    assert_eq!(ended.code, Some(1), "{}", ended.stderr);
    let lines: Vec<&str> = ended
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{}", ended.stderr);
    assert!(
        lines[0].contains("http.tls") && lines[0].contains("rust-ms-no-such-cert.pem"),
        "{}",
        ended.stderr
    );
}
