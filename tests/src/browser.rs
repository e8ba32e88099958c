//! A tiny driver for Debian's headless Chromium over the Chrome DevTools Protocol: load a
//! live page, read its DOM while a test changes the server behind it, save a screenshot.
//!
//! Chromium runs in its own process group with a fresh profile directory; dropping the
//! [`Browser`] kills the whole group, reaps the browser process and removes the profile.
//! All traffic stays on loopback: the DevTools HTTP endpoint (to find the page target)
//! and one websocket to that page.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to start and load the page.
const LAUNCH_PATIENCE: Duration = Duration::from_secs(60);
/// Starts tried before giving up on a Chromium that stays silent: on a loaded CI
/// machine one start in many has printed nothing for 30 s, while the next started at once.
const LAUNCH_TRIES: usize = 2;
/// How long one DevTools command may take to be answered.
const COMMAND_PATIENCE: Duration = Duration::from_secs(30);
/// How often [`Browser::wait_for`] evaluates its expression.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The binaries looked for on `PATH`, in this order, when `MS_CHROMIUM` is unset.
const CANDIDATES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// What Chromium prints on stderr once its DevTools endpoint listens.
const LISTENING: &str = "DevTools listening on ws://";

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("no chromium binary: {0}")]
    NotFound(String),
    #[error("cannot make a profile directory for chromium: {0}")]
    Profile(#[source] std::io::Error),
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chromium gave no DevTools address ({why}); its stderr:\n{stderr}")]
    NoDevToolsAddress { why: String, stderr: String },
    #[error("chromium printed no DevTools address within {waited:?}; its stderr:\n{stderr}")]
    Silent { waited: Duration, stderr: String },
    #[error("no page target from {url}: {reason}")]
    NoPageTarget { url: String, reason: String },
    #[error("websocket to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("websocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("chromium closed the DevTools websocket")]
    Closed,
    #[error("no reply to {method} within {waited:?}")]
    Timeout { method: String, waited: Duration },
    #[error("{method} failed: {message}")]
    Protocol { method: String, message: String },
    #[error("malformed reply to {method}: {detail}")]
    BadReply { method: String, detail: String },
    #[error("exception in the page: {0}")]
    Exception(String),
    #[error("`{expression}` not true after {waited:?}; last value: {last}")]
    WaitTimeout {
        expression: String,
        waited: Duration,
        last: String,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BrowserError {
    /// Whether the DevTools connection itself is gone (no point asking again).
    fn is_transport(&self) -> bool {
        matches!(
            self,
            BrowserError::WebSocket(_) | BrowserError::Closed | BrowserError::Timeout { .. }
        )
    }
}

/// The Chromium to run: `MS_CHROMIUM` when set, else the first of `chromium`,
/// `chromium-browser`, `google-chrome` found on `PATH`.
pub fn chromium_binary() -> Option<PathBuf> {
    find_chromium().ok()
}

/// [`chromium_binary`] with the reason when there is none.
fn find_chromium() -> Result<PathBuf, String> {
    if let Some(configured) = std::env::var_os("MS_CHROMIUM") {
        let path = PathBuf::from(&configured);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "MS_CHROMIUM={} is not an executable file",
                path.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in CANDIDATES {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "none of {} on PATH and MS_CHROMIUM unset (Debian: apt-get install chromium)",
        CANDIDATES.join(", ")
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Chromium process group and its profile; killing is idempotent.
struct Chromium {
    child: Child,
    /// Drains Chromium's stderr once the DevTools address is read (a full pipe would stall it).
    drain: Option<JoinHandle<()>>,
    /// Removed when dropped, which is after the process is gone (fields drop after `Drop::drop`).
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// SIGKILL to the whole process group (browser, zygote, renderers), then reap the
    /// browser process, waiting at most a few seconds.
    fn kill(&mut self) {
        // `id()` is `None` once the child has been reaped: while it is unreaped its pid,
        // which is also the group's id, cannot have been reused.
        if let Some(pid) = self.child.id()
            && let Ok(pgid) = libc::pid_t::try_from(pid)
        {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours; the
            // negative pid names the group Chromium leads (`process_group(0)` at spawn).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Ok(None) = self.child.try_wait() {
            if std::time::Instant::now() >= deadline {
                eprintln!("browser: chromium did not exit within 5 s of SIGKILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A headless Chromium showing one page, driven over the DevTools websocket of that page.
pub struct Browser {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    chromium: Chromium,
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.chromium.kill();
    }
}

impl Browser {
    /// Starts headless Chromium on `url` and waits (up to 60 s) until the page has loaded;
    /// a Chromium that prints nothing in that time is stopped and started once more.
    ///
    /// When no chromium binary is found (see [`chromium_binary`]) the reason is printed to
    /// stderr and [`BrowserError::NotFound`] returned.
    pub async fn launch(url: &str) -> Result<Browser, BrowserError> {
        let binary = find_chromium().map_err(|reason| {
            eprintln!("browser: {reason}");
            BrowserError::NotFound(reason)
        })?;
        let mut tries = 1;
        loop {
            match Self::launch_once(&binary, url).await {
                Err(BrowserError::Silent { waited, stderr }) if tries < LAUNCH_TRIES => {
                    eprintln!(
                        "browser: chromium silent for {waited:?} (stderr: {stderr:?}); starting it again"
                    );
                    tries += 1;
                }
                launched => return launched,
            }
        }
    }

    async fn launch_once(binary: &Path, url: &str) -> Result<Browser, BrowserError> {
        let deadline = Instant::now() + LAUNCH_PATIENCE;
        let profile = tempfile::Builder::new()
            .prefix("ms-chromium-")
            .tempdir()
            .map_err(BrowserError::Profile)?;
        let mut command = Command::new(binary);
        command
            .arg("--headless")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .arg("--no-first-run")
            .arg("--no-default-browser-check")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-address=127.0.0.1")
            .arg("--remote-debugging-port=0")
            .arg("--window-size=1280,900")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| BrowserError::Spawn {
            binary: binary.to_owned(),
            source,
        })?;
        let stderr = child.stderr.take();
        // From here on, any early return kills the group and removes the profile.
        let mut chromium = Chromium {
            child,
            drain: None,
            _profile: profile,
        };
        let Some(stderr) = stderr else {
            return Err(BrowserError::NoDevToolsAddress {
                why: "stderr was not piped".into(),
                stderr: String::new(),
            });
        };

        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let port = loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if let Some(port) = devtools_port(&line) {
                        break port;
                    }
                    seen.push(line);
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = chromium.child.try_wait().ok().flatten();
                    return Err(BrowserError::NoDevToolsAddress {
                        why: match status {
                            Some(status) => format!("chromium exited: {status}"),
                            None => "its stderr closed".into(),
                        },
                        stderr: seen.join("\n"),
                    });
                }
                Err(_) => {
                    return Err(BrowserError::Silent {
                        waited: LAUNCH_PATIENCE,
                        stderr: seen.join("\n"),
                    });
                }
            }
        };
        chromium.drain = Some(tokio::spawn(async move {
            let mut reader = lines.into_inner();
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        }));

        let page = page_socket_url(port, deadline).await?;
        let socket = match tokio::time::timeout_at(
            deadline,
            tokio_tungstenite::connect_async(&page),
        )
        .await
        {
            Ok(Ok((socket, _response))) => socket,
            Ok(Err(e)) => {
                return Err(BrowserError::Connect {
                    url: page,
                    source: Box::new(e),
                });
            }
            Err(_) => {
                return Err(BrowserError::Timeout {
                    method: format!("websocket handshake with {page}"),
                    waited: LAUNCH_PATIENCE,
                });
            }
        };
        let mut browser = Browser {
            socket,
            next_id: 0,
            chromium,
        };
        // The page target may still show about:blank before navigating to `url`.
        let loaded = if url.starts_with("about:") {
            "document.readyState === 'complete'"
        } else {
            "document.readyState === 'complete' && location.href !== 'about:blank'"
        };
        let left = deadline.saturating_duration_since(Instant::now());
        browser.wait_for(loaded, left).await?;
        Ok(browser)
    }

    /// Evaluates a JS expression in the page (awaiting a promise) and returns its value
    /// as JSON: `undefined` is `null`; `NaN`, `Infinity`, `-0` and bigints are strings.
    pub async fn eval(&mut self, expression: &str) -> Result<Value, BrowserError> {
        let method = "Runtime.evaluate";
        let reply = self
            .call(
                method,
                json!({
                    "expression": expression,
                    "returnByValue": true,
                    "awaitPromise": true,
                }),
            )
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            let text = details
                .pointer("/exception/description")
                .and_then(Value::as_str)
                .or_else(|| details.get("text").and_then(Value::as_str))
                .map(str::to_owned)
                .unwrap_or_else(|| details.to_string());
            return Err(BrowserError::Exception(text));
        }
        let Some(result) = reply.get("result") else {
            return Err(BrowserError::BadReply {
                method: method.into(),
                detail: reply.to_string(),
            });
        };
        if let Some(value) = result.get("value") {
            return Ok(value.clone());
        }
        if let Some(text) = result.get("unserializableValue").and_then(Value::as_str) {
            return Ok(Value::String(text.to_owned()));
        }
        Ok(Value::Null)
    }

    /// Evaluates `expression` every 200 ms until it is JSON `true`; after `timeout`,
    /// [`BrowserError::WaitTimeout`] with the last value (or error) seen. Errors from the
    /// page (an exception, a context torn down by navigation) count as "not yet"; a lost
    /// DevTools connection ends the wait at once.
    pub async fn wait_for(
        &mut self,
        expression: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(expression).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(value) => value.to_string(),
                Err(e) if e.is_transport() => return Err(e),
                Err(e) => format!("error: {e}"),
            };
            if Instant::now() + POLL_EVERY > deadline {
                return Err(BrowserError::WaitTimeout {
                    expression: expression.to_owned(),
                    waited: timeout,
                    last,
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Saves a PNG screenshot of the page's viewport to `path`, creating its parent dirs.
    pub async fn screenshot(&mut self, path: &Path) -> Result<(), BrowserError> {
        let method = "Page.captureScreenshot";
        let reply = self.call(method, json!({ "format": "png" })).await?;
        let bad = |detail: String| BrowserError::BadReply {
            method: method.into(),
            detail,
        };
        let data = reply
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `data`".into()))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| bad(format!("`data` is not base64: {e}")))?;
        let path = path.to_owned();
        let write = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, png)
            }
        })
        .await;
        match write {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(BrowserError::Write { path, source }),
            Err(join) => Err(BrowserError::Write {
                path,
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }

    /// Sends one DevTools command and returns its `result`, skipping events and stale
    /// replies; bounded by [`COMMAND_PATIENCE`].
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        match tokio::time::timeout(COMMAND_PATIENCE, self.exchange(id, method, request)).await {
            Ok(reply) => reply,
            Err(_) => Err(BrowserError::Timeout {
                method: method.to_owned(),
                waited: COMMAND_PATIENCE,
            }),
        }
    }

    async fn exchange(
        &mut self,
        id: u64,
        method: &str,
        request: Value,
    ) -> Result<Value, BrowserError> {
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .map_err(|e| BrowserError::WebSocket(Box::new(e)))?;
        loop {
            let message = match self.socket.next().await {
                None => return Err(BrowserError::Closed),
                Some(Err(e)) => return Err(BrowserError::WebSocket(Box::new(e))),
                Some(Ok(message)) => message,
            };
            let text = match &message {
                Message::Text(text) => text.as_str(),
                Message::Close(_) => return Err(BrowserError::Closed),
                // Pings are answered by tungstenite; CDP sends no binary frames.
                _ => continue,
            };
            let Ok(reply) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            // Events carry no id; replies to earlier, timed-out commands carry an old one.
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| error.to_string());
                return Err(BrowserError::Protocol {
                    method: method.to_owned(),
                    message,
                });
            }
            return match reply.get("result") {
                Some(result) => Ok(result.clone()),
                None => Err(BrowserError::BadReply {
                    method: method.to_owned(),
                    detail: reply.to_string(),
                }),
            };
        }
    }
}

/// The port in `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/...`.
fn devtools_port(line: &str) -> Option<u16> {
    let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// The `webSocketDebuggerUrl` of the first target of type "page", asking
/// `/json/list` again until one shows up or `deadline` passes.
async fn page_socket_url(port: u16, deadline: Instant) -> Result<String, BrowserError> {
    let url = format!("http://127.0.0.1:{port}/json/list");
    let client = crate::http::HttpClient::default();
    loop {
        let reason =
            match tokio::time::timeout_at(deadline, client.send("GET", &url, &[], Bytes::new()))
                .await
            {
                Err(_) => format!("no answer within {LAUNCH_PATIENCE:?}"),
                Ok(Err(e)) => e,
                Ok(Ok(reply)) if reply.status != 200 => {
                    format!("HTTP {}: {}", reply.status, reply.text)
                }
                Ok(Ok(reply)) => {
                    let page = reply.body.as_array().and_then(|targets| {
                        targets
                            .iter()
                            .filter(|t| t.get("type").and_then(Value::as_str) == Some("page"))
                            .find_map(|t| t.get("webSocketDebuggerUrl").and_then(Value::as_str))
                    });
                    match page {
                        Some(page) => return Ok(page.to_owned()),
                        None => format!("no target of type \"page\" in {}", reply.text),
                    }
                }
            };
        if Instant::now() + POLL_EVERY > deadline {
            return Err(BrowserError::NoPageTarget { url, reason });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const PAGE: &str = r#"<!doctype html>
<html><head><title>browser fixture</title></head>
<body><p>count: <span id="counter">0</span></p>
<script>
  let n = 0;
  setInterval(() => { n += 1; document.getElementById('counter').textContent = String(n); }, 100);
</script>
</body></html>"#;

    /// Answers every connection with `PAGE` (and closes it), until the test ends.
    async fn serve_page() -> std::io::Result<(String, JoinHandle<()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // Read the request head (enough for a GET; its content is not used).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}",
                        PAGE.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok((format!("http://{address}/"), server))
    }

    #[test]
    fn reads_the_devtools_port() {
        assert_eq!(
            devtools_port("DevTools listening on ws://127.0.0.1:40321/devtools/browser/ab-cd"),
            Some(40321)
        );
        assert_eq!(
            devtools_port("[1234:5678:ERROR:foo.cc(1)] something else"),
            None
        );
    }

    #[tokio::test]
    #[cfg_attr(no_chromium, ignore = "needs chromium (apt-get install chromium)")]
    async fn loads_a_live_page_reads_it_and_takes_a_screenshot() {
        let (url, server) = serve_page().await.expect("serve the fixture page");
        let mut browser = Browser::launch(&url).await.expect("launch chromium");

        let counter = "Number(document.getElementById('counter').textContent)";
        browser
            .wait_for(&format!("{counter} > 3"), Duration::from_secs(10))
            .await
            .expect("the counter passes 3");
        let title = browser
            .eval("document.title")
            .await
            .expect("read the title");
        assert_eq!(title, json!("browser fixture"));
        let later = browser.eval(counter).await.expect("read the counter");
        assert!(later.as_u64().is_some_and(|n| n > 3), "counter is {later}");
        let promised = browser
            .eval("new Promise(r => setTimeout(() => r({ok: [1, 'two']}), 50))")
            .await
            .expect("await a promise");
        assert_eq!(promised, json!({ "ok": [1, "two"] }));
        match browser.eval("(() => { throw new Error('boom') })()").await {
            Err(BrowserError::Exception(text)) => assert!(text.contains("boom"), "{text}"),
            other => panic!("expected an exception, got {other:?}"),
        }
        match browser.wait_for("false", Duration::from_millis(500)).await {
            Err(BrowserError::WaitTimeout { last, .. }) => assert_eq!(last, "false"),
            other => panic!("expected a wait timeout, got {other:?}"),
        }

        let dir = tempfile::tempdir().expect("temp dir");
        let shot = dir.path().join("nested").join("page.png");
        browser.screenshot(&shot).await.expect("take a screenshot");
        let png = std::fs::read(&shot).expect("read the screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG: {:?}",
            &png[..png.len().min(16)]
        );
        assert!(png.len() > 1000, "screenshot only {} bytes", png.len());

        let pid = browser.chromium.child.id().expect("chromium still running");
        let profile = browser.chromium._profile.path().to_owned();
        drop(browser);
        // No process of the group survives, and the profile is gone.
        // Orphaned helpers (zygote, renderers) are reaped by init, maybe a moment later.
        let pgid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // SAFETY: signal 0 only checks whether any process of the group exists.
        while unsafe { libc::kill(-pgid, 0) } == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "chromium's process group {pid} outlived the Browser by 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!profile.exists(), "{} was not removed", profile.display());
        server.abort();
    }
}
