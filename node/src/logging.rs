//! One tracing subscriber per process, formatted as configured.

use std::io::IsTerminal;

use config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `RUST_LOG`, when set, wins over `log.level`.
/// Returns the reason when `log.level` is not a valid filter.
pub fn init(log: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests, the dev stack) keeps the first subscriber.
    let _ = match log.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
