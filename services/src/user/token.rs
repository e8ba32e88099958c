//! Signed login tokens: HS256 JWTs whose subject is the username.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "rust-ms/user";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
        }
    }

    pub fn issue(&self, username: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = rust_ms::registry::unix_millis_now() / 1000;
        let claims = Claims {
            sub: username.to_owned(),
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The username a valid, unexpired token was issued to.
    pub fn verify(&self, token: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_the_same_secret_only() {
        let issuer = TokenIssuer::new(b"secret", Duration::from_secs(60));
        let token = issuer.issue("bob").unwrap();
        assert_eq!(issuer.verify(&token).unwrap(), "bob");
        let other = TokenIssuer::new(b"other", Duration::from_secs(60));
        assert!(other.verify(&token).is_err());
    }
}
