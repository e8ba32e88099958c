//! A node run inside the test process on a real registry: for test-only services that
//! need no binary of their own.

use std::sync::Arc;
use std::time::Duration;

use registry::{Registry, Scope};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One registered node on loopback.
pub struct InProcessNode {
    pub address: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), node::NodeError>>,
}

impl InProcessNode {
    /// Serves `spec` and returns once the registry lists the new node.
    pub async fn start(spec: node::NodeSpec, registry: Arc<dyn Registry>) -> Self {
        let scope = Scope::service(&spec.service);
        let addresses = |snapshot: registry::Snapshot| -> Vec<String> {
            snapshot.instances.into_iter().map(|i| i.address).collect()
        };
        let before = addresses(registry.snapshot(&scope).await.expect("registry snapshot"));
        let config = config::NodeConfig {
            rpc_port: 0,
            advertise_host: "127.0.0.1".to_owned(),
            shutdown_grace: Duration::from_secs(2),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let registry = registry.clone();
            let stop = stop.clone();
            async move { node::run_node(spec, &config, registry, stop).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let address = loop {
            if let Ok(snapshot) = registry.snapshot(&scope).await
                && let Some(new) = addresses(snapshot)
                    .into_iter()
                    .find(|a| !before.contains(a))
            {
                break new;
            }
            assert!(
                !task.is_finished() && tokio::time::Instant::now() < deadline,
                "the in-process node never registered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            address,
            stop,
            task,
        }
    }

    /// The node's graceful exit: deregister, drain, stop.
    pub async fn stop(self) {
        self.stop.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the node stopped within 30 s")
            .expect("the node task did not panic");
        outcome.expect("the node exited cleanly");
    }
}
