//! Canaries on etcd. Every gateway holds a lease, publishes what it saw of each running
//! canary's step under it (`{ns}/canary/reports/{service}/{gateway}`, gone with the
//! gateway), and campaigns in an etcd election (`{ns}/canary/leader`). The leader sums
//! the reports of the step in force, decides ([`super::decide`]) and writes the decision
//! into the stored route table in a transaction that holds only while it still leads and
//! the table is the one it judged: every gateway then applies the new split from its
//! watch of the table, as it would a pushed one.

use std::sync::Arc;
use std::time::Duration;

use cluster::canary::{Canary, Outcome, State};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use tokio_util::sync::CancellationToken;

use super::{Decision, Report, StepId, decide};
use crate::live_routes::RouteSource;
use crate::state::Gateway;

/// How often a gateway publishes its figures, and the leader judges.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
const JUDGE_EVERY: Duration = Duration::from_millis(500);
/// The longest pause between tries while etcd cannot be reached.
const MAX_PAUSE: Duration = Duration::from_secs(30);

fn reports_prefix(namespace: &str, service: &str) -> String {
    format!("{namespace}/canary/reports/{service}/")
}

fn election(namespace: &str) -> String {
    format!("{namespace}/canary/leader")
}

/// One gateway's part, until `stop`: publishing always, judging while it leads.
pub async fn run(
    client: Client,
    namespace: String,
    gateway: Arc<Gateway>,
    ttl: Duration,
    stop: CancellationToken,
) {
    let me = format!("gateway-{}", uuid::Uuid::new_v4().simple());
    let ttl_seconds = ttl.as_secs().max(2) as i64;
    // After a failure, a second's pause, doubling while etcd stays away (one warning per
    // outage, not one a second), back to a second once a term lasts.
    let mut pause = Duration::from_secs(1);
    while !stop.is_cancelled() {
        let term = Term {
            client: client.clone(),
            namespace: namespace.clone(),
            gateway: gateway.clone(),
            me: me.clone(),
            bound: ttl.max(Duration::from_secs(2)),
        };
        let began = tokio::time::Instant::now();
        if let Err(error) = term.serve(ttl_seconds, &stop).await {
            if began.elapsed() > MAX_PAUSE {
                pause = Duration::from_secs(1);
            }
            if pause == Duration::from_secs(1) {
                tracing::warn!(%error, "canary leadership interrupted; trying again");
            } else {
                tracing::debug!(%error, ?pause, "canary leadership still interrupted");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// One lease's life: publishing under it, campaigning with it, leading until it is lost.
struct Term {
    client: Client,
    namespace: String,
    gateway: Arc<Gateway>,
    me: String,
    /// How long one request to etcd may take.
    bound: Duration,
}

impl Term {
    async fn serve(&self, ttl_seconds: i64, stop: &CancellationToken) -> Result<(), String> {
        let mut client = self.client.clone();
        let lease = self
            .within(client.lease_grant(ttl_seconds, None))
            .await?
            .id();
        let lost = CancellationToken::new();
        let keeping = tokio::spawn(keep_alive(
            client.clone(),
            lease,
            Duration::from_secs(ttl_seconds as u64) / 3,
            lost.clone(),
        ));
        let outcome = tokio::select! {
            _ = stop.cancelled() => Ok(()),
            _ = lost.cancelled() => Err("the lease was lost".to_owned()),
            published = self.publish(lease) => published,
            led = self.campaign_and_lead(lease) => led,
        };
        keeping.abort();
        // Gone at once, rather than after the lease: the reports and the leadership.
        let _ = tokio::time::timeout(self.bound, client.lease_revoke(lease)).await;
        outcome
    }

    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.bound, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("etcd did not answer within {:?}", self.bound)),
        }
    }

    /// Puts this gateway's figures of each running canary under the lease, each second.
    async fn publish(&self, lease: i64) -> Result<(), String> {
        let mut client = self.client.clone();
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut published: std::collections::HashMap<String, Report> = Default::default();
        loop {
            tick.tick().await;
            for (service, report) in self.gateway.canaries.reports() {
                if published.get(&service) == Some(&report) {
                    continue;
                }
                let key = format!("{}{}", reports_prefix(&self.namespace, &service), self.me);
                let value = serde_json::to_string(&report).map_err(|e| e.to_string())?;
                let options = PutOptions::new().with_lease(lease);
                self.within(client.put(key, value, Some(options))).await?;
                published.insert(service, report);
            }
        }
    }

    /// Waits to be elected, then judges every running canary until the lease is lost.
    async fn campaign_and_lead(&self, lease: i64) -> Result<(), String> {
        let mut elections = self.client.election_client();
        // Waits as long as another gateway leads: no bound.
        let elected = elections
            .campaign(election(&self.namespace), self.me.clone(), lease)
            .await
            .map_err(|e| e.to_string())?;
        let leader_key = elected
            .leader()
            .map(|leader| leader.key().to_vec())
            .ok_or("the election answered without a leader key")?;
        tracing::info!(gateway = %self.me, "leading the canaries");
        let mut tick = tokio::time::interval(JUDGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.judge_all(&leader_key).await?;
        }
    }

    async fn judge_all(&self, leader_key: &[u8]) -> Result<(), String> {
        let in_force = self.gateway.routes.in_force();
        for (service, route) in &in_force.routes {
            let Some(canary) = &route.canary else {
                continue;
            };
            if canary.outcome() != Outcome::Running {
                continue;
            }
            let now = registry::unix_millis_now();
            let next = match &canary.state {
                // Pushed just now: the step's clock starts.
                None => State {
                    step: 0,
                    since_ms: now,
                    outcome: Outcome::Running,
                    reason: Some(format!("started at {}%", canary.percent())),
                    last: None,
                },
                Some(state) => {
                    let seen = self.step_figures(service, canary).await?;
                    let elapsed = Duration::from_millis(now.saturating_sub(state.since_ms));
                    let comparison = seen.comparison();
                    let (step, outcome, reason) = match decide(canary, &comparison, elapsed) {
                        Decision::Wait(_) => continue,
                        Decision::Promote { next, reason } => (next, Outcome::Running, reason),
                        Decision::Finish { reason } => {
                            (canary.steps.len() - 1, Outcome::Promoted, reason)
                        }
                        Decision::RollBack { reason } => (state.step, Outcome::RolledBack, reason),
                    };
                    State {
                        step,
                        since_ms: now,
                        outcome,
                        reason: Some(reason),
                        last: Some(comparison),
                    }
                }
            };
            self.write(&in_force, service, canary, next, leader_key)
                .await?;
        }
        Ok(())
    }

    /// Every gateway's figures of the step in force, summed.
    async fn step_figures(&self, service: &str, canary: &Canary) -> Result<Report, String> {
        let mut client = self.client.clone();
        let step = StepId::of(canary);
        let prefix = reports_prefix(&self.namespace, service);
        let listed = self
            .within(client.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let mut sum = Report::new(step.clone());
        for kv in listed.kvs() {
            // A report of another step, or one that does not read, is no figure of this one.
            let Ok(report) = serde_json::from_slice::<Report>(kv.value()) else {
                continue;
            };
            if report.step == step {
                sum.canary.merge(&report.canary);
                sum.baseline.merge(&report.baseline);
            }
        }
        Ok(sum)
    }

    /// Writes `service`'s canary at `next` into the stored table, if the table is still
    /// the one judged and this gateway still leads.
    async fn write(
        &self,
        in_force: &crate::live_routes::RoutesInForce,
        service: &str,
        canary: &Canary,
        next: State,
        leader_key: &[u8],
    ) -> Result<(), String> {
        let mut table = in_force.routes.clone();
        let Some(route) = table.get_mut(service) else {
            return Ok(());
        };
        let outcome = next.outcome;
        let reason = next.reason.clone().unwrap_or_default();
        let step = next.step;
        route.canary = Some(Canary {
            state: Some(next),
            ..canary.clone()
        });
        let text = crate::settings::render_route_table(&table).map_err(|e| e.to_string())?;
        let key = crate::live_routes::etcd::key(&self.namespace);
        let table_unchanged = match in_force.source {
            RouteSource::Etcd => {
                Compare::mod_revision(key.clone(), CompareOp::Equal, in_force.revision)
            }
            // The configured table, stored by its first decision: only if none is there.
            RouteSource::Configuration => {
                Compare::create_revision(key.clone(), CompareOp::Equal, 0)
            }
        };
        let still_leading = Compare::create_revision(leader_key.to_vec(), CompareOp::Greater, 0);
        let txn = Txn::new()
            .when([table_unchanged, still_leading])
            .and_then([TxnOp::put(key, text, None)]);
        let mut client = self.client.clone();
        let written = self.within(client.txn(txn)).await?;
        if written.succeeded() {
            tracing::info!(
                service,
                version = %canary.version,
                outcome = outcome.name(),
                step = step + 1,
                percent = canary.steps.get(step).copied().unwrap_or(0),
                %reason,
                "canary decision written into the route table"
            );
        }
        Ok(())
    }
}

/// Keeps `lease` alive every `every`; cancels `lost` when it cannot.
async fn keep_alive(mut client: Client, lease: i64, every: Duration, lost: CancellationToken) {
    let stream = tokio::time::timeout(every, client.lease_keep_alive(lease)).await;
    let Ok(Ok((mut keeper, mut answers))) = stream else {
        lost.cancel();
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let kept = async {
            keeper.keep_alive().await?;
            answers.message().await
        };
        match tokio::time::timeout(every, kept).await {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
            _ => {
                lost.cancel();
                return;
            }
        }
    }
}
