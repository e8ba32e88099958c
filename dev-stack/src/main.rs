//! `dev-stack`: the gateway (HTTP 8080), three `user` and two `order` nodes in one process,
//! on one in-memory registry and one in-memory user store. No etcd, no containers.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use config::NoSections;
use node::CommonArgs;
use node::{LocalCluster, NodeError};
use serde::{Deserialize, Serialize};
use services::user::{MemoryUserStore, UserSection, UserSettings, UserStore};

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
    let accounts: Arc<dyn UserStore> = Arc::new(MemoryUserStore::new());
    // Service nodes take ports the OS chooses; the gateway keeps the configured ones.
    let mut service_config = loaded.node.clone();
    service_config.rpc_port = 0;
    let mut stack = LocalCluster::with_config(loaded.node.clone());
    node::cancel_on_signal(stack.shutdown().clone());
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

    stack.spawn(gateway::service(), loaded.service.gateway.clone());
    *stack.config_mut() = service_config;
    for _ in 0..loaded.service.stack.users {
        let user = services::user::service_with_store(accounts.clone());
        stack.spawn(user, users.clone());
    }
    for _ in 0..loaded.service.stack.orders {
        stack.spawn(services::order::service(), NoSections {});
    }
    // One node failing takes the stack down: a half stack would only confuse.
    stack.run_until_one_fails().await
}
