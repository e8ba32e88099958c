//! `bench`: the rust-ms gateway beside nginx and haproxy over the same upstream nodes, in
//! one bounded run on loopback, proxies pinned to core 0 and everything else to core 1.
//! Writes RESULTS.md, results.json and results.png into `--out`.
//!
//! Run it through `scripts/bench.sh`, which installs etcd, nginx and haproxy from Debian,
//! builds the release binaries, and pins this process to core 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use prost::Message;
use rust_ms_bench::echo::pb::{Payload, StreamRequest};
use rust_ms_bench::load::{self, HttpCall, Load, Outcome};
use rust_ms_bench::procs::{Proc, free_port};
use rust_ms_bench::results::{
    BaselineCost, ClientCost, Failover, Propagation, RestCost, Results, Row, Scale, TelemetryCost,
};

const PROXY_CORE: usize = 0;
const OTHER_CORE: usize = 1;
const STARTUP: Duration = Duration::from_secs(60);

/// Benchmarks rust-ms against nginx and haproxy, side by side.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    /// Calls per measured row.
    #[arg(long, default_value_t = 60_000)]
    calls: u64,
    /// Client connections per row.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// A row stops after this many seconds even if calls remain.
    #[arg(long, default_value_t = 30)]
    max_seconds: u64,
    /// Discovery trials per registry.
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Instances written to etcd for the scale run (in a tenth as many services); 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    /// Where RESULTS.md, results.json and results.png go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// ABBA rounds of the telemetry-cost measurement (each gateway measured twice a round).
    #[arg(long, default_value_t = 8)]
    telemetry_rounds: usize,
    /// Only the proxy rows (no propagation, scale or failover).
    #[arg(long)]
    proxies_only: bool,
    /// Measure only these targets (comma-separated: direct, rust-ms rpc, nginx, haproxy),
    /// for profiling one of them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A gateway binary of another build (say, the last commit's) whose rpc port and
    /// `/api` are measured in turns against this tree's, both with telemetry off.
    #[arg(long, value_name = "PATH")]
    baseline_gateway: Option<PathBuf>,
    /// ABBA rounds of the service client against a bare tonic channel; 0 skips it.
    #[arg(long, default_value_t = 6)]
    client_rounds: usize,
    /// Only the overload runs (load shedding on and off), nothing else.
    #[arg(long)]
    overload_only: bool,
    /// Seconds of each overload run.
    #[arg(long, default_value_t = 15)]
    overload_seconds: u64,
    /// Rounds of the overload runs: each round measures every gateway unloaded and then
    /// overloaded, back to back, and the summary takes the median of the rounds'
    /// comparisons (a 1 ms p99 moves between identical runs on a shared machine).
    #[arg(long, default_value_t = 3)]
    overload_rounds: usize,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The release binaries beside this one.
fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .parent()
        .map(|dir| dir.join(name))
        .ok_or("no folder for the binaries")?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: cargo build --release --workspace --bins",
            path.display()
        ))
    }
}

fn which(program: &str) -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("{program} is missing (scripts/bench.sh installs it)"))
}

fn addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|e| format!("{text}: {e}"))
}

/// A gateway with metrics and traces off.
const UNOBSERVED: [(&str, &str); 2] =
    [("MS_TELEMETRY__METRICS", "false"), ("MS_ADMIN__LISTEN", "")];

struct Cluster {
    tmp: PathBuf,
    etcd: Proc,
    etcd_addr: String,
    echoes: Vec<(Proc, String)>,
    /// As an operator runs it: metrics on, traces sampled at 1% to `collector`.
    gateway: Proc,
    gateway_rpc: String,
    gateway_http: String,
    /// The same gateway with metrics and traces off, to measure what they cost.
    plain: Proc,
    plain_rpc: String,
    plain_http: String,
    collector: telemetry::collector::Collector,
}

async fn start_etcd(tmp: &Path) -> Result<(Proc, String), String> {
    let (client, peer) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = tmp.join("etcd");
    let mut etcd = Proc::start(
        "etcd",
        OTHER_CORE,
        &which("etcd")?,
        &[
            "--data-dir",
            &data.to_string_lossy(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("default={peer_url}"),
        ],
        &[],
    )?;
    etcd.wait_for("ready to serve client requests", STARTUP)
        .await?;
    Ok((etcd, format!("127.0.0.1:{client}")))
}

fn node_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MS_ADVERTISE_HOST", "127.0.0.1"),
        ("MS_LISTEN_HOST", "127.0.0.1"),
        // Several nodes on one host: each admin port where the OS puts it.
        ("MS_ADMIN__LISTEN", "127.0.0.1:0"),
    ]
}

async fn start_echo(etcd_addr: &str, n: usize) -> Result<(Proc, String), String> {
    let mut echo = Proc::start(
        &format!("echo-{n}"),
        OTHER_CORE,
        &sibling("bench-echo")?,
        &["--etcd-addr", etcd_addr, "--rpc-port", "0"],
        &node_env(),
    )?;
    let address = echo.listening("rpc").await?;
    Ok((echo, address))
}

async fn start_gateway(
    etcd_addr: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<Proc, String> {
    start_gateway_from(&sibling("gateway")?, etcd_addr, name, extra).await
}

/// A gateway from the binary at `program`, as [`start_gateway`] starts this tree's.
async fn start_gateway_from(
    program: &Path,
    etcd_addr: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<Proc, String> {
    let mut env = node_env();
    env.extend_from_slice(&[
        // The harness counts nodes through /cluster.
        ("MS_GATEWAY__PUBLIC_CLUSTER_VIEW", "true"),
        // One line per call is not what a proxy at 40,000 calls/s is run with.
        ("MS_GATEWAY__ACCESS_LOG", "false"),
        // The rows drive each proxy with a closed loop as fast as it goes, an overload by
        // design, which load shedding would answer by refusing calls; nginx and haproxy
        // do not, and the rows compare forwarding. The overload runs turn it on.
        ("MS_GATEWAY__LOAD_SHEDDING", "false"),
    ]);
    env.extend_from_slice(extra);
    Proc::start(
        name,
        PROXY_CORE,
        program,
        &[
            "--etcd-addr",
            etcd_addr,
            "--http-port",
            "0",
            "--rpc-port",
            "0",
        ],
        &env,
    )
}

/// What two `busy` nodes take together, calls a second.
const BUSY_CAPACITY: f64 =
    2.0 * rust_ms_bench::busy::WORKERS as f64 / rust_ms_bench::busy::WORK.as_secs_f64();
/// The deadline of every call of the overload runs.
const OVERLOAD_DEADLINE: Duration = Duration::from_secs(2);
/// The steady rate of the other service's calls beside them.
const ECHO_BESIDE: f64 = 500.0;
/// How long each run's load goes on before it is measured: the limit learns in the first
/// hundreds of milliseconds of an overload, and what it admits then is the warm-up's.
const OVERLOAD_WARMUP: Duration = Duration::from_secs(2);

/// The overload runs, on a cluster of their own: two `busy` nodes and one echo node
/// behind a gateway with load shedding on and one with it off (telemetry off on both),
/// each measured unloaded (`Busy` at a quarter of its capacity) and overloaded (at four
/// times it), `Echo` beside it at [`ECHO_BESIDE`] a second, `for_each` per run.
async fn overload(
    for_each: Duration,
    rounds: usize,
) -> Result<rust_ms_bench::results::Overload, String> {
    let tmp = std::env::temp_dir().join(format!("rust-ms-overload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let (etcd, etcd_addr) = start_etcd(&tmp).await?;
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let mut busy = Proc::start(
            &format!("busy-{n}"),
            OTHER_CORE,
            &sibling("bench-busy")?,
            &["--etcd-addr", &etcd_addr, "--rpc-port", "0"],
            &node_env(),
        )?;
        let address = busy.listening("rpc").await?;
        nodes.push((busy, address));
    }
    nodes.push(start_echo(&etcd_addr, 1).await?);
    let addresses: Vec<&str> = nodes.iter().map(|(_, a)| a.as_str()).collect();
    let mut gateways = Vec::new();
    for (shedding, value) in [("on", "true"), ("off", "false")] {
        let mut extra = UNOBSERVED.to_vec();
        extra.push(("MS_GATEWAY__LOAD_SHEDDING", value));
        let mut gateway =
            start_gateway(&etcd_addr, &format!("gateway-shedding-{shedding}"), &extra).await?;
        let rpc = gateway.listening("rpc").await?;
        wait_joined(&mut gateway, &addresses).await?;
        gateways.push((shedding, gateway, addr(&rpc)?));
    }
    let frame = payload(100);
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for (shedding, _, address) in &gateways {
            for (phase, busy_rate) in [
                ("unloaded", BUSY_CAPACITY / 4.0),
                ("overloaded", BUSY_CAPACITY * 4.0),
            ] {
                eprintln!(
                    "overload round {round}: shedding {shedding}, {phase}: Busy at {busy_rate:.0}/s, Echo at {ECHO_BESIDE:.0}/s"
                );
                let busy = rust_ms_bench::paced::grpc(
                    *address,
                    "/bench.v1.Busy/Work",
                    frame.clone(),
                    busy_rate,
                    OVERLOAD_WARMUP,
                    for_each,
                    OVERLOAD_DEADLINE,
                );
                let echo = rust_ms_bench::paced::grpc(
                    *address,
                    "/bench.v1.Echo/Echo",
                    frame.clone(),
                    ECHO_BESIDE,
                    OVERLOAD_WARMUP,
                    for_each,
                    OVERLOAD_DEADLINE,
                );
                let (busy, echo) = tokio::join!(busy, echo);
                let (busy, echo) = (busy?, echo?);
                eprintln!(
                    "  Busy: {:.0}/s answered, p50 {:.1} ms, p99 {:.1} ms, {} shed, {} timed out; Echo p99 {:.2} ms",
                    busy.goodput(),
                    busy.p50_ms,
                    busy.p99_ms,
                    busy.shed,
                    busy.timed_out,
                    echo.p99_ms
                );
                runs.push(rust_ms_bench::results::OverloadRun {
                    round,
                    shedding: (*shedding).to_owned(),
                    phase: phase.to_owned(),
                    busy,
                    echo,
                });
                // Whatever queued on the nodes ends (by its deadline at the latest).
                tokio::time::sleep(OVERLOAD_DEADLINE + Duration::from_secs(1)).await;
            }
        }
    }
    for (_, gateway, _) in gateways {
        gateway.stop(Duration::from_secs(10)).await;
    }
    for (node, _) in nodes {
        node.stop(Duration::from_secs(10)).await;
    }
    etcd.stop(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(rust_ms_bench::results::Overload {
        capacity_per_s: BUSY_CAPACITY,
        deadline_ms: OVERLOAD_DEADLINE.as_millis() as u64,
        runs,
    })
}

async fn wait_joined(gateway: &mut Proc, addresses: &[&str]) -> Result<(), String> {
    for address in addresses {
        gateway
            .wait_for(&format!("cluster [{address}] join"), STARTUP)
            .await?;
    }
    Ok(())
}

impl Cluster {
    async fn start() -> Result<Cluster, String> {
        let tmp = std::env::temp_dir().join(format!("rust-ms-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let (etcd, etcd_addr) = start_etcd(&tmp).await?;
        let mut echoes = Vec::new();
        for n in 1..=3 {
            echoes.push(start_echo(&etcd_addr, n).await?);
        }
        let collector = telemetry::collector::Collector::start()
            .await
            .map_err(|e| format!("the OTLP collector: {e}"))?;
        let observed = [
            ("MS_TELEMETRY__OTLP_ENDPOINT", collector.endpoint.as_str()),
            ("MS_TELEMETRY__SAMPLE_RATIO", "0.01"),
        ];
        let mut gateway = start_gateway(&etcd_addr, "gateway", &observed).await?;
        let gateway_rpc = gateway.listening("rpc").await?;
        let gateway_http = gateway.listening("http").await?;
        let addresses: Vec<&str> = echoes.iter().map(|(_, a)| a.as_str()).collect();
        wait_joined(&mut gateway, &addresses).await?;
        let mut plain = start_gateway(&etcd_addr, "gateway-plain", &UNOBSERVED).await?;
        let plain_rpc = plain.listening("rpc").await?;
        let plain_http = plain.listening("http").await?;
        wait_joined(&mut plain, &addresses).await?;
        Ok(Cluster {
            tmp,
            etcd,
            etcd_addr,
            echoes,
            gateway,
            gateway_rpc,
            gateway_http,
            plain,
            plain_rpc,
            plain_http,
            collector,
        })
    }

    fn upstreams(&self) -> Vec<&str> {
        self.echoes.iter().map(|(_, a)| a.as_str()).collect()
    }
}

async fn start_nginx(tmp: &Path, upstreams: &[&str]) -> Result<(Proc, String), String> {
    let port = free_port()?;
    let servers: String = upstreams
        .iter()
        .map(|a| format!("    server {a};\n"))
        .collect();
    let dir = tmp.join("nginx");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {dir}/nginx.pid;\nerror_log stderr warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n  upstream echo {{\n{servers}    keepalive 64;\n    keepalive_requests 100000000;\n  }}\n  server {{\n    listen 127.0.0.1:{port} http2;\n    http2_max_concurrent_streams 1024;\n    keepalive_requests 100000000;\n    location / {{ grpc_pass grpc://echo; }}\n  }}\n}}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let nginx = Proc::start(
        "nginx",
        PROXY_CORE,
        &which("nginx")?,
        &["-c", &path.to_string_lossy(), "-e", "stderr"],
        &[],
    )?;
    Ok((nginx, format!("127.0.0.1:{port}")))
}

async fn start_haproxy(tmp: &Path, upstreams: &[&str]) -> Result<(Proc, String), String> {
    let port = free_port()?;
    let servers: String = upstreams
        .iter()
        .enumerate()
        .map(|(n, a)| format!("  server s{n} {a} proto h2\n"))
        .collect();
    let config = format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend grpc\n  bind 127.0.0.1:{port} proto h2\n  default_backend echo\nbackend echo\n  balance roundrobin\n{servers}"
    );
    let path = tmp.join("haproxy.cfg");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let haproxy = Proc::start(
        "haproxy",
        PROXY_CORE,
        &which("haproxy")?,
        &["-db", "-f", &path.to_string_lossy()],
        &[],
    )?;
    Ok((haproxy, format!("127.0.0.1:{port}")))
}

/// Calls until one succeeds: the target is up and routes.
async fn wait_answers(address: SocketAddr, path: &str, frame: &Bytes) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP;
    let once = Load {
        connections: 1,
        streams: 1,
        calls: 1,
        max_time: Duration::from_secs(5),
    };
    loop {
        match load::grpc(address, path, frame.clone(), once).await {
            Ok(outcome) if outcome.failed == 0 && outcome.calls == 1 => return Ok(()),
            other if Instant::now() > deadline => {
                return Err(format!("{address}{path} never answered: {other:?}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn row(load: &str, target: &str, outcome: &Outcome, proxy: Option<(&Proc, Duration)>) -> Row {
    let cpu_us_per_call = proxy.map(|(proc, before)| {
        let used = proc.cpu().saturating_sub(before);
        used.as_secs_f64() * 1e6 / outcome.calls.max(1) as f64
    });
    let row = Row {
        load: load.to_owned(),
        target: target.to_owned(),
        calls: outcome.calls,
        failed: outcome.failed,
        seconds: outcome.elapsed.as_secs_f64(),
        calls_per_s: outcome.per_second(),
        p50_us: outcome.percentile_us(50.0),
        p99_us: outcome.percentile_us(99.0),
        p999_us: outcome.percentile_us(99.9),
        cpu_us_per_call,
        peak_rss_mb: proxy.map(|(proc, _)| proc.peak_rss_mb()),
    };
    eprintln!(
        "{:<28} {:<14} {:>8.0} calls/s  p50 {:>6.0} µs  p99 {:>7.0} µs  cpu {:>6} µs/call  failed {}{}",
        row.load,
        row.target,
        row.calls_per_s,
        row.p50_us,
        row.p99_us,
        row.cpu_us_per_call
            .map_or("–".to_owned(), |c| format!("{c:.1}")),
        row.failed,
        outcome
            .first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    row
}

struct Target<'a> {
    name: &'static str,
    address: SocketAddr,
    proxy: Option<&'a Proc>,
}

async fn measure_grpc(
    results: &mut Results,
    load_name: &str,
    path: &str,
    frame: &Bytes,
    targets: &[Target<'_>],
    load: Load,
) -> Result<(), String> {
    for target in targets {
        let warm = Load {
            calls: (load.calls / 10).clamp(100, 5_000),
            ..load
        };
        load::grpc(target.address, path, frame.clone(), warm).await?;
        let before = target.proxy.map(Proc::cpu).unwrap_or_default();
        let outcome = load::grpc(target.address, path, frame.clone(), load).await?;
        results.rows.push(row(
            load_name,
            target.name,
            &outcome,
            target.proxy.map(|p| (p, before)),
        ));
    }
    Ok(())
}

/// The two loads gateways are compared on in turns: unary 100 B under `load`, and one
/// call at a time.
fn compared_loads(load: Load) -> [(&'static str, Load); 2] {
    let one_at_a_time = Load {
        connections: 1,
        streams: 1,
        calls: (load.calls / 10).max(1_000),
        ..load
    };
    [
        ("unary 100 B", load),
        ("unary 100 B, 1 call at a time", one_at_a_time),
    ]
}

/// The CPU per call of two proxies, `a` and `b`, measured in turns (ABBA, `rounds` times)
/// so that neither gains from going first or from the machine's drift.
async fn in_turns(
    a: (SocketAddr, &Proc),
    b: (SocketAddr, &Proc),
    path: &str,
    frame: &Bytes,
    load: Load,
    rounds: usize,
) -> Result<(f64, f64), String> {
    // (cpu, calls) of a, then of b.
    let mut used = [(Duration::ZERO, 0u64); 2];
    for round in 0..rounds * 2 {
        let turn = usize::from(round % 4 == 1 || round % 4 == 2);
        let (address, proc) = [a, b][turn];
        let before = proc.cpu();
        let outcome = load::grpc(address, path, frame.clone(), load).await?;
        used[turn].0 += proc.cpu().saturating_sub(before);
        used[turn].1 += outcome.calls as u64;
    }
    let per_call = |(cpu, calls): (Duration, u64)| cpu.as_secs_f64() * 1e6 / calls.max(1) as f64;
    Ok((per_call(used[0]), per_call(used[1])))
}

/// One side of an HTTP measurement in turns: where the call goes, the process whose CPU
/// is counted, and the call.
type HttpSide<'a> = (SocketAddr, &'a Proc, &'a HttpCall);

/// The CPU per call and calls/s of two HTTP sides, measured in turns (ABBA, `rounds`
/// times); a failed call is an error, since it would make the other side look cheaper.
async fn http_in_turns(
    a: HttpSide<'_>,
    b: HttpSide<'_>,
    load: Load,
    rounds: usize,
) -> Result<[(f64, f64); 2], String> {
    // (cpu, calls, seconds) of a, then of b.
    let mut used = [(Duration::ZERO, 0u64, 0f64); 2];
    for round in 0..rounds * 2 {
        let turn = usize::from(round % 4 == 1 || round % 4 == 2);
        let (address, proc, call) = [a, b][turn];
        let before = proc.cpu();
        let outcome = load::http(address, call.clone(), load).await?;
        if outcome.failed > 0 {
            return Err(format!(
                "{} failed {} calls: {:?}",
                call.path, outcome.failed, outcome.first_error
            ));
        }
        used[turn].0 += proc.cpu().saturating_sub(before);
        used[turn].1 += outcome.calls;
        used[turn].2 += outcome.elapsed.as_secs_f64();
    }
    Ok(used.map(|(cpu, calls, seconds)| {
        (
            cpu.as_secs_f64() * 1e6 / calls.max(1) as f64,
            calls as f64 / seconds.max(1e-9),
        )
    }))
}

/// What a REST route costs beside `/api` for the same method: the gateway's CPU per call
/// for each, in turns, under `load` and one call at a time.
async fn rest_cost(
    cluster: &Cluster,
    address: SocketAddr,
    api: &HttpCall,
    rest: &HttpCall,
    load: Load,
    rounds: usize,
) -> Result<Vec<RestCost>, String> {
    let mut costs = Vec::new();
    for (name, load) in compared_loads(load) {
        let [(api_us, api_per_s), (rest_us, rest_per_s)] = http_in_turns(
            (address, &cluster.gateway, api),
            (address, &cluster.gateway, rest),
            load,
            rounds,
        )
        .await?;
        let cost = RestCost {
            load: name.replace("unary", "JSON"),
            rounds,
            api_us_per_call: api_us,
            rest_us_per_call: rest_us,
            api_calls_per_s: api_per_s,
            rest_calls_per_s: rest_per_s,
        };
        eprintln!("REST against /api: {cost:?}");
        costs.push(cost);
    }
    Ok(costs)
}

/// What metrics and 1% traces cost per call: the gateway with them and without, in turns,
/// on unary 100 B and on one call at a time.
async fn telemetry_cost(
    cluster: &Cluster,
    path: &str,
    frame: &Bytes,
    load: Load,
    rounds: usize,
) -> Result<Vec<TelemetryCost>, String> {
    let on = (addr(&cluster.gateway_rpc)?, &cluster.gateway);
    let off = (addr(&cluster.plain_rpc)?, &cluster.plain);
    let mut costs = Vec::new();
    for (name, load) in compared_loads(load) {
        let (with, without) = in_turns(on, off, path, frame, load, rounds).await?;
        let cost = TelemetryCost {
            load: name.to_owned(),
            rounds,
            with_us_per_call: with,
            without_us_per_call: without,
        };
        eprintln!("telemetry cost: {cost:?}");
        costs.push(cost);
    }
    Ok(costs)
}

/// This tree's rpc port against a gateway built elsewhere (`program`), both with
/// telemetry off, in turns on the same echo nodes.
async fn baseline_cost(
    cluster: &Cluster,
    program: &Path,
    path: &str,
    frame: &Bytes,
    api: &HttpCall,
    load: Load,
    rounds: usize,
) -> Result<Vec<BaselineCost>, String> {
    let mut baseline =
        start_gateway_from(program, &cluster.etcd_addr, "gateway-baseline", &UNOBSERVED).await?;
    let baseline_rpc = baseline.listening("rpc").await?;
    wait_joined(&mut baseline, &cluster.upstreams()).await?;
    wait_answers(addr(&baseline_rpc)?, path, frame).await?;
    let this = (addr(&cluster.plain_rpc)?, &cluster.plain);
    let other = (addr(&baseline_rpc)?, &baseline);
    // (load, this, baseline): the rpc port, then the same echo as JSON on /api.
    let mut measured = Vec::new();
    for (name, load) in compared_loads(load) {
        let (this_us, baseline_us) = in_turns(this, other, path, frame, load, rounds).await?;
        measured.push((name.to_owned(), this_us, baseline_us));
    }
    let baseline_http = addr(&baseline.listening("http").await?)?;
    let this_http = addr(&cluster.plain_http)?;
    for (name, load) in compared_loads(load) {
        let [(this_us, _), (baseline_us, _)] = http_in_turns(
            (this_http, &cluster.plain, api),
            (baseline_http, &baseline, api),
            load,
            rounds,
        )
        .await?;
        measured.push((
            format!("{} on /api", name.replace("unary", "JSON")),
            this_us,
            baseline_us,
        ));
    }
    let costs = measured
        .into_iter()
        .map(|(load, this_us, baseline_us)| {
            let cost = BaselineCost {
                load,
                rounds,
                baseline: program.display().to_string(),
                this_us_per_call: this_us,
                baseline_us_per_call: baseline_us,
            };
            eprintln!("against the baseline: {cost:?}");
            cost
        })
        .collect();
    baseline.stop(Duration::from_secs(10)).await;
    Ok(costs)
}

/// The calling process's CPU per call through the service client and through a bare
/// tonic channel, to the same echo node, in turns (ABBA): one call at a time, and 16 at
/// once.
async fn client_cost(echo: &str, calls: usize, rounds: usize) -> Result<Vec<ClientCost>, String> {
    use futures::StreamExt;
    use rust_ms::registry::{Instance, Registration, Registry};
    use rust_ms_bench::echo::pb::echo_client::EchoClient;

    let registry = std::sync::Arc::new(rust_ms::memory::MemoryRegistry::new());
    let _registered = registry
        .register(Registration::new(Instance::new("echo", echo)))
        .await
        .map_err(|e| format!("registering the echo node: {e}"))?;
    let options = rust_ms::ClientOptions::from_config(
        &Default::default(),
        "echo",
        rust_ms::ClusterCredentials::default(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let service_client = rust_ms::ServiceChannel::connect(registry.clone(), "echo", options, &stop)
        .await
        .map_err(|e| format!("the service client: {e}"))?;
    let tonic_channel = tonic::transport::Channel::from_shared(format!("http://{echo}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("a tonic channel to {echo}: {e}"))?;
    let message = Payload {
        data: vec![b'x'; 100],
    };
    // One turn: `calls` calls, `at_once` at a time; the process's CPU and the time taken.
    async fn turn<C>(
        client: EchoClient<C>,
        message: &Payload,
        calls: usize,
        at_once: usize,
    ) -> Result<(Duration, Duration), String>
    where
        C: tonic::client::GrpcService<tonic::body::Body> + Clone,
        C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        C::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
        <C::ResponseBody as http_body::Body>::Error:
            Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let (cpu, started) = (rust_ms_bench::procs::own_cpu(), Instant::now());
        let failed = std::sync::atomic::AtomicUsize::new(0);
        futures::stream::iter(0..calls)
            .for_each_concurrent(at_once, |_| {
                let (mut client, failed) = (client.clone(), &failed);
                async move {
                    if client.echo(message.clone()).await.is_err() {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await;
        let failed = failed.into_inner();
        if failed > 0 {
            return Err(format!("{failed} of {calls} echo calls failed"));
        }
        Ok((
            rust_ms_bench::procs::own_cpu().saturating_sub(cpu),
            started.elapsed(),
        ))
    }
    let mut costs = Vec::new();
    for (name, at_once) in [
        ("unary 100 B, 1 call at a time", 1),
        ("unary 100 B, 16 at once", 16),
    ] {
        // Warm both: connections open, the method's policy learnt.
        turn(
            EchoClient::new(service_client.clone()),
            &message,
            200,
            at_once,
        )
        .await?;
        turn(
            EchoClient::new(tonic_channel.clone()),
            &message,
            200,
            at_once,
        )
        .await?;
        // (cpu, wall) of the service client, then of the tonic channel.
        let mut used = [(Duration::ZERO, Duration::ZERO); 2];
        for round in 0..rounds * 2 {
            let which = usize::from(round % 4 == 1 || round % 4 == 2);
            let (cpu, wall) = if which == 0 {
                turn(
                    EchoClient::new(service_client.clone()),
                    &message,
                    calls,
                    at_once,
                )
                .await?
            } else {
                turn(
                    EchoClient::new(tonic_channel.clone()),
                    &message,
                    calls,
                    at_once,
                )
                .await?
            };
            used[which].0 += cpu;
            used[which].1 += wall;
        }
        let total = (calls * rounds) as f64;
        let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / total;
        let per_second = |wall: Duration| total / wall.as_secs_f64().max(f64::MIN_POSITIVE);
        let cost = ClientCost {
            load: name.to_owned(),
            rounds,
            service_client_us_per_call: per_call(used[0].0),
            tonic_channel_us_per_call: per_call(used[1].0),
            service_client_calls_per_s: per_second(used[0].1),
            tonic_channel_calls_per_s: per_second(used[1].1),
        };
        eprintln!("service client: {cost:?}");
        costs.push(cost);
    }
    stop.cancel();
    Ok(costs)
}

fn payload(size: usize) -> Bytes {
    let message = Payload {
        data: vec![b'x'; size],
    };
    load::grpc_frame(&message.encode_to_vec())
}

async fn run(cli: Cli) -> Result<(), String> {
    if cli.overload_only {
        let results = Results {
            date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            machine: machine(),
            pinning: format!(
                "Both gateways pinned to core {PROXY_CORE}; etcd, the nodes and the load generator to core {OTHER_CORE}."
            ),
            overload: Some(
                overload(
                    Duration::from_secs(cli.overload_seconds),
                    cli.overload_rounds.max(1),
                )
                .await?,
            ),
            ..Results::default()
        };
        return write(&cli.out, &results);
    }
    let mut results = Results {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(),
        pinning: format!(
            "Proxies (the rust-ms gateway, nginx {}, haproxy {}) pinned to core {PROXY_CORE}; etcd, the three echo nodes and the load generator pinned to core {OTHER_CORE}. {} connections × {} concurrent calls, {} calls per row, default configurations (the gateway's resilience on: balancing, ejection, health checks, retry budget; its load shedding off, since a closed loop as fast as the proxy goes is an overload by design).",
            command_line("sh", &["-c", "nginx -v 2>&1 | sed 's/.*nginx\\///'"]),
            command_line("sh", &["-c", "haproxy -v | head -n1 | awk '{print $3}'"]),
            cli.connections,
            cli.streams,
            cli.calls
        ),
        ..Results::default()
    };
    let load = Load {
        connections: cli.connections,
        streams: cli.streams,
        calls: cli.calls,
        max_time: Duration::from_secs(cli.max_seconds),
    };
    let mut cluster = Cluster::start().await?;
    let upstreams = cluster.upstreams();
    let (mut nginx, nginx_addr) = start_nginx(&cluster.tmp, &upstreams).await?;
    let (mut haproxy, haproxy_addr) = start_haproxy(&cluster.tmp, &upstreams).await?;
    let _ = (&mut nginx, &mut haproxy);

    let small = payload(100);
    let echo_path = "/bench.v1.Echo/Echo";
    let targets = [
        Target {
            name: "direct",
            address: addr(&cluster.echoes[0].1)?,
            proxy: None,
        },
        Target {
            name: "rust-ms rpc",
            address: addr(&cluster.gateway_rpc)?,
            proxy: Some(&cluster.gateway),
        },
        Target {
            name: "rust-ms rpc without telemetry",
            address: addr(&cluster.plain_rpc)?,
            proxy: Some(&cluster.plain),
        },
        Target {
            name: "nginx",
            address: addr(&nginx_addr)?,
            proxy: Some(&nginx),
        },
        Target {
            name: "haproxy",
            address: addr(&haproxy_addr)?,
            proxy: Some(&haproxy),
        },
    ];
    let targets: Vec<Target> = targets
        .into_iter()
        .filter(|t| cli.only.is_empty() || cli.only.iter().any(|o| o == t.name))
        .collect();
    for target in &targets {
        wait_answers(target.address, echo_path, &small).await?;
    }

    measure_grpc(
        &mut results,
        "unary 100 B",
        echo_path,
        &small,
        &targets,
        load,
    )
    .await?;
    let large = payload(16 * 1024);
    measure_grpc(
        &mut results,
        "unary 16 KiB",
        echo_path,
        &large,
        &targets,
        load,
    )
    .await?;
    let stream = load::grpc_frame(
        &StreamRequest {
            data: vec![b'x'; 100],
            count: 10,
        }
        .encode_to_vec(),
    );
    let stream_load = Load {
        calls: load.calls / 4,
        ..load
    };
    measure_grpc(
        &mut results,
        "server stream 10 × 100 B",
        "/bench.v1.Echo/Stream",
        &stream,
        &targets,
        stream_load,
    )
    .await?;
    let one_at_a_time = Load {
        connections: 1,
        streams: 1,
        calls: (load.calls / 10).max(1_000),
        ..load
    };
    measure_grpc(
        &mut results,
        "unary 100 B, 1 call at a time",
        echo_path,
        &small,
        &targets,
        one_at_a_time,
    )
    .await?;

    // The same echo as JSON over HTTP/1.1, on /api and on its REST route, and the stream
    // as Server-Sent Events, beside the rpc port's rows above.
    let json_body = Bytes::from(format!("{{\"data\":\"{}\"}}", "eHh4".repeat(100 / 3 + 1)));
    let api = addr(&cluster.gateway_http)?;
    let api_call = HttpCall::post("/api/echo/Echo", json_body.clone());
    let rest_call = HttpCall::get(format!("/v1/echo?data={}", "eHh4".repeat(100 / 3 + 1)));
    let events_call = HttpCall::get(format!(
        "/v1/echo/stream?data={}&count=10",
        "eHh4".repeat(100 / 3 + 1)
    ))
    .as_events();
    let http_rows = [
        ("JSON 100 B (HTTP/1.1)", "rust-ms /api", &api_call, load),
        (
            "JSON 100 B (HTTP/1.1)",
            "rust-ms REST GET",
            &rest_call,
            load,
        ),
        (
            "server stream 10 × 100 B as SSE (HTTP/1.1)",
            "rust-ms REST GET",
            &events_call,
            stream_load,
        ),
    ];
    for (load_name, target, call, load) in http_rows {
        let warm = Load {
            calls: 2_000,
            ..load
        };
        load::http(api, call.clone(), warm).await?;
        let before = cluster.gateway.cpu();
        let outcome = load::http(api, call.clone(), load).await?;
        results.rows.push(row(
            load_name,
            target,
            &outcome,
            Some((&cluster.gateway, before)),
        ));
    }
    if cli.only.is_empty() {
        results.rest = rest_cost(
            &cluster,
            api,
            &api_call,
            &rest_call,
            load,
            cli.telemetry_rounds,
        )
        .await?;
    }
    nginx.stop(Duration::from_secs(5)).await;
    haproxy.stop(Duration::from_secs(5)).await;
    if cli.only.is_empty() {
        results.telemetry =
            telemetry_cost(&cluster, echo_path, &small, load, cli.telemetry_rounds).await?;
    }
    if let Some(program) = &cli.baseline_gateway {
        results.baseline = baseline_cost(
            &cluster,
            program,
            echo_path,
            &small,
            &api_call,
            load,
            cli.telemetry_rounds,
        )
        .await?;
    }
    if cli.client_rounds > 0 {
        let calls = (cli.calls as usize / 10).max(1_000);
        results.client = client_cost(&cluster.echoes[0].1, calls, cli.client_rounds).await?;
    }
    results.spans_exported = cluster.collector.count();
    eprintln!("spans exported at 1% sampling: {}", results.spans_exported);

    if !cli.proxies_only {
        results
            .propagation
            .extend(propagation_etcd(&mut cluster, cli.trials).await?);
        let target = cluster.echoes[0].1.clone();
        results
            .propagation
            .push(propagation_memory(&target, cli.trials).await?);
        results.failover = failover(&mut cluster, &json_body).await?;
        results.overload = Some(
            overload(
                Duration::from_secs(cli.overload_seconds),
                cli.overload_rounds.max(1),
            )
            .await?,
        );
        if cli.instances > 0 {
            results.scale = Some(scale(&cluster, cli.instances).await?);
        }
    }
    write(&cli.out, &results)?;
    let Cluster {
        etcd,
        echoes,
        gateway,
        plain,
        tmp,
        ..
    } = cluster;
    gateway.stop(Duration::from_secs(10)).await;
    plain.stop(Duration::from_secs(10)).await;
    for (echo, _) in echoes {
        echo.stop(Duration::from_secs(10)).await;
    }
    etcd.stop(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(tmp);
    Ok(())
}

fn write(out: &Path, results: &Results) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    std::fs::write(out.join("results.json"), json).map_err(|e| e.to_string())?;
    let mut markdown = results.markdown();
    if results.rows.is_empty() {
        std::fs::write(out.join("RESULTS.md"), markdown).map_err(|e| e.to_string())?;
        eprintln!("bench: wrote {}/RESULTS.md, results.json", out.display());
        return Ok(());
    }
    match rust_ms_bench::chart::draw(results, &out.join("results.png")) {
        Ok(()) => markdown.push_str("\n![calls/s and CPU per call](results.png)\n"),
        Err(error) => eprintln!("bench: no chart: {error}"),
    }
    std::fs::write(out.join("RESULTS.md"), markdown).map_err(|e| e.to_string())?;
    eprintln!("bench: wrote {}/RESULTS.md, results.json", out.display());
    Ok(())
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // The machine's cores, not this pinned process's share of them.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("?".to_owned(), |kb| format!("{} GiB", kb / 1024 / 1024));
    format!(
        "{model}, {cores} cores, {memory}, Linux {}",
        command_line("uname", &["-r"])
    )
}

/// A raw HTTP/1.1 POST on a fresh connection; the status.
async fn post_status(address: &str, path: &str, body: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&reply)
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// Register → answered through both gateways, `trials` times, through etcd; then the same
/// for a pushed route table.
async fn propagation_etcd(
    cluster: &mut Cluster,
    trials: usize,
) -> Result<Vec<Propagation>, String> {
    use rust_ms::registry::{Instance, Registration, Registry};
    let mut second = start_gateway(&cluster.etcd_addr, "gateway-2", &[]).await?;
    let second_http = second.listening("http").await?;
    let etcd = rust_ms::etcd::EtcdRegistry::connect(rust_ms::etcd::EtcdOptions::new(vec![
        cluster.etcd_addr.clone(),
    ]))
    .await
    .map_err(|e| e.to_string())?;
    let gateways = [cluster.gateway_http.clone(), second_http];
    let target = cluster.echoes[0].1.clone();
    let body = b"{}";
    let mut times = Vec::new();
    for trial in 0..trials {
        let service = format!("prop{trial}");
        let registration = Registration::new(
            Instance::new(&service, &target).with_metadata("grpc.services", "bench.v1.Echo"),
        );
        let started = Instant::now();
        let registered = etcd
            .register(registration)
            .await
            .map_err(|e| e.to_string())?;
        for gateway in &gateways {
            let path = format!("/api/{service}/Echo");
            let deadline = Instant::now() + Duration::from_secs(10);
            while post_status(gateway, &path, body).await != Some(200) {
                if Instant::now() > deadline {
                    return Err(format!("{service} never routable through {gateway}"));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        times.push(started.elapsed());
        let _ = registered.deregister().await;
    }
    times.sort();
    let registration = Propagation {
        registry: "etcd".to_owned(),
        gateways: 2,
        trials,
        p50_ms: percentile_ms(&times, 50.0),
        p99_ms: percentile_ms(&times, 99.0),
    };
    eprintln!("propagation through etcd: {registration:?}");
    let routes = route_propagation(&etcd, &gateways, trials).await;
    second.signal("TERM");
    second.stop(Duration::from_secs(10)).await;
    Ok(vec![registration, routes?])
}

/// A route table stored in etcd (what `gateway routes push` does) → in force on both
/// gateways, as their `/routes` view reports its revision, `trials` times.
async fn route_propagation(
    etcd: &rust_ms::etcd::EtcdRegistry,
    gateways: &[String],
    trials: usize,
) -> Result<Propagation, String> {
    let key = gateway::route_table_key(etcd.namespace());
    let kv = etcd.kv();
    let mut times = Vec::new();
    for trial in 0..trials {
        let table = format!("[routes.routeprop]\ntimeout = \"{}ms\"\n", 1_000 + trial);
        let started = Instant::now();
        let stored = kv
            .put(key.clone(), table)
            .await
            .map_err(|e| e.to_string())?;
        let revision = stored.header().map(|h| h.revision()).unwrap_or_default();
        for gateway in gateways {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let view = get_json(gateway, "/routes").await;
                if view.and_then(|v| v["revision"].as_i64()) >= Some(revision) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "route table {revision} never in force on {gateway}"
                    ));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        times.push(started.elapsed());
    }
    // The table stays: it routes only `routeprop`, a service nothing here registers.
    times.sort();
    let propagation = Propagation {
        registry: "etcd: route table pushed".to_owned(),
        gateways: gateways.len(),
        trials,
        p50_ms: percentile_ms(&times, 50.0),
        p99_ms: percentile_ms(&times, 99.0),
    };
    eprintln!("route table propagation through etcd: {propagation:?}");
    Ok(propagation)
}

/// Register → answered through both of two gateways run in this process on one in-memory
/// registry, `trials` times.
async fn propagation_memory(target: &str, trials: usize) -> Result<Propagation, String> {
    use rust_ms::registry::{Instance, Registration, Registry};
    use rust_ms::{Connected, Launch, NodeConfig};
    let registry = rust_ms::memory::MemoryRegistry::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let http_port = free_port()?;
        let config = NodeConfig {
            http_port,
            rpc_port: 0,
            advertise_host: "127.0.0.1".to_owned(),
            listen_host: "127.0.0.1".to_owned(),
            ..NodeConfig::default()
        };
        let mut settings = gateway::settings::GatewaySettings::default();
        settings.gateway.public_cluster_view = true;
        tokio::spawn(gateway::service().serve(Launch {
            config,
            settings,
            backend: Connected::Memory(registry.clone()),
            shutdown: shutdown.clone(),
        }));
        gateways.push(format!("127.0.0.1:{http_port}"));
    }
    for gateway in &gateways {
        let deadline = Instant::now() + STARTUP;
        while cluster_size(gateway).await < 2 {
            if Instant::now() > deadline {
                return Err(format!("in-process gateway {gateway} never came up"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut times = Vec::new();
    for trial in 0..trials {
        let service = format!("mem{trial}");
        let started = Instant::now();
        let registered = registry
            .register(Registration::new(Instance::new(&service, target)))
            .await
            .map_err(|e| e.to_string())?;
        for gateway in &gateways {
            let path = format!("/api/{service}/Echo");
            let deadline = Instant::now() + Duration::from_secs(10);
            while post_status(gateway, &path, b"{}").await != Some(200) {
                if Instant::now() > deadline {
                    return Err(format!("{service} never routable through {gateway}"));
                }
            }
        }
        times.push(started.elapsed());
        let _ = registered.deregister().await;
    }
    shutdown.cancel();
    times.sort();
    let propagation = Propagation {
        registry: "memory (gateways in one process)".to_owned(),
        gateways: gateways.len(),
        trials,
        p50_ms: percentile_ms(&times, 50.0),
        p99_ms: percentile_ms(&times, 99.0),
    };
    eprintln!("propagation in memory: {propagation:?}");
    Ok(propagation)
}

/// Calls through /api while one node is killed, then while all three restart in turn.
async fn failover(cluster: &mut Cluster, body: &Bytes) -> Result<Vec<Failover>, String> {
    let api = addr(&cluster.gateway_http)?;
    let load = Load {
        connections: 4,
        streams: 2,
        calls: 1_000_000,
        max_time: Duration::from_secs(6),
    };
    // kill -9 of one of three nodes, a second into the load.
    let running = tokio::spawn(load::json(api, "/api/echo/Echo", body.clone(), load));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (victim, _) = cluster.echoes.remove(0);
    victim.kill().await;
    let killed = running.await.map_err(|e| e.to_string())??;
    let n = cluster.echoes.len() + 10;
    let (replacement, address) = start_echo(&cluster.etcd_addr, n).await?;
    wait_joined(&mut cluster.gateway, &[&address]).await?;
    cluster.echoes.push((replacement, address));

    // Rolling restart: a new node joins, then an old one leaves with SIGTERM, three times,
    // within a load long enough to cover it.
    let rolling = Load {
        max_time: Duration::from_secs(12),
        ..load
    };
    let running = tokio::spawn(load::json(api, "/api/echo/Echo", body.clone(), rolling));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..3 {
        let (fresh, address) = start_echo(&cluster.etcd_addr, 20 + n).await?;
        wait_joined(&mut cluster.gateway, &[&address]).await?;
        let (old, _) = cluster.echoes.remove(0);
        old.stop(Duration::from_secs(15)).await;
        cluster.echoes.push((fresh, address));
    }
    let rolled = running.await.map_err(|e| e.to_string())??;
    let rows = vec![
        Failover {
            what: "kill -9 of one of three nodes".to_owned(),
            calls: killed.calls,
            failed: killed.failed,
        },
        Failover {
            what: "rolling restart of all three nodes".to_owned(),
            calls: rolled.calls,
            failed: rolled.failed,
        },
    ];
    eprintln!("failover: {rows:?}");
    Ok(rows)
}

/// `instances` nodes in a tenth as many services written to etcd, then a gateway started.
async fn scale(cluster: &Cluster, instances: usize) -> Result<Scale, String> {
    let services = (instances / 10).max(1);
    let etcd = rust_ms::etcd::EtcdRegistry::connect(
        rust_ms::etcd::EtcdOptions::new(vec![cluster.etcd_addr.clone()]).with_namespace("scale"),
    )
    .await
    .map_err(|e| e.to_string())?;
    let kv = etcd.kv();
    for n in 0..instances {
        // Ports nothing listens on: the gateway's view, not the nodes, is measured.
        let value = format!("{{\"address\":\"127.0.0.1:{}\"}}", 1 + n % 1000);
        kv.put(format!("scale/services/s{}/n{n}", n % services), value)
            .await
            .map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let mut gateway = start_gateway(
        &cluster.etcd_addr,
        "gateway-scale",
        &[("MS_REGISTRY__NAMESPACE", "scale")],
    )
    .await?;
    let http = gateway.listening("http").await?;
    let count = |http: String| async move { cluster_size(&http).await };
    while count(http.clone()).await < instances + 1 {
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the gateway did not list every instance within 120 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let routable_after = started.elapsed();
    let joined = Instant::now();
    kv.put(
        "scale/services/late/n0".to_owned(),
        "{\"address\":\"127.0.0.1:1\"}".to_owned(),
    )
    .await
    .map_err(|e| e.to_string())?;
    while count(http.clone()).await < instances + 2 {
        if joined.elapsed() > Duration::from_secs(30) {
            return Err("a join under load was not seen within 30 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let scale = Scale {
        instances,
        services,
        routable_after_s: routable_after.as_secs_f64(),
        gateway_rss_mb: gateway.peak_rss_mb(),
        join_seen_after_ms: joined.elapsed().as_secs_f64() * 1e3,
    };
    eprintln!("scale: {scale:?}");
    gateway.stop(Duration::from_secs(10)).await;
    Ok(scale)
}

/// A raw HTTP/1.1 GET on a fresh connection; the body read as JSON.
async fn get_json(http: &str, path: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&reply);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// How many nodes (gateways included) `GET /cluster` lists (`{"services": {name:
/// {"nodes": [...]}}}`).
async fn cluster_size(http: &str) -> usize {
    get_json(http, "/cluster")
        .await
        .and_then(|v| {
            v["services"].as_object().map(|services| {
                services
                    .values()
                    .filter_map(|service| service["nodes"].as_array().map(Vec::len))
                    .sum()
            })
        })
        .unwrap_or(0)
}
