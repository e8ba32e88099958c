//! What the configuration tests share: the sections a service adds beside the shared keys.

use config::Validate;
use serde::{Deserialize, Serialize};

/// The sections a service adds beside the shared keys.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserLike {
    pub user: UserSection,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct UserSection {
    pub min_password_len: u32,
}

impl Default for UserSection {
    fn default() -> Self {
        Self {
            min_password_len: 8,
        }
    }
}

impl Validate for UserLike {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.user.min_password_len < 4 {
            return Err(("user.min_password_len".into(), "must be at least 4".into()));
        }
        Ok(())
    }
}
