//! `gateway --config config/gateway.toml`: the API gateway.

use std::process::ExitCode;

use clap::Parser;
use config::NoSections;
use node::NodeError;
use node::cli::CommonArgs;
use tokio_util::sync::CancellationToken;

/// The rust-ms API gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version = node::VERSION)]
struct Cli {
    /// HTTP port (0: the OS chooses).
    #[arg(long = "http-port", alias = "http_port", value_name = "PORT")]
    http_port: Option<u16>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    match node::cli::parse::<Cli>() {
        Ok(cli) => node::cli::run("gateway", run(cli)),
        Err(code) => code,
    }
}

async fn run(cli: Cli) -> Result<(), NodeError> {
    let mut flags = cli.common.flags();
    if let Some(port) = cli.http_port {
        flags.set("http_port", "--http-port", port);
    }
    let Some(loaded) = node::cli::load_config_with::<NoSections>(&cli.common, &flags)? else {
        return Ok(());
    };
    let connected = node::backend::connect(&loaded.node).await?;
    let registry = connected.registry();
    let http = node::serve::bind(loaded.node.http_port).await?;
    let shutdown = CancellationToken::new();
    node::shutdown::cancel_on_signal(shutdown.clone());
    let spec = gateway::node_spec(registry.clone(), http, shutdown.clone()).await;
    node::run_node(spec, &loaded.node, registry, shutdown).await
}
