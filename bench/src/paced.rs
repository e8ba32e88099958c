//! Open-loop load for the overload runs: calls sent at a fixed rate whatever the answers,
//! as users arrive, each with a deadline, and each one's end sorted by its status: answered,
//! refused at once as overloaded (`UNAVAILABLE`), out of time (`DEADLINE_EXCEEDED`), or
//! something else. A closed loop would slow down with the proxy it measures, and one
//! refused at once would spin.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::load::grpc_exchange;

/// At most this many calls out at once; past it a call due is counted as not sent.
const MAX_OUT: usize = 20_000;
/// Connections the calls are spread over.
const CONNECTIONS: usize = 8;

/// What a paced run saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Paced {
    pub offered_per_s: f64,
    pub seconds: f64,
    /// Answered with OK, and how long each took, in microseconds, sorted.
    pub ok: u64,
    #[serde(skip)]
    pub latencies_us: Vec<u32>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Refused at once as overloaded (`UNAVAILABLE`).
    pub shed: u64,
    /// Ended by their deadline.
    pub timed_out: u64,
    /// Anything else, or not sent because [`MAX_OUT`] were out.
    pub other: u64,
    pub first_other: Option<String>,
}

impl Paced {
    /// Answered calls a second.
    pub fn goodput(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    fn finish(&mut self) {
        self.latencies_us.sort_unstable();
        let at = |p: f64| {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
            f64::from(self.latencies_us[rank]) / 1000.0
        };
        self.p50_ms = at(50.0);
        self.p99_ms = at(99.0);
    }
}

/// Calls `path` on `address` with `frame`, `per_second` of them for `warmup` and then for
/// `for_how_long`, each with `deadline`; waits for the last to end. Calls sent during the
/// warm-up are not counted.
pub async fn grpc(
    address: SocketAddr,
    path: &str,
    frame: Bytes,
    per_second: f64,
    warmup: Duration,
    for_how_long: Duration,
    deadline: Duration,
) -> Result<Paced, String> {
    let uri: http::Uri = format!("http://{address}{path}")
        .parse()
        .map_err(|e| format!("{path}: {e}"))?;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(crate::load::h2_connection(address).await?);
    }
    let seen = Arc::new(Mutex::new(Paced {
        offered_per_s: per_second,
        seconds: for_how_long.as_secs_f64(),
        ..Paced::default()
    }));
    let out = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let mut calls = Vec::new();
    while started.elapsed() < warmup + for_how_long {
        tick.tick().await;
        // Every call due by now, whether or not the last tick came on time.
        let due = (started.elapsed().as_secs_f64() * per_second) as u64;
        while sent < due {
            sent += 1;
            let counted = started.elapsed() >= warmup;
            if out.load(std::sync::atomic::Ordering::Relaxed) >= MAX_OUT {
                if counted {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.other += 1;
                    seen.first_other
                        .get_or_insert_with(|| format!("{MAX_OUT} calls out"));
                }
                continue;
            }
            let mut client = clients[sent as usize % CONNECTIONS].clone();
            let (uri, frame, seen, out) = (uri.clone(), frame.clone(), seen.clone(), out.clone());
            out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            calls.push(tokio::spawn(async move {
                let began = Instant::now();
                let ended = grpc_exchange(&mut client, &uri, frame, Some(deadline)).await;
                let took = began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                out.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                if !counted {
                    return;
                }
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                match ended {
                    Ok((0, _)) => {
                        seen.ok += 1;
                        seen.latencies_us.push(took);
                    }
                    Ok((14, _)) => seen.shed += 1,
                    Ok((4, _)) => seen.timed_out += 1,
                    Ok((code, _)) => {
                        seen.other += 1;
                        seen.first_other
                            .get_or_insert_with(|| format!("grpc-status {code}"));
                    }
                    Err(error) => {
                        seen.other += 1;
                        seen.first_other.get_or_insert(error);
                    }
                }
            }));
        }
    }
    for call in calls {
        let _ = call.await;
    }
    let mut paced = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    paced.finish();
    Ok(paced)
}
