//! Command-line flags every node takes, GO-MS's spellings included, and the way a
//! binary reports failure: one line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser};
use config::Flags;

use crate::logging::LogFilterError;

/// Flags shared by every node binary; global, so that a subcommand takes them too
/// (`gateway nodes --etcd-addr …`).
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// gRPC port (0: the OS chooses).
    #[arg(
        long = "rpc-port",
        alias = "rpc_port",
        value_name = "PORT",
        global = true
    )]
    pub rpc_port: Option<u16>,
    /// etcd endpoints, `127.0.0.1:2379|127.0.0.1:2380` or with commas.
    #[arg(
        long = "etcd-addr",
        alias = "etcd_addr",
        value_name = "ENDPOINTS",
        global = true
    )]
    pub etcd_addr: Option<String>,
    /// Registry backend.
    #[arg(long = "registry", value_name = "BACKEND", value_parser = ["etcd", "memory"], global = true)]
    pub registry: Option<String>,
    /// Address other nodes dial to reach this one (`auto`: first non-loopback IPv4).
    #[arg(
        long = "advertise-host",
        alias = "advertise_host",
        value_name = "HOST",
        global = true
    )]
    pub advertise_host: Option<String>,
    /// Admin port address (unset: 127.0.0.1:9900, or a free port when that is taken;
    /// `127.0.0.1:0`: the OS chooses; `""`: none).
    #[arg(
        long = "admin-listen",
        alias = "admin_listen",
        value_name = "ADDR",
        global = true
    )]
    pub admin_listen: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long = "print-config", alias = "print_config", global = true)]
    pub print_config: bool,
}

impl CommonArgs {
    /// The flags as the last configuration layer.
    pub fn flags(&self) -> Flags {
        let mut flags = Flags::new();
        if let Some(port) = self.rpc_port {
            flags.set("rpc_port", "--rpc-port", port);
        }
        if let Some(addr) = &self.etcd_addr {
            flags.set("registry.etcd_addr", "--etcd-addr", addr);
        }
        if let Some(backend) = &self.registry {
            flags.set("registry.backend", "--registry", backend);
        }
        if let Some(host) = &self.advertise_host {
            flags.set("advertise_host", "--advertise-host", host);
        }
        if let Some(listen) = &self.admin_listen {
            flags.set("admin.listen", "--admin-listen", listen);
        }
        flags
    }
}

/// Parses the command line; help and version print and exit 0, a bad flag prints one line
/// and exits 2.
pub fn parse<T: Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(exit_for)
}

/// What a command-line error means for the process: help and version are printed (exit
/// 0); anything else is one line on stderr and exit 2.
pub fn exit_for(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad command line");
            eprintln!("{first}");
            ExitCode::from(2)
        }
    }
}

/// Runs a binary's async main on a multi-threaded runtime; an error becomes one line on
/// stderr, `NAME: error`, and exit code 1.
pub fn run<E: std::fmt::Display>(
    name: &str,
    main: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    // On one core (a pinned process, a container limited to one CPU) a single-threaded
    // runtime does the same work without waking tasks across threads.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration a binary was started with, `flags` being its command line
/// ([`CommonArgs::flags`] and any the binary adds), and installs logging. Returns `None`
/// after printing it when `--print-config` was given.
pub fn load_config_with<S>(
    args: &CommonArgs,
    flags: &Flags,
) -> Result<Option<config::Loaded<S>>, crate::NodeError>
where
    S: serde::de::DeserializeOwned + serde::Serialize + Default + config::Validate,
{
    let loaded = config::load::<S>(args.config.as_deref(), flags)?;
    if args.print_config {
        print!("{}", loaded.to_toml()?);
        return Ok(None);
    }
    crate::logging::init(&loaded.node.log).map_err(|error| match error {
        LogFilterError::Level(reason) => loaded.invalid("log.level", reason.to_string()),
        LogFilterError::Env(reason) => config::ConfigError::Invalid {
            key: "RUST_LOG".to_owned(),
            origin: "environment variable RUST_LOG, which wins over log.level".to_owned(),
            message: reason.to_string(),
        },
    })?;
    Ok(Some(loaded))
}
