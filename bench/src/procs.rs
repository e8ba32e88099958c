//! Processes the harness starts, each pinned to a core with `taskset`, and what /proc says
//! about them: CPU time and peak memory, a process and its children together.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running process and the lines it wrote to stderr and stdout.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `program` with `args` on `core`, with `env` added and no `MS_` variables of
    /// ours passed on.
    pub fn start(
        name: &str,
        core: usize,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg(core.to_string())
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if key.starts_with("MS_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for output in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(output).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if let Ok(mut lines) = sink.lock() {
                        lines.push(line);
                    }
                }
            });
        }
        Ok(Proc {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits for a line containing `pattern`; the line.
    pub async fn wait_for(&mut self, pattern: &str, patience: Duration) -> Result<String, String> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(pattern)) {
                return Ok(line);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before logging {pattern:?}:\n{}",
                    self.name,
                    self.lines().join("\n")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not log {pattern:?} within {patience:?}:\n{}",
                    self.name,
                    self.lines().join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address a rust-ms node advertises for `kind` (`rpc`, `http`).
    pub async fn listening(&mut self, kind: &str) -> Result<String, String> {
        let line = self
            .wait_for(&format!("] {kind} listening on "), Duration::from_secs(60))
            .await?;
        line.rsplit(' ')
            .next()
            .map(str::to_owned)
            .ok_or_else(|| format!("no address in {line:?}"))
    }

    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after `patience`.
    pub async fn stop(mut self, patience: Duration) {
        self.signal("TERM");
        if tokio::time::timeout(patience, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// CPU time (user + system) of the process and its children so far.
    pub fn cpu(&self) -> Duration {
        self.pid().map(tree_cpu).unwrap_or_default()
    }

    /// Peak resident memory of the process and its children, in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.pid().map(tree_peak_rss_kb).unwrap_or_default() as f64 / 1024.0
    }
}

impl Drop for Proc {
    /// Whatever happens to the run, nothing it started outlives it: the process and its
    /// children (nginx's workers would not die with their master).
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            for pid in tree(pid).into_iter().rev() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// The process and its direct children (nginx's workers, for instance).
/// The CPU time this process itself has used (every thread, no children): what an
/// in-process client costs.
pub fn own_cpu() -> Duration {
    let ticks_per_second = clock_ticks_per_second().max(1);
    let ticks = stat_fields(std::process::id())
        .map(|f| {
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / ticks_per_second)
}

fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if stat_fields(child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(pid)
            {
                pids.push(child);
            }
        }
    }
    pids
}

/// The fields of /proc/PID/stat after the command name: state, ppid, ... (so utime is
/// index 11 and stime 12).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100)
}

fn tree_cpu(pid: u32) -> Duration {
    let ticks_per_second = clock_ticks_per_second().max(1);
    let ticks: u64 = tree(pid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .sum();
    Duration::from_micros(ticks * 1_000_000 / ticks_per_second)
}

fn tree_peak_rss_kb(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .sum()
}

/// A loopback port free right now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
