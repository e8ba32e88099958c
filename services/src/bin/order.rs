//! `order --config config/order.toml`: the example service that calls `user`.

use std::process::ExitCode;

use clap::Parser;
use config::NoSections;
use node::NodeError;
use node::cli::CommonArgs;
use tokio_util::sync::CancellationToken;

/// The rust-ms order service.
#[derive(Debug, Parser)]
#[command(name = "order", version = node::VERSION)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    match node::cli::parse::<Cli>() {
        Ok(cli) => node::cli::run("order", run(cli)),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<(), NodeError> {
    let Some(loaded) = node::cli::load_config::<NoSections>(&cli.common)? else {
        return Ok(());
    };
    let connected = node::backend::connect(&loaded.node).await?;
    let registry = connected.registry();
    let credentials = node::credentials::ClusterCredentials::from_config(&loaded.node.security)?;
    let users = node::client::service_channel(registry.clone(), "user", credentials)
        .await
        .map_err(|source| NodeError::Registry {
            backend: registry.describe(),
            source,
        })?;
    let shutdown = CancellationToken::new();
    node::shutdown::cancel_on_signal(shutdown.clone());
    node::run_node(
        services::order::node_spec(users),
        &loaded.node,
        registry,
        shutdown,
    )
    .await
}
