use std::time::Duration;

/// Everything a registry operation can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The caller handed in something the registry refuses to store.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    /// No endpoint of the backend answered within the connect timeout.
    #[error("registry unreachable at {endpoints} after {waited:?}: {cause}")]
    Unreachable {
        endpoints: String,
        waited: Duration,
        cause: String,
    },

    /// The backend answered with an error while doing `operation`.
    #[error("registry {operation} failed: {cause}")]
    Backend {
        operation: &'static str,
        cause: String,
    },

    /// A stored value could not be understood.
    #[error("registry entry {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

impl RegistryError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    pub fn backend(operation: &'static str, cause: impl std::fmt::Display) -> Self {
        Self::Backend {
            operation,
            cause: cause.to_string(),
        }
    }
}
