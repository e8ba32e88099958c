//! Running a [`BuiltNode`]: serve, register, follow membership and readiness; on
//! shutdown leave first (not ready, deregistered), then drain.

use std::sync::Arc;
use std::time::Duration;

use config::NodeConfig;
use registry::{Registered, Registration, Registry};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use super::build::{BuiltNode, Node, Servers};
use crate::admin::NodeAdmin;
use crate::{NodeError, membership};

/// The servers serving, each ending with how it ended.
type Running = JoinSet<Result<(), NodeError>>;

impl BuiltNode {
    pub(super) async fn run(
        self,
        config: &NodeConfig,
        registry: Arc<dyn Registry>,
        shutdown: CancellationToken,
    ) -> Result<(), NodeError> {
        let BuiltNode { mut node, servers } = self;
        let mut servers = servers.start(config, node.drain.clone());
        let registration = node.register(&*registry, config.registry.ttl).await?;
        let watching = CancellationToken::new();
        let membership = node.follow_membership(registry, watching.clone());
        let readiness = node.readiness.take().map(|readiness| {
            tokio::spawn(report_readiness(
                readiness,
                node.health.clone(),
                node.grpc_services.clone(),
                node.admin.clone(),
                watching.clone(),
            ))
        });

        // Run until asked to stop, or until a server fails on its own.
        let failed = tokio::select! {
            _ = shutdown.cancelled() => None,
            ended = servers.join_next() => Some(ended),
        };
        node.leave(registration, watching, readiness).await;
        node.drain.cancel();
        let _ = membership.await;
        if let Some(ended) = failed {
            return Err(match ended {
                Some(Ok(Err(error))) => error,
                _ => NodeError::Serve {
                    what: "a server",
                    cause: "stopped unexpectedly".to_owned(),
                },
            });
        }
        drain_within(servers, config.shutdown_grace).await;
        if let Some(tracing) = node.tracing.take() {
            // Flushing waits on the exporter: off the async threads.
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        }
        tracing::info!("Server [{}] stopped", node.service);
        Ok(())
    }
}

impl Servers {
    /// Starts the gRPC server and, when there is one, the HTTP server, both serving until
    /// `drain`.
    fn start(self, config: &NodeConfig, drain: CancellationToken) -> Running {
        let mut running = JoinSet::new();
        running.spawn(self.grpc);
        if let Some(http) = self.http {
            let limits = config.http.clone();
            let tls = self.http_tls;
            running.spawn(
                async move {
                    crate::http_server::serve(http.listener, http.router, limits, tls, drain).await;
                    Ok(())
                }
                .in_current_span(),
            );
        }
        running
    }
}

impl Node {
    async fn register(
        &self,
        registry: &dyn Registry,
        ttl: Duration,
    ) -> Result<Registered, NodeError> {
        let registration = registry
            .register(Registration::new(self.instance.clone()).with_ttl(ttl))
            .await
            .map_err(|source| NodeError::Registry {
                backend: registry.describe(),
                source,
            })?;
        tracing::info!(
            "Server [{}] registered as {} in {}",
            self.service,
            self.instance.id,
            registry.describe()
        );
        self.admin.registered();
        metrics::gauge!(telemetry::prometheus::names::NODE_INFO,
            "service" => self.service.clone(), "version" => self.version.clone())
        .set(1.0);
        Ok(registration)
    }

    /// Logs who joins and leaves until `watching` is cancelled, and publishes the nodes it
    /// knows as the `cluster` view unless the spec brought its own.
    fn follow_membership(
        &self,
        registry: Arc<dyn Registry>,
        watching: CancellationToken,
    ) -> JoinHandle<()> {
        let known = membership::Known::default();
        if !self.own_cluster_view {
            let view_of = known.clone();
            self.admin.publish(
                "cluster",
                0,
                Arc::new(move || {
                    let view = view_of.to_json();
                    Box::pin(async move { view })
                }),
            );
        }
        let listed = self.admin.clone();
        tokio::spawn(
            membership::log_membership(
                registry,
                self.instance.clone(),
                known,
                self.join_gate.clone(),
                move || listed.listed(),
                watching,
            )
            .in_current_span(),
        )
    }

    /// Not ready first (load balancers and probes stop sending), then leave, so that
    /// nobody sends new work while we drain.
    async fn leave(
        &self,
        registration: Registered,
        watching: CancellationToken,
        readiness: Option<JoinHandle<()>>,
    ) {
        self.admin.draining();
        watching.cancel();
        if let Some(readiness) = readiness {
            let _ = readiness.await;
        }
        if let Err(error) = registration.deregister().await {
            tracing::warn!(%error, "deregistering failed; the entry expires with its lease");
        }
        for name in &self.grpc_services {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }
}

/// Waits for the servers to finish what is in flight, for at most `grace`.
async fn drain_within(mut servers: Running, grace: Duration) {
    let drained = tokio::time::timeout(grace, async {
        while let Some(ended) = servers.join_next().await {
            if let Ok(Err(error)) = ended {
                tracing::warn!(%error, "server ended with an error while draining");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight requests still running after the shutdown grace; stopping anyway"
        );
        servers.abort_all();
    }
}

/// Mirrors `readiness` into grpc.health.v1 for `services` until it is dropped or
/// `stop` says the node is leaving.
async fn report_readiness(
    mut readiness: tokio::sync::watch::Receiver<bool>,
    health: HealthReporter,
    services: Vec<String>,
    admin: Arc<NodeAdmin>,
    stop: CancellationToken,
) {
    loop {
        let serving = *readiness.borrow_and_update();
        admin.serving(serving);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in &services {
            health.set_service_status(name, status).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = readiness.changed() => if changed.is_err() { return },
        }
    }
}
