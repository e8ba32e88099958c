use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `user` binary's own sections of configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserSettings {
    pub user: UserSection,
}

/// `[user]` in `config/user.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserSection {
    /// The HS256 secret tokens are signed with. Every node of the service (and any gateway
    /// verifying the tokens) must share it; when empty, each node makes up its own.
    pub token_secret: String,
    /// How long an issued token is valid.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    pub min_password_len: usize,
}

impl Default for UserSection {
    fn default() -> Self {
        Self {
            token_secret: String::new(),
            token_ttl: Duration::from_secs(3600),
            min_password_len: 8,
        }
    }
}

impl rust_ms::Validate for UserSettings {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.user.min_password_len < 4 {
            return Err(("user.min_password_len".into(), "must be at least 4".into()));
        }
        if self.user.token_ttl < Duration::from_secs(1) {
            return Err(("user.token_ttl".into(), "must be at least 1s".into()));
        }
        Ok(())
    }
}
