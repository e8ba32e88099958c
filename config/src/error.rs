/// A configuration that cannot be used, with the key at fault and where it was set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key whose value is of the wrong type or out of range.
    #[error("invalid configuration: {key}: {message} (set in {origin})")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    /// A key no part of the configuration knows, often a typo.
    #[error("invalid configuration: unknown key {key} (set in {origin})")]
    UnknownKey { key: String, origin: String },
    /// The configuration file itself cannot be read or parsed.
    #[error("invalid configuration: {path}: {message}")]
    File { path: String, message: String },
}
