//! `dev-stack`: the gateway (HTTP 8080), three `user` and two `order` nodes in one process,
//! on one in-memory registry and one in-memory user store. No etcd, no containers.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use config::NoSections;
use node::CommonArgs;
use node::Connected;
use node::{Launch, NodeError, Service};
use registry_memory::MemoryRegistry;
use serde::{Deserialize, Serialize};
use services::user::{MemoryUserStore, UserSection, UserSettings, UserStore};
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
    match node::parse_args::<Cli>() {
        Ok(cli) => node::run_main("dev-stack", run(cli)),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<(), NodeError> {
    // The stack is in-memory by definition, and everything in it is on this host.
    let mut flags = cli.common.flags();
    flags.set("registry.backend", "dev-stack", "memory");
    if cli.common.advertise_host.is_none() {
        flags.set("advertise_host", "dev-stack", "127.0.0.1");
        // Nothing outside this host needs to reach the stack's nodes.
        flags.set("listen_host", "dev-stack", "127.0.0.1");
    }
    if let Some(port) = cli.http_port {
        flags.set("http_port", "--http-port", port);
    }
    let Some(loaded) = node::load_config_with::<StackSettings>(&cli.common, &flags)? else {
        return Ok(());
    };
    // One admin port for the whole process: its /readyz waits for every node of the stack.
    let listen = node::AdminListen::of(&loaded);
    node::start_admin("dev-stack", &loaded.node, listen).await?;
    let backend = Connected::Memory(MemoryRegistry::new());
    let accounts: Arc<dyn UserStore> = Arc::new(MemoryUserStore::new());
    let shutdown = CancellationToken::new();
    node::cancel_on_signal(shutdown.clone());

    // Service nodes take ports the OS chooses; the gateway keeps the configured ones.
    let gateway_config = loaded.node.clone();
    let mut service_config = loaded.node.clone();
    service_config.rpc_port = 0;
    // One development secret for every user node, so that a token one node issues is
    // accepted by the others (a real deployment sets user.token_secret).
    let mut users = UserSettings {
        user: loaded.service.user.clone(),
    };
    if users.user.token_secret.is_empty() {
        users.user.token_secret = format!(
            "dev-stack-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
    }

    let mut stack = Stack {
        nodes: JoinSet::new(),
        backend,
        shutdown: shutdown.clone(),
    };
    stack.spawn(
        1,
        gateway::service(),
        gateway_config,
        loaded.service.gateway.clone(),
    );
    for n in 1..=loaded.service.stack.users {
        let user = services::user::service_with_store(accounts.clone());
        stack.spawn(n, user, service_config.clone(), users.clone());
    }
    for n in 1..=loaded.service.stack.orders {
        stack.spawn(
            n,
            services::order::service(),
            service_config.clone(),
            NoSections {},
        );
    }

    // One node failing takes the stack down: a half stack would only confuse.
    let mut first_error = None;
    while let Some(ended) = stack.nodes.join_next().await {
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

/// The nodes of the stack, on one backend, stopped together.
struct Stack {
    nodes: JoinSet<Result<(), NodeError>>,
    backend: Connected,
    shutdown: CancellationToken,
}

impl Stack {
    fn spawn<S: Send + 'static>(
        &mut self,
        n: usize,
        service: Service<S>,
        config: config::NodeConfig,
        settings: S,
    ) {
        let span = tracing::info_span!("node", service = %service.name(), n);
        let launch = Launch {
            config,
            settings,
            backend: self.backend.clone(),
            shutdown: self.shutdown.clone(),
        };
        self.nodes.spawn(service.serve(launch).instrument(span));
    }
}
