//! What a benchmark run found, kept as JSON and as the Markdown table of RESULTS.md.

use serde::{Deserialize, Serialize};

/// One load against one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The load: `unary 100 B`, `unary 16 KiB`, `server stream 10 × 100 B`, `JSON 100 B`.
    pub load: String,
    /// What was called: `direct`, `rust-ms rpc`, `rust-ms /api`, `nginx`, `haproxy`.
    pub target: String,
    pub calls: u64,
    pub failed: u64,
    pub seconds: f64,
    pub calls_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// The proxy's CPU time (user + system, from /proc) over the run, per call.
    pub cpu_us_per_call: Option<f64>,
    /// The proxy's peak resident memory.
    pub peak_rss_mb: Option<f64>,
}

/// Register → routable through every gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Propagation {
    pub registry: String,
    pub gateways: usize,
    pub trials: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A gateway started against a large registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scale {
    pub instances: usize,
    pub services: usize,
    pub routable_after_s: f64,
    pub gateway_rss_mb: f64,
    pub join_seen_after_ms: f64,
}

/// Calls lost while nodes die or restart under load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failover {
    pub what: String,
    pub calls: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub machine: String,
    pub pinning: String,
    pub rows: Vec<Row>,
    pub propagation: Vec<Propagation>,
    pub scale: Option<Scale>,
    pub failover: Vec<Failover>,
    /// Spans the gateway exported at 1% sampling while measured (its traces are on).
    #[serde(default)]
    pub spans_exported: usize,
    /// The gateway's CPU per call with metrics and 1% traces, and without, in turns.
    #[serde(default)]
    pub telemetry: Vec<TelemetryCost>,
    /// This tree's gateway against a baseline build (`--baseline-gateway`), in turns.
    #[serde(default)]
    pub baseline: Vec<BaselineCost>,
    /// The service client against a bare tonic channel to one node, in turns.
    #[serde(default)]
    pub client: Vec<ClientCost>,
    /// A REST route against `/api` for the same method, in turns.
    #[serde(default)]
    pub rest: Vec<RestCost>,
    /// An overload of one method, with load shedding on and off.
    #[serde(default)]
    pub overload: Option<Overload>,
}

/// Open-loop runs of a method of fixed capacity, unloaded and at several times its
/// capacity, with a cheap method of another service beside it, through a gateway with
/// load shedding on and one with it off.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Overload {
    /// What the expensive method's nodes can take, calls a second.
    pub capacity_per_s: f64,
    pub deadline_ms: u64,
    pub runs: Vec<OverloadRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverloadRun {
    /// Which round it was of (runs of one round were measured back to back); 0 in results
    /// kept before there were rounds.
    #[serde(default)]
    pub round: usize,
    /// `on` or `off`.
    pub shedding: String,
    /// `unloaded` or `overloaded`.
    pub phase: String,
    pub busy: crate::paced::Paced,
    pub echo: crate::paced::Paced,
}

impl Overload {
    /// Each round's unloaded and overloaded runs of `shedding`, in round order.
    fn pairs(&self, shedding: &str) -> Vec<(&OverloadRun, &OverloadRun)> {
        let of = |round: usize, phase: &str| {
            self.runs
                .iter()
                .find(|run| run.round == round && run.shedding == shedding && run.phase == phase)
        };
        let mut rounds: Vec<usize> = self.runs.iter().map(|run| run.round).collect();
        rounds.sort_unstable();
        rounds.dedup();
        rounds
            .into_iter()
            .filter_map(|round| Some((of(round, "unloaded")?, of(round, "overloaded")?)))
            .collect()
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "\n## Load shedding\n\nTwo `busy` nodes of fixed capacity (4 workers of 35 ms each: {:.0} calls/s together) and one echo node, behind two gateways: one with load shedding on (the default) and one with `gateway.load_shedding = false`. Open-loop gRPC through each gateway's rpc port, every call with a {} ms deadline: `Busy.Work` at a quarter of its capacity (unloaded), then at four times it (overloaded), with `Echo.Echo` of the other service beside it at a steady rate. Each round measures both gateways, unloaded then overloaded back to back; the summary compares each round's pair and takes the median over the rounds.\n\n| round | shedding | phase | Busy offered/s | goodput/s | of capacity | p50 ms | p99 ms | shed | timed out | other | Echo/s | Echo p50 ms | Echo p99 ms |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.capacity_per_s, self.deadline_ms
        );
        for run in &self.runs {
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0}% | {:.1} | {:.1} | {} | {} | {} | {:.0} | {:.2} | {:.2} |\n",
                run.round,
                run.shedding,
                run.phase,
                run.busy.offered_per_s,
                run.busy.goodput(),
                run.busy.goodput() / self.capacity_per_s.max(1e-9) * 100.0,
                run.busy.p50_ms,
                run.busy.p99_ms,
                run.busy.shed,
                run.busy.timed_out,
                run.busy.other + run.echo.other,
                run.echo.offered_per_s,
                run.echo.p50_ms,
                run.echo.p99_ms,
            ));
        }
        for shedding in ["on", "off"] {
            let pairs = self.pairs(shedding);
            if pairs.is_empty() {
                continue;
            }
            let goodput: Vec<f64> = pairs
                .iter()
                .map(|(_, loaded)| loaded.busy.goodput() / self.capacity_per_s.max(1e-9) * 100.0)
                .collect();
            let p99: Vec<f64> = pairs
                .iter()
                .map(|(calm, loaded)| loaded.busy.p99_ms / calm.busy.p99_ms.max(1e-9))
                .collect();
            let echo: Vec<f64> = pairs
                .iter()
                .map(|(calm, loaded)| percent_more(loaded.echo.p99_ms, calm.echo.p99_ms))
                .collect();
            let each = |values: &[f64], unit: &str| {
                values
                    .iter()
                    .map(|v| format!("{v:.0}{unit}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "\nShedding {shedding}, overloaded against unloaded, median of {} rounds: goodput {:.0}% of capacity ({}), admitted p99 {:.2}× the unloaded p99 ({}), the other service's p99 {:+.0}% ({}).\n",
                pairs.len(),
                median(&goodput),
                each(&goodput, "%"),
                median(&p99),
                p99.iter().map(|v| format!("{v:.2}×")).collect::<Vec<_>>().join(", "),
                median(&echo),
                echo.iter().map(|v| format!("{v:+.0}%")).collect::<Vec<_>>().join(", "),
            ));
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineCost {
    pub load: String,
    pub rounds: usize,
    /// What the baseline gateway was built from, as given on the command line.
    pub baseline: String,
    pub this_us_per_call: f64,
    pub baseline_us_per_call: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientCost {
    pub load: String,
    pub rounds: usize,
    /// The calling process's CPU per call through `context.client(..)`'s channel.
    pub service_client_us_per_call: f64,
    /// The same through a tonic `Channel` to the node.
    pub tonic_channel_us_per_call: f64,
    /// Calls per second through each, over all their turns.
    pub service_client_calls_per_s: f64,
    pub tonic_channel_calls_per_s: f64,
}

/// The middle value (the mean of the two middle ones of an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// How much more `this` is than `base`, in percent.
fn percent_more(this: f64, base: f64) -> f64 {
    (this / base.max(f64::MIN_POSITIVE) - 1.0) * 100.0
}

/// A REST route and `/api` for the same method, in turns on one gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestCost {
    pub load: String,
    pub rounds: usize,
    pub api_us_per_call: f64,
    pub rest_us_per_call: f64,
    pub api_calls_per_s: f64,
    pub rest_calls_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelemetryCost {
    pub load: String,
    /// ABBA rounds: each gateway measured `2 × rounds` times, in turns.
    pub rounds: usize,
    pub with_us_per_call: f64,
    pub without_us_per_call: f64,
}

fn or_dash(value: Option<f64>, digits: usize) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

impl Results {
    /// The Markdown of RESULTS.md.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Benchmark results\n\n{} · {}\n\n{}\n\n",
            self.date, self.machine, self.pinning
        );
        // An overload-only run has no proxy rows.
        if !self.rows.is_empty() {
            out.push_str(
                "| load | target | calls/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/call | proxy peak RSS MB | calls | failed |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for row in &self.rows {
                out.push_str(&format!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |\n",
                    row.load,
                    row.target,
                    row.calls_per_s,
                    row.p50_us,
                    row.p99_us,
                    row.p999_us,
                    or_dash(row.cpu_us_per_call, 1),
                    or_dash(row.peak_rss_mb, 1),
                    row.calls,
                    row.failed
                ));
            }
            out.push_str(&format!(
                "\n`rust-ms rpc` runs as an operator would: metrics on (served on its admin port), traces sampled at 1% and exported over OTLP/gRPC to a collector in the harness ({} spans arrived), access log off. `rust-ms rpc without telemetry` is the same gateway with metrics and traces off.\n",
                self.spans_exported
            ));
        }
        if !self.telemetry.is_empty() {
            out.push_str("\n## What metrics and traces cost\n\nThe gateway with metrics on and traces sampled at 1% and exported, and the same gateway without, measured in turns (ABBA) so that neither gains from the order or the machine's drift:\n\n| load | rounds | with µs/call | without µs/call | cost |\n|---|---:|---:|---:|---:|\n");
            for t in &self.telemetry {
                out.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1} | {:+.1}% |\n",
                    t.load,
                    t.rounds,
                    t.with_us_per_call,
                    t.without_us_per_call,
                    percent_more(t.with_us_per_call, t.without_us_per_call)
                ));
            }
        }
        if !self.rest.is_empty() {
            out.push_str("\n## REST routes against /api\n\nThe same echo method through the gateway's HTTP port, `POST /api/echo/Echo` with a JSON body and `GET /v1/echo?data=…` (its `google.api.http` route, the field in the query), the gateway's CPU per call measured in turns (ABBA):\n\n| load | rounds | /api µs/call | REST µs/call | REST cost | /api calls/s | REST calls/s |\n|---|---:|---:|---:|---:|---:|---:|\n");
            for r in &self.rest {
                out.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1} | {:+.1}% | {:.0} | {:.0} |\n",
                    r.load,
                    r.rounds,
                    r.api_us_per_call,
                    r.rest_us_per_call,
                    percent_more(r.rest_us_per_call, r.api_us_per_call),
                    r.api_calls_per_s,
                    r.rest_calls_per_s
                ));
            }
        }
        if !self.baseline.is_empty() {
            out.push_str("\n## This gateway against a baseline build\n\nThe rpc port and `/api` (JSON over HTTP/1.1) of this tree's gateway and of a baseline build, both with metrics and traces off, measured in turns (ABBA) on the same echo nodes:\n\n| load | rounds | baseline | this µs/call | baseline µs/call | change |\n|---|---:|---|---:|---:|---:|\n");
            for b in &self.baseline {
                out.push_str(&format!(
                    "| {} | {} | {} | {:.1} | {:.1} | {:+.1}% |\n",
                    b.load,
                    b.rounds,
                    b.baseline,
                    b.this_us_per_call,
                    b.baseline_us_per_call,
                    percent_more(b.this_us_per_call, b.baseline_us_per_call)
                ));
            }
        }
        if !self.client.is_empty() {
            out.push_str("\n## The service client against a bare tonic channel\n\nThe calling process's CPU per call to one echo node: through the channel `context.client(..)` returns (the call stack: retry with its budget, balance, record, per-attempt timeout, metrics, deadline), and through a tonic `Channel` to the node, in turns (ABBA):\n\n| load | rounds | service client µs/call | tonic channel µs/call | cost | service client calls/s | tonic channel calls/s |\n|---|---:|---:|---:|---:|---:|---:|\n");
            for c in &self.client {
                out.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1} | {:+.1}% | {:.0} | {:.0} |\n",
                    c.load,
                    c.rounds,
                    c.service_client_us_per_call,
                    c.tonic_channel_us_per_call,
                    percent_more(c.service_client_us_per_call, c.tonic_channel_us_per_call),
                    c.service_client_calls_per_s,
                    c.tonic_channel_calls_per_s
                ));
            }
        }
        if !self.propagation.is_empty() {
            out.push_str("\n## Propagation (a change in the registry → in force on every gateway: a node registered is routable, a route table pushed is applied)\n\n| registry | gateways | trials | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n");
            for p in &self.propagation {
                out.push_str(&format!(
                    "| {} | {} | {} | {:.2} | {:.2} |\n",
                    p.registry, p.gateways, p.trials, p.p50_ms, p.p99_ms
                ));
            }
        }
        if let Some(scale) = &self.scale {
            out.push_str(&format!(
                "\n## Scale\n\n{} instances in {} services in etcd: a gateway started against them routes to all after {:.2} s, at {:.1} MB RSS; a node joining then is routable after {:.1} ms.\n",
                scale.instances,
                scale.services,
                scale.routable_after_s,
                scale.gateway_rss_mb,
                scale.join_seen_after_ms
            ));
        }
        if let Some(overload) = &self.overload {
            out.push_str(&overload.markdown());
        }
        if !self.failover.is_empty() {
            out.push_str("\n## Failover under load (through the gateway's /api)\n\n| what | calls | failed |\n|---|---:|---:|\n");
            for f in &self.failover {
                out.push_str(&format!("| {} | {} | {} |\n", f.what, f.calls, f.failed));
            }
        }
        out
    }
}
