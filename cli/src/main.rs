//! `rust-ms new <name>`: a new service crate on the rust-ms builder; `rust-ms proto pull
//! <service>`: the `.proto` files of a running service, for a crate that calls it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
mod proto_text;
mod pull;
mod scaffold;

use scaffold::RustMsSource;

/// Tools for rust-ms services.
#[derive(Debug, Parser)]
#[command(name = "rust-ms", version = env!("CARGO_PKG_VERSION"))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a service crate: a .proto with a unary and a server-streaming method, its
    /// build script, main on the builder, a commented config file and tests.
    ///
    /// Works from any directory. The crate takes rust-ms from `--rust-ms-path` when given,
    /// else from the checkout this command was installed from (`cargo install --path cli`)
    /// while that checkout exists, else from crates.io.
    New {
        /// The service's name: registry name, crate name and proto package (`greeter`).
        name: String,
        /// Where to write the crate; it must be missing or empty [default: ./NAME]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// A checkout of the rust-ms repository (its root folder) to take rust-ms from, by path
        #[arg(long = "rust-ms-path", value_name = "DIR")]
        rust_ms_path: Option<PathBuf>,
    },
    /// The .proto files of running services.
    Proto {
        #[command(subcommand)]
        command: ProtoCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ProtoCommand {
    /// Writes the .proto files of a running service, read from gRPC server reflection, so
    /// that a crate can call it without its source: then
    /// `rust_ms_build::Protos::new(&["proto"]).calls(&["proto/user/v1/user.proto"])`.
    ///
    /// SERVICE is a registry name (`user`: every gRPC service in a package `user.*`), a
    /// package (`user.v1`) or a gRPC service (`user.v1.UserService`). Comments and custom
    /// options do not travel by reflection and are not written.
    Pull {
        /// The service: a registry name, a package or a full gRPC service name.
        service: String,
        /// Where to read reflection: a gateway's rpc port (the whole cluster) or a node.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8180")]
        from: String,
        /// The folder to write into; each file goes at its import path (`user/v1/user.proto`).
        #[arg(long, value_name = "DIR", default_value = "proto")]
        out: PathBuf,
        /// Write over files that exist with other contents.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return exit_for(error),
    };
    match cli.command {
        Command::New {
            name,
            dir,
            rust_ms_path,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let source = match rust_ms_path {
                Some(root) => match RustMsSource::checkout(&root) {
                    Ok(source) => source,
                    Err(error) => {
                        eprintln!("rust-ms: {error}");
                        return ExitCode::FAILURE;
                    }
                },
                None => RustMsSource::installed_from(),
            };
            match scaffold::write(&dir, &name, &source) {
                Ok(files) => {
                    println!("wrote the {name} service in {}:", dir.display());
                    println!("  (rust-ms {})", source.describe());
                    for file in files {
                        println!("  {}", file.display());
                    }
                    println!(
                        "next: cd {} && cargo test && cargo run -- --config config/{name}.toml",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("rust-ms: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Proto {
            command:
                ProtoCommand::Pull {
                    service,
                    from,
                    out,
                    force,
                },
        } => pull_protos(&service, &from, &out, force),
    }
}

fn pull_protos(service: &str, from: &str, out: &std::path::Path, force: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rust-ms: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pull::pull(service, from, out, force)) {
        Ok(pulled) => {
            println!("{} from {from}:", pulled.services.join(", "));
            for (path, outcome) in &pulled.files {
                let how = match outcome {
                    pull::Outcome::Written => "wrote",
                    pull::Outcome::Unchanged => "unchanged",
                };
                println!("  {how} {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rust-ms: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version exit 0; a bad command line is one line and exit 2.
fn exit_for(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = error.render().to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("bad command line"));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_help_of_new_documents_its_folder_where_rust_ms_comes_from_and_both_flags() {
        let mut command = Cli::command();
        let new = command
            .find_subcommand_mut("new")
            .expect("a `new` subcommand");
        let help = new.render_long_help().to_string();
        for expected in [
            "--dir <DIR>",
            "[default: ./NAME]",
            "--rust-ms-path <DIR>",
            "cargo install --path cli",
            "crates.io",
        ] {
            assert!(
                help.contains(expected),
                "{expected:?} missing from:\n{help}"
            );
        }
    }
}
