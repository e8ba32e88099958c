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
    /// The loaded values cannot be serialized back, so they cannot be compared with what was
    /// given to find unknown keys: a configuration type whose `Serialize` refuses values its
    /// `Deserialize` accepts.
    #[error(
        "invalid configuration: cannot check for unknown keys, {what} do not serialize back: {message}"
    )]
    NotReadBack { what: String, message: String },
}

/// An `admin.listen` that is neither `host:port` with an IP address nor `""`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{listen:?} is not host:port with an IP address (127.0.0.1:9900, 0.0.0.0:9900, [::1]:0), or \"\" for no admin port"
)]
pub struct AdminListenError {
    pub listen: String,
}
