//! Verifying the caller's JWT on routes that ask for it (HS256 with a shared secret,
//! RS256 with a public key) and forwarding chosen claims to the service as gRPC metadata.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// `[gateway.jwt]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Secret for HS256 tokens (the user service's `user.token_secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    /// PEM public key for RS256 tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rs256_public_key: Option<PathBuf>,
    /// When set, tokens must carry this `iss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
}

impl JwtVerifier {
    /// `Err((key, reason))` when a configured key cannot be used.
    pub fn from_config(config: &JwtConfig) -> Result<Self, (String, String)> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs256_secret {
            if secret.is_empty() {
                return Err((
                    "gateway.jwt.hs256_secret".into(),
                    "must not be empty".into(),
                ));
            }
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(path) = &config.rs256_public_key {
            let pem = std::fs::read(path).map_err(|e| {
                (
                    "gateway.jwt.rs256_public_key".to_owned(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                (
                    "gateway.jwt.rs256_public_key".to_owned(),
                    format!("{} is not an RSA public key: {e}", path.display()),
                )
            })?;
            keys.push((Algorithm::RS256, key));
        }
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
        })
    }

    /// Accepts no token at all.
    pub fn without_keys() -> Self {
        Self {
            keys: Vec::new(),
            issuer: None,
        }
    }

    /// The token's claims, or why it is refused.
    pub fn verify(
        &self,
        authorization: Option<&str>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, TokenRefused> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenRefused::Missing)?;
        if self.keys.is_empty() {
            return Err(TokenRefused::NoKeys);
        }
        let header = jsonwebtoken::decode_header(token).map_err(TokenRefused::Malformed)?;
        let (algorithm, key) = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or(TokenRefused::Algorithm(header.alg))?;
        let mut validation = Validation::new(*algorithm);
        // A token is refused before its `nbf` as after its `exp`, with the same leeway
        // (jsonwebtoken checks only `exp` unless told).
        validation.validate_nbf = true;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenRefused::NotYetValid,
                _ => TokenRefused::Invalid(e),
            })
    }
}

/// Why a call's token was refused (the caller is told, with UNAUTHENTICATED).
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    #[error("a bearer token is required (Authorization: Bearer <jwt>)")]
    Missing,
    #[error("this route requires a JWT but the gateway has no [gateway.jwt] key")]
    NoKeys,
    #[error("malformed token: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    #[error("tokens signed with {0:?} are not accepted")]
    Algorithm(Algorithm),
    /// jsonwebtoken names it only "ImmatureSignature".
    #[error("invalid token: not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("invalid token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
}

/// The metadata key a forwarded claim travels under: `sub` → `x-jwt-sub`.
pub fn claim_header(claim: &str) -> String {
    format!(
        "{}{}",
        node::CLAIM_HEADER_PREFIX,
        claim.to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_tokens_verify_only_with_the_right_secret_and_issuer() {
        let verifier = JwtVerifier::from_config(&JwtConfig {
            hs256_secret: Some("s3cret".into()),
            rs256_public_key: None,
            issuer: Some("rust-ms/user".into()),
        })
        .unwrap();
        let exp = registry::unix_millis_now() / 1000 + 60;
        let good = token(
            "s3cret",
            serde_json::json!({"sub": "bob", "iss": "rust-ms/user", "exp": exp}),
        );
        let claims = verifier.verify(Some(&format!("Bearer {good}"))).unwrap();
        assert_eq!(claims["sub"], "bob");
        let wrong_secret = token(
            "other",
            serde_json::json!({"sub": "bob", "iss": "rust-ms/user", "exp": exp}),
        );
        assert!(
            verifier
                .verify(Some(&format!("Bearer {wrong_secret}")))
                .is_err()
        );
        let wrong_issuer = token(
            "s3cret",
            serde_json::json!({"sub": "bob", "iss": "else", "exp": exp}),
        );
        assert!(
            verifier
                .verify(Some(&format!("Bearer {wrong_issuer}")))
                .is_err()
        );
        let expired = token(
            "s3cret",
            serde_json::json!({"sub": "bob", "iss": "rust-ms/user", "exp": 1}),
        );
        assert!(verifier.verify(Some(&format!("Bearer {expired}"))).is_err());
        assert!(matches!(verifier.verify(None), Err(TokenRefused::Missing)));
    }

    #[test]
    fn a_token_whose_nbf_is_an_hour_ahead_is_refused_as_not_valid_yet_and_one_within_the_leeway_passes()
     {
        let verifier = JwtVerifier::from_config(&JwtConfig {
            hs256_secret: Some("s3cret".into()),
            rs256_public_key: None,
            issuer: None,
        })
        .unwrap();
        let now = registry::unix_millis_now() / 1000;
        let with_nbf = |nbf: u64| {
            let signed = token(
                "s3cret",
                serde_json::json!({"sub": "bob", "exp": now + 7200, "nbf": nbf}),
            );
            verifier.verify(Some(&format!("Bearer {signed}")))
        };

        let refused = with_nbf(now + 3600).unwrap_err();
        assert!(matches!(refused, TokenRefused::NotYetValid), "{refused}");
        // Clocks differ a little between the issuer and the gateway: the leeway of `exp`.
        for nbf in [now - 5, now, now + 30] {
            let claims = with_nbf(nbf).unwrap_or_else(|e| panic!("nbf {nbf} (now {now}): {e}"));
            assert_eq!(claims["sub"], "bob");
        }
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key_and_no_hs256_token_passes_for_them() {
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let public_key = testdata.join("rs256-public.pem");
        let verifier = JwtVerifier::from_config(&JwtConfig {
            hs256_secret: None,
            rs256_public_key: Some(public_key.clone()),
            issuer: None,
        })
        .unwrap();
        let exp = registry::unix_millis_now() / 1000 + 60;
        let claims = serde_json::json!({"sub": "carol", "role": "admin", "exp": exp});
        let signed_by = |private_key: &str| {
            let pem = std::fs::read(testdata.join(private_key)).unwrap();
            jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &claims,
                &EncodingKey::from_rsa_pem(&pem).unwrap(),
            )
            .unwrap()
        };

        let good = signed_by("rs256-private.pem");
        let verified = verifier.verify(Some(&format!("Bearer {good}"))).unwrap();
        assert_eq!(
            (&verified["sub"], &verified["role"]),
            (&claims["sub"], &claims["role"])
        );

        let forged = signed_by("other-private.pem");
        assert!(verifier.verify(Some(&format!("Bearer {forged}"))).is_err());

        // The old confusion attack: an HS256 token keyed with the public key itself.
        let public_pem = std::fs::read(&public_key).unwrap();
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        let refused = verifier
            .verify(Some(&format!("Bearer {confused}")))
            .unwrap_err();
        assert!(
            matches!(refused, TokenRefused::Algorithm(Algorithm::HS256)),
            "{refused}"
        );
    }

    #[test]
    fn an_unreadable_rs256_key_is_a_config_error_naming_the_key() {
        let err = JwtVerifier::from_config(&JwtConfig {
            hs256_secret: None,
            rs256_public_key: Some("/nonexistent.pem".into()),
            issuer: None,
        })
        .err()
        .unwrap();
        assert_eq!(err.0, "gateway.jwt.rs256_public_key");
    }
}
