//! `user --config config/user.toml`: the example account service.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use node::NodeError;
use node::backend::Connected;
use node::cli::CommonArgs;
use services::user::{MemoryUserStore, UserSettings, UserStore};
use tokio_util::sync::CancellationToken;

/// The rust-ms user service.
#[derive(Debug, Parser)]
#[command(name = "user", version = node::VERSION)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    match node::cli::parse::<Cli>() {
        Ok(cli) => node::cli::run("user", run(cli)),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<(), NodeError> {
    let Some(loaded) = node::cli::load_config::<UserSettings>(&cli.common)? else {
        return Ok(());
    };
    let connected = node::backend::connect(&loaded.node).await?;
    // Accounts live beside the registry, so every node of the service sees the same ones.
    let store: Arc<dyn UserStore> = match &connected {
        Connected::Memory(_) => Arc::new(MemoryUserStore::new()),
        #[cfg(feature = "etcd")]
        Connected::Etcd(etcd) => Arc::new(services::user::EtcdUserStore::new(
            etcd.client(),
            etcd.namespace(),
        )),
    };
    let spec = services::user::node_spec(&loaded.service.user, store);
    let shutdown = CancellationToken::new();
    node::shutdown::cancel_on_signal(shutdown.clone());
    node::run_node(spec, &loaded.node, connected.registry(), shutdown).await
}
