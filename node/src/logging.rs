//! One tracing subscriber per process, formatted as configured.

use std::io::IsTerminal;

use config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;

/// A log filter that does not parse, and which of the two settings holds it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogFilterError {
    /// `log.level` (the file, `MS_LOG__LEVEL` or a flag).
    #[error("{0}")]
    Level(ParseError),
    /// `RUST_LOG`, which wins over `log.level`: fixing `log.level` would not help.
    #[error("{0}")]
    Env(ParseError),
}

/// Installs the subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub(crate) fn init(log: &LogConfig) -> Result<(), LogFilterError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => {
            EnvFilter::try_new(from_env).map_err(LogFilterError::Env)?
        }
        _ => EnvFilter::try_new(&log.level).map_err(LogFilterError::Level)?,
    };
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
