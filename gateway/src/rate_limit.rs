//! Rate limits that hold across the gateway cluster with no shared store. A route's
//! `rate_limit` is the whole cluster's: each gateway enforces its share, the limit divided
//! by the gateways it sees in the registry, and splits it again on the first call after
//! one joins or leaves. Buckets are governor's (GCRA), one per client key when the route
//! names one (a header, a verified claim, the client's address).
//!
//! The split assumes the callers' calls spread evenly over the gateways, as a load
//! balancer in front of them spreads them: a client pinned to one gateway gets that
//! gateway's share.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// `rate_limit = { per_second = 300, burst = 300, per = { header = "x-api-key" } }` in a
/// route: the cluster's limit, per client when `per` is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls a second the whole gateway cluster lets through (per client, with `per`).
    pub per_second: f64,
    /// How many calls may come at once after a quiet spell, cluster-wide.
    pub burst: f64,
    /// Whose calls share a bucket; absent: all of the route's calls share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<ClientKey>,
}

/// Where a call's client key comes from. Calls that carry no key share one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientKey {
    /// `per = "client_ip"`: the address the connection came from (behind a proxy, key on
    /// the header it sets instead, such as `x-real-ip`). First: the configuration
    /// reference's check reads an enum by its first variant, which must be a name.
    ClientIp,
    /// `per = { header = "x-api-key" }`: a request header (lower case).
    Header(String),
    /// `per = { claim = "sub" }`: a claim of the JWT the route verifies.
    Claim(String),
}

impl ClientKey {
    /// How `/admin/cluster` names it.
    pub fn describe(&self) -> String {
        match self {
            ClientKey::Header(name) => format!("header {name}"),
            ClientKey::Claim(name) => format!("claim {name}"),
            ClientKey::ClientIp => "client address".to_owned(),
        }
    }
}

/// The slowest rate a route may have: below it a refused caller would be told to come back
/// in longer than any client waits.
pub const MIN_PER_SECOND: f64 = 0.001;

/// The fastest: past it a gateway's share would refill in under a nanosecond.
pub const MAX_PER_SECOND: f64 = 1e9;

impl RateLimit {
    /// `Err((field, reason))` for a limit that cannot work.
    pub fn check(&self, verifies_tokens: bool) -> Result<(), (&'static str, String)> {
        // Written so that NaN fails too.
        if !(self.per_second.is_finite()
            && (MIN_PER_SECOND..=MAX_PER_SECOND).contains(&self.per_second))
        {
            return Err((
                "per_second",
                format!(
                    "{} is not a number from {MIN_PER_SECOND} to {MAX_PER_SECOND}",
                    self.per_second
                ),
            ));
        }
        if !(self.burst.is_finite() && self.burst >= 1.0 && self.burst <= f64::from(u32::MAX)) {
            return Err((
                "burst",
                format!("{} is not a number from 1 to {}", self.burst, u32::MAX),
            ));
        }
        match &self.per {
            Some(ClientKey::Header(name)) => {
                cluster::traffic::check_header_name(name).map_err(|reason| ("per.header", reason))
            }
            Some(ClientKey::Claim(name)) if name.is_empty() => {
                Err(("per.claim", "name the claim".into()))
            }
            Some(ClientKey::Claim(_)) if !verifies_tokens => Err((
                "per.claim",
                "a claim can key a rate limit only on a route that verifies tokens (jwt = true)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// What the caller of `/api` and REST routes is told of its bucket, in the `RateLimit-*`
/// headers: the cluster's figures, as this gateway's share times the gateways it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// `RateLimit-Limit`: the burst the cluster allows.
    pub limit: u32,
    /// `RateLimit-Remaining`: calls left before the bucket is empty.
    pub remaining: u32,
    /// `RateLimit-Reset`: seconds until the bucket is full again.
    pub reset_seconds: u64,
}

impl Allowance {
    /// The `RateLimit-*` headers (IETF httpapi draft) a door adds to its reply.
    pub fn write(&self, headers: &mut http::HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", u64::from(self.limit)),
            ("ratelimit-remaining", u64::from(self.remaining)),
            ("ratelimit-reset", self.reset_seconds),
        ] {
            headers.insert(http::HeaderName::from_static(name), value.into());
        }
    }
}

/// A call over its client's share: how long until one more would pass, and what the
/// caller is told of its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub wait: Duration,
    pub allowance: Allowance,
}

/// governor's clock on tokio's time: the same instant in production, and the paused,
/// advanced time of a test.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One mutex over a map of buckets: a lookup under it is far below a call's cost, and it
/// spares the tree a concurrent map's second copy of hashbrown.
type Buckets = RateLimiter<u64, HashMapStateStore<u64>, TokioClock, StateInformationMiddleware>;

/// One gateway's share of the cluster's limit, for as many gateways as it saw.
struct Share {
    gateways: usize,
    burst: u32,
    /// How long one call's room takes to come back.
    refill: Duration,
    buckets: Buckets,
}

impl Share {
    fn of(config: &RateLimit, gateways: usize) -> Self {
        let gateways = gateways.max(1);
        let n = gateways as f64;
        // At least one call at once: a share below one would refuse everything.
        let burst = (config.burst / n).floor().clamp(1.0, f64::from(u32::MAX)) as u32;
        let refill = Duration::try_from_secs_f64(n / config.per_second)
            .unwrap_or(Duration::MAX)
            .max(Duration::from_nanos(1));
        let quota = Quota::with_period(refill)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Share {
            gateways,
            burst,
            refill,
            buckets: RateLimiter::hashmap_with_clock(quota, TokioClock)
                .with_middleware::<StateInformationMiddleware>(),
        }
    }

    /// The cluster's figures from this share's, `room` being the share's calls left.
    fn allowance(&self, room: u32, config: &RateLimit) -> Allowance {
        let cluster_burst = config.burst.floor() as u32;
        let missing = self.burst.saturating_sub(room);
        Allowance {
            limit: cluster_burst,
            remaining: room
                .saturating_mul(u32::try_from(self.gateways).unwrap_or(u32::MAX))
                .min(cluster_burst),
            reset_seconds: self
                .refill
                .saturating_mul(missing)
                .as_secs_f64()
                .ceil()
                .min(u64::MAX as f64) as u64,
        }
    }
}

/// How often buckets of clients that have not called lately are dropped.
const FORGET_EVERY: Duration = Duration::from_secs(10);

/// A route's limit in force on this gateway.
pub struct ClusterLimit {
    config: RateLimit,
    share: ArcSwap<Share>,
    /// When idle clients' buckets were last dropped, in milliseconds since `epoch`.
    forgot_at_ms: AtomicU64,
    /// Calls refused since the limit was made, for the dashboard's charts.
    refused: AtomicU64,
    epoch: tokio::time::Instant,
}

impl ClusterLimit {
    pub fn new(config: RateLimit) -> Self {
        Self {
            share: ArcSwap::from_pointee(Share::of(&config, 1)),
            config,
            forgot_at_ms: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        }
    }

    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// This gateway's share, split again first when `gateways` is not what it was split
    /// for. A new split starts with full buckets.
    fn share_for(&self, gateways: usize, service: &str) -> Arc<Share> {
        let share = self.share.load_full();
        if share.gateways == gateways.max(1) {
            return share;
        }
        let fresh = Arc::new(Share::of(&self.config, gateways));
        // Two calls may split at once: the later store wins, and both are the same split.
        self.share.store(fresh.clone());
        metrics::gauge!(
            telemetry::prometheus::names::GATEWAY_RATE_LIMIT_SHARE,
            "service" => service.to_owned()
        )
        .set(self.config.per_second / fresh.gateways as f64);
        tracing::info!(
            service,
            gateways = fresh.gateways,
            per_second = self.config.per_second / fresh.gateways as f64,
            "rate limit split across the gateways"
        );
        fresh
    }

    /// Takes room for one call of the client keyed `key` (0 for calls with no key), with
    /// `gateways` live gateways in the cluster.
    pub fn take(&self, key: u64, gateways: usize, service: &str) -> Result<Allowance, Refusal> {
        let share = self.share_for(gateways, service);
        self.forget_idle_clients(&share);
        match share.buckets.check_key(&key) {
            Ok(state) => Ok(share.allowance(state.remaining_burst_capacity(), &self.config)),
            Err(not_until) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let wait = not_until.wait_time_from(TokioClock.now());
                let mut allowance = share.allowance(0, &self.config);
                allowance.reset_seconds = allowance
                    .reset_seconds
                    .max(wait.as_secs_f64().ceil() as u64);
                Err(Refusal { wait, allowance })
            }
        }
    }

    /// Drops, now and then, the buckets of clients whose room is full again: they are as
    /// they would be made anew, and the map keeps only recent callers.
    fn forget_idle_clients(&self, share: &Share) {
        if self.config.per.is_none() {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.forgot_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < FORGET_EVERY.as_millis() as u64
            || self
                .forgot_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        share.buckets.retain_recent();
        share.buckets.shrink_to_fit();
    }

    /// Calls refused since the limit was made.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// For `/admin/cluster`: the cluster's limit, the gateways it is split over and this
    /// gateway's share.
    pub fn describe(&self) -> serde_json::Value {
        let share = self.share.load();
        serde_json::json!({
            "per_second": self.config.per_second,
            "burst": self.config.burst,
            "per": self.config.per.as_ref().map(ClientKey::describe),
            "gateways": share.gateways,
            "this_gateway_per_second": self.config.per_second / share.gateways as f64,
            "this_gateway_burst": share.burst,
            "clients": self.config.per.as_ref().map(|_| share.buckets.len()),
        })
    }
}

/// The address a call came from: set by the HTTP server on `/api` and REST calls, by
/// tonic on the rpc port.
pub fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(axum::extract::ConnectInfo(address)) =
        extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(address.ip());
    }
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map(|address| address.ip())
}

/// A client key's hash, from the bytes of its header, claim or address.
pub fn key_of(bytes: &[u8]) -> u64 {
    cluster::affinity::key_of(bytes)
}

/// The key of a client known by its address.
pub fn key_of_address(address: IpAddr) -> u64 {
    // A v4 client reached over a dual-stack socket is the same client.
    match address.to_canonical() {
        IpAddr::V4(v4) => key_of(&v4.octets()),
        IpAddr::V6(v6) => key_of(&v6.octets()),
    }
}

#[cfg(test)]
mod tests;
