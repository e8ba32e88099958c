//! `gateway --config config/gateway.toml`: the API gateway.
//! `gateway routes push FILE` / `gateway routes show`: the route table kept in etcd.
//! `gateway nodes [--json]`: the services and nodes in the registry.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use node::CommonArgs;
use node::Connected;
use node::NodeError;

/// Allocation is on the hot path of every proxied call; mimalloc costs less per call.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Lists the services and nodes in the registry, as a table (or JSON with --json).
    Nodes {
        /// JSON for scripts: one object per node.
        #[arg(long)]
        json: bool,
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
    let cli = match node::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let mut gateway = gateway::service();
    if let Some(port) = cli.http_port {
        gateway = gateway.flag("http_port", "--http-port", port);
    }
    match cli.command {
        None => gateway.run_with_args(cli.common),
        Some(Command::Routes { action }) => gateway.run_command(cli.common, |context| async move {
            Ok(routes_command(context.backend(), action).await?)
        }),
        Some(Command::Nodes { json }) => gateway.run_command(cli.common, |context| async move {
            let registry = context.registry();
            let snapshot = registry
                .snapshot(&registry::Scope::All)
                .await
                .map_err(|source| NodeError::Registry {
                    backend: registry.describe(),
                    source,
                })?;
            if json {
                println!("{}", gateway::listing::json(&snapshot.instances));
            } else {
                print!(
                    "{}",
                    gateway::listing::table(&snapshot.instances, std::time::SystemTime::now())
                );
            }
            Ok(())
        }),
    }
}

#[cfg(feature = "etcd")]
async fn routes_command(connected: &Connected, action: RoutesAction) -> Result<(), NodeError> {
    use gateway::route_table_key as key;
    let Connected::Etcd(etcd) = connected else {
        return Err(NodeError::Unsupported(
            "the route table lives in etcd; this gateway is configured with the memory registry"
                .into(),
        ));
    };
    let failed = |what: &'static str| {
        move |e: registry::RegistryError| NodeError::Serve {
            what,
            cause: e.to_string(),
        }
    };
    let key = key(etcd.namespace());
    let kv = etcd.kv();
    match action {
        RoutesAction::Push { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                NodeError::Unsupported(format!("cannot read {}: {e}", file.display()))
            })?;
            let routes = gateway::settings::parse_route_table(&text).map_err(|reason| {
                NodeError::Unsupported(format!("invalid route table {}: {reason}", file.display()))
            })?;
            // Nothing is stored unless the text reads back as this table: every gateway
            // applies what is stored.
            let stored = gateway::settings::render_route_table(&routes).map_err(|reason| {
                NodeError::Unsupported(format!(
                    "route table {} not stored: {reason}",
                    file.display()
                ))
            })?;
            kv.put(key.clone(), stored)
                .await
                .map_err(failed("storing the route table"))?;
            println!("stored {} route(s) at {key}", routes.len());
        }
        RoutesAction::Show => {
            let found = kv
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
