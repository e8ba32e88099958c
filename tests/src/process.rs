//! The real binaries as child processes: start them, read their logs as they come, stop
//! them gently (SIGTERM) or not (SIGKILL).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where cargo put the workspace's binaries: beside the test executable's `deps` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins, as scripts/test.sh does)",
        path.display()
    );
    path
}

/// The environment a node starts with: none of the caller's `MS_` variables leak in.
fn clean_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars() {
        if key.starts_with("MS_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1");
    // Many nodes share this host: each admin port where the OS puts it (a test's own
    // variables win).
    command.env("MS_ADMIN__LISTEN", "127.0.0.1:0");
    command
}

/// A finished run of a binary.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a binary to completion (bounded by `patience`).
pub async fn run_to_end(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    patience: Duration,
) -> Output {
    let mut command = clean_command(&binary(name));
    command
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(patience, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} still running after {patience:?}"))
        .expect("run binary");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running node and everything it has logged so far.
pub struct Node {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Arc<Notify>,
    /// Set when the process closed its stderr: it exited, nothing more will come.
    ended: Arc<AtomicBool>,
}

impl Node {
    pub fn start(binary_name: &str, label: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::start_program(&binary(binary_name), label, args, env)
    }

    /// A node of the workspace on the etcd at `etcd_addr`, every port on loopback where
    /// the OS puts it, with `more` variables (which win). A user node gets a token secret
    /// unless `more` sets one.
    pub fn on_etcd(binary_name: &str, label: &str, etcd_addr: &str, more: &[(&str, &str)]) -> Node {
        let mut env = vec![
            ("MS_HTTP_PORT", "0"),
            ("MS_RPC_PORT", "0"),
            ("MS_ADVERTISE_HOST", "127.0.0.1"),
            ("MS_LISTEN_HOST", "127.0.0.1"),
            ("MS_REGISTRY__ETCD_ADDR", etcd_addr),
        ];
        if binary_name == "user" {
            env.push(("MS_USER__TOKEN_SECRET", "integration-test-secret"));
        }
        env.extend_from_slice(more);
        Self::start(binary_name, label, &[], &env)
    }

    /// [`Node::start`] with no admin address given, as a user starts a node: it takes the
    /// default (127.0.0.1:9900), or a free port when another process has that.
    pub fn start_with_default_admin(
        binary_name: &str,
        label: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let mut command = clean_command(&binary(binary_name));
        command.env_remove("MS_ADMIN__LISTEN");
        Self::spawn(command, label, args, env)
    }

    /// [`Node::start`] for a program outside the workspace (a scaffolded service).
    pub fn start_program(program: &Path, label: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::spawn(clean_command(program), label, args, env)
    }

    fn spawn(mut command: Command, label: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn node");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let new_line = Arc::new(Notify::new());
        let stderr = child.stderr.take().expect("piped stderr");
        let ended = Arc::new(AtomicBool::new(false));
        let (sink, notify, label_owned) = (lines.clone(), new_line.clone(), label.to_owned());
        let ended_flag = ended.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if std::env::var("MS_TEST_ECHO").is_ok() {
                    eprintln!("[{label_owned}] {line}");
                }
                sink.lock().unwrap().push(line);
                notify.notify_waiters();
            }
            ended_flag.store(true, Ordering::SeqCst);
            notify.notify_waiters();
        });
        Node {
            name: label.to_owned(),
            child,
            lines,
            new_line,
            ended,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("node still running")
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn count(&self, pattern: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(pattern)).count()
    }

    /// Waits until a log line contains `pattern`; returns it.
    pub async fn wait_for(&self, pattern: &str, patience: Duration) -> String {
        self.wait_until(patience, &format!("a line with {pattern:?}"), |lines| {
            lines.iter().find(|l| l.contains(pattern)).cloned()
        })
        .await
    }

    /// Waits until `check` finds what it looks for in the lines logged so far.
    pub async fn wait_until<T>(
        &self,
        patience: Duration,
        what: &str,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + patience;
        loop {
            let notified = self.new_line.notified();
            if let Some(found) = check(&self.lines()) {
                return found;
            }
            if self.ended.load(Ordering::SeqCst) {
                panic!(
                    "{}: exited before {what} was logged; its log:\n{}",
                    self.name,
                    self.lines().join("\n")
                );
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{}: {what} not logged within {patience:?}; its log:\n{}",
                    self.name,
                    self.lines().join("\n")
                );
            }
        }
    }

    /// The `host:port` the node logged for `kind` (`rpc`, `http` or `admin`).
    pub async fn listening(&self, kind: &str) -> String {
        let marker = format!("] {kind} listening on ");
        let line = self.wait_for(&marker, Duration::from_secs(60)).await;
        // Last on the line; in a JSON line, before the closing quote and brace.
        line.trim_end_matches(['"', '}'])
            .rsplit(' ')
            .next()
            .expect("address at the end")
            .to_owned()
    }

    pub async fn sigterm(&self) {
        signal(self.pid(), "-TERM").await;
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, nothing it was sent is read
    /// or answered, as with a node that hangs.
    pub async fn sigstop(&self) {
        signal(self.pid(), "-STOP").await;
    }

    pub async fn sigkill(&mut self) {
        self.child.start_kill().expect("kill -9");
        let _ = self.child.wait().await;
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(&mut self, patience: Duration) -> Option<i32> {
        tokio::time::timeout(patience, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {patience:?}", self.name))
            .expect("wait for node")
            .code()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

async fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid} failed");
}
