//! `gateway --config config/gateway.toml`: the API gateway.
//! `gateway routes push FILE` / `gateway routes show`: the route table kept in etcd.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::settings::GatewaySettings;
use node::NodeError;
use node::backend::Connected;
use node::cli::CommonArgs;
use tokio_util::sync::CancellationToken;

/// The rust-ms API gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version = node::VERSION)]
struct Cli {
    /// HTTP port (0: the OS chooses).
    #[arg(
        long = "http-port",
        alias = "http_port",
        value_name = "PORT",
        global = true
    )]
    http_port: Option<u16>,
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The route table every gateway follows, kept in etcd at {namespace}/config/gateway/routes.
    Routes {
        #[command(subcommand)]
        action: RoutesAction,
    },
}

#[derive(Debug, Subcommand)]
enum RoutesAction {
    /// Checks FILE's [routes] and stores them; every gateway applies them within a second.
    Push { file: PathBuf },
    /// Prints the stored route table.
    Show,
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
    let Some(loaded) = node::cli::load_config_with::<GatewaySettings>(&cli.common, &flags)? else {
        return Ok(());
    };
    let connected = node::backend::connect(&loaded.node).await?;
    if let Some(Command::Routes { action }) = cli.command {
        return routes_command(&connected, action).await;
    }
    let registry = connected.registry();
    let http = node::serve::bind(loaded.node.http_port).await?;
    let shutdown = CancellationToken::new();
    node::shutdown::cancel_on_signal(shutdown.clone());
    let credentials = node::credentials::ClusterCredentials::from_config(&loaded.node.security)?;
    let (spec, live_routes) = gateway::node_spec(
        registry.clone(),
        &loaded.service,
        credentials,
        http,
        shutdown.clone(),
    );
    match &connected {
        #[cfg(feature = "etcd")]
        Connected::Etcd(etcd) => {
            tokio::spawn(gateway::live_routes::etcd::follow(
                etcd.client(),
                etcd.namespace().to_owned(),
                live_routes,
                shutdown.clone(),
            ));
        }
        Connected::Memory(_) => drop(live_routes),
    }
    node::run_node(spec, &loaded.node, registry, shutdown).await
}

#[cfg(feature = "etcd")]
async fn routes_command(connected: &Connected, action: RoutesAction) -> Result<(), NodeError> {
    use gateway::live_routes::etcd::key;
    let Connected::Etcd(etcd) = connected else {
        return Err(NodeError::Unsupported(
            "the route table lives in etcd; this gateway is configured with the memory registry"
                .into(),
        ));
    };
    let failed = |what: &'static str| {
        move |e: etcd_client::Error| NodeError::Serve {
            what,
            cause: e.to_string(),
        }
    };
    let key = key(etcd.namespace());
    let mut client = etcd.client();
    match action {
        RoutesAction::Push { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                NodeError::Unsupported(format!("cannot read {}: {e}", file.display()))
            })?;
            let routes = gateway::settings::parse_route_table(&text).map_err(|reason| {
                NodeError::Unsupported(format!("invalid route table {}: {reason}", file.display()))
            })?;
            let stored = gateway::settings::render_route_table(&routes);
            client
                .put(key.clone(), stored, None)
                .await
                .map_err(failed("storing the route table"))?;
            println!("stored {} route(s) at {key}", routes.len());
        }
        RoutesAction::Show => {
            let found = client
                .get(key.clone(), None)
                .await
                .map_err(failed("reading the route table"))?;
            match found.kvs().first() {
                Some(kv) => print!("{}", String::from_utf8_lossy(kv.value())),
                None => println!(
                    "# no route table stored at {key}; gateways use their configured routes"
                ),
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "etcd"))]
async fn routes_command(_: &Connected, _: RoutesAction) -> Result<(), NodeError> {
    Err(NodeError::Unsupported(
        "this build has no etcd backend, where the route table lives".into(),
    ))
}
