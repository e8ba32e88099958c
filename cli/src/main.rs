//! `rust-ms new <name>`: a new service crate on the rust-ms builder.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// Writes a service crate: a .proto with one method, its build script, main on the
    /// builder, a commented config file and a test.
    New {
        /// The service's name: registry name, crate name and proto package (`greeter`).
        name: String,
        /// Where to write the crate (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Take rust-ms from this checkout of its repository instead of crates.io.
        #[arg(long = "rust-ms-path", value_name = "DIR")]
        rust_ms_path: Option<PathBuf>,
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
                Some(root) => match std::path::absolute(&root) {
                    Ok(root) => RustMsSource::Checkout(root),
                    Err(error) => {
                        eprintln!("rust-ms: {}: {error}", root.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => RustMsSource::Release,
            };
            match scaffold::write(&dir, &name, &source) {
                Ok(files) => {
                    println!("wrote the {name} service in {}:", dir.display());
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
