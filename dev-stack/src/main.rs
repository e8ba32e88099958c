//! `dev-stack`: the gateway (HTTP 8080), three `user` and two `order` nodes in one process,
//! on one in-memory registry and one in-memory user store. No etcd, no containers.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use node::cli::CommonArgs;
use node::{NodeError, NodeSpec};
use registry::Registry;
use registry_memory::MemoryRegistry;
use serde::{Deserialize, Serialize};
use services::user::{MemoryUserStore, UserSection, UserStore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Runs the whole rust-ms stack in this process.
#[derive(Debug, Parser)]
#[command(name = "dev-stack", version = node::VERSION)]
struct Cli {
    /// Gateway HTTP port.
    #[arg(long = "http-port", alias = "http_port", value_name = "PORT")]
    http_port: Option<u16>,
    #[command(flatten)]
    common: CommonArgs,
}

/// The stack's own sections: how many nodes, and the user service's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct StackSettings {
    stack: StackSection,
    user: UserSection,
    /// The gateway's `[gateway]` and `[routes.<service>]`.
    #[serde(flatten)]
    gateway: gateway::settings::GatewaySettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
struct StackSection {
    users: usize,
    orders: usize,
}

impl Default for StackSection {
    fn default() -> Self {
        Self {
            users: 3,
            orders: 2,
        }
    }
}

use config::Validate;

impl Validate for StackSettings {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.stack.users == 0 {
            return Err((
                "stack.users".into(),
                "the stack needs at least one user node".into(),
            ));
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    match node::cli::parse::<Cli>() {
        Ok(cli) => node::cli::run("dev-stack", run(cli)),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<(), NodeError> {
    // The stack is in-memory by definition, and everything in it is on this host.
    let mut flags = cli.common.flags();
    flags.set("registry.backend", "dev-stack", "memory");
    if cli.common.advertise_host.is_none() {
        flags.set("advertise_host", "dev-stack", "127.0.0.1");
    }
    if let Some(port) = cli.http_port {
        flags.set("http_port", "--http-port", port);
    }
    let Some(loaded) = node::cli::load_config_with::<StackSettings>(&cli.common, &flags)? else {
        return Ok(());
    };
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let users: Arc<dyn UserStore> = Arc::new(MemoryUserStore::new());
    let shutdown = CancellationToken::new();
    node::shutdown::cancel_on_signal(shutdown.clone());

    // Service nodes take ports the OS chooses; the gateway keeps the configured ones.
    let gateway_config = loaded.node.clone();
    let mut service_config = loaded.node.clone();
    service_config.rpc_port = 0;

    let credentials = node::credentials::ClusterCredentials::from_config(&loaded.node.security)?;
    let mut nodes = JoinSet::new();
    let http = node::serve::bind(gateway_config.http_port).await?;
    let (gateway, _routes) = gateway::node_spec(
        registry.clone(),
        &loaded.service.gateway,
        credentials.clone(),
        http,
        shutdown.clone(),
    );
    spawn(
        &mut nodes,
        "gateway",
        1,
        gateway,
        gateway_config,
        &registry,
        &shutdown,
    );
    for n in 1..=loaded.service.stack.users {
        let spec = services::user::node_spec(&loaded.service.user, users.clone());
        spawn(
            &mut nodes,
            "user",
            n,
            spec,
            service_config.clone(),
            &registry,
            &shutdown,
        );
    }
    for n in 1..=loaded.service.stack.orders {
        let channel = node::client::service_channel(registry.clone(), "user", credentials.clone())
            .await
            .map_err(|source| NodeError::Registry {
                backend: registry.describe(),
                source,
            })?;
        let spec = services::order::node_spec(channel);
        spawn(
            &mut nodes,
            "order",
            n,
            spec,
            service_config.clone(),
            &registry,
            &shutdown,
        );
    }

    // One node failing takes the stack down: a half stack would only confuse.
    let mut first_error = None;
    while let Some(ended) = nodes.join_next().await {
        let error = match ended {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(join) => NodeError::Serve {
                what: "a node",
                cause: join.to_string(),
            },
        };
        shutdown.cancel();
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}

fn spawn(
    nodes: &mut JoinSet<Result<(), NodeError>>,
    service: &'static str,
    n: usize,
    spec: NodeSpec,
    config: config::NodeConfig,
    registry: &Arc<dyn Registry>,
    shutdown: &CancellationToken,
) {
    let registry = registry.clone();
    let shutdown = shutdown.clone();
    let span = tracing::info_span!("node", %service, n);
    nodes.spawn(
        async move { node::run_node(spec, &config, registry, shutdown).await }.instrument(span),
    );
}
