//! Access and refresh JWTs, with the original's claims.

use std::time::Duration;

use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::JwtConfig;
use crate::store::users::{Role, User};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// Claims of both token types, in the original's order. `username` and `role` are only in
/// access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub exp: u64,
    #[serde(rename = "type")]
    pub token_type: TokenType,
    pub token_version: i32,
    /// Refresh tokens only: the id of the token's row in `refresh_tokens` (rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<Uuid>,
}

/// A verified token: whose it is and which `token_version` it carries.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    pub token_version: i32,
    pub token_id: Option<Uuid>,
}

/// Signs and verifies tokens; the keys are derived once at startup.
#[derive(Clone)]
pub struct TokenKeys {
    access_encoding: EncodingKey,
    access_decoding: DecodingKey,
    refresh_encoding: EncodingKey,
    refresh_decoding: DecodingKey,
    header: Header,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid token")]
pub struct InvalidToken;

impl TokenKeys {
    pub fn new(config: &JwtConfig) -> Self {
        let mut validation = Validation::new(config.algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            access_encoding: EncodingKey::from_secret(config.access_secret.expose().as_bytes()),
            access_decoding: DecodingKey::from_secret(config.access_secret.expose().as_bytes()),
            refresh_encoding: EncodingKey::from_secret(config.refresh_secret.expose().as_bytes()),
            refresh_decoding: DecodingKey::from_secret(config.refresh_secret.expose().as_bytes()),
            header: Header::new(config.algorithm),
            validation,
            access_ttl: config.access_ttl,
            refresh_ttl: config.refresh_ttl,
        }
    }

    /// Signs a new access token and a refresh token with id `refresh_id`.
    pub fn issue(&self, user: &User, refresh_id: Uuid) -> IssuedTokens {
        let now = jsonwebtoken::get_current_timestamp();
        let access = Claims {
            sub: user.id.to_string(),
            username: Some(user.username.clone()),
            role: Some(user.role()),
            exp: now + self.access_ttl.as_secs(),
            token_type: TokenType::Access,
            token_version: user.token_version,
            jti: None,
        };
        let refresh = Claims {
            sub: user.id.to_string(),
            username: None,
            role: None,
            exp: now + self.refresh_ttl.as_secs(),
            token_type: TokenType::Refresh,
            token_version: user.token_version,
            jti: Some(refresh_id),
        };
        IssuedTokens {
            access_token: encode(&self.header, &access, &self.access_encoding).expect("HMAC signing cannot fail"),
            refresh_token: encode(&self.header, &refresh, &self.refresh_encoding).expect("HMAC signing cannot fail"),
        }
    }

    /// Checks signature, algorithm, expiry and type. Whether the user still accepts the token
    /// (`token_version`, active) is the caller's check against the database.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<VerifiedToken, InvalidToken> {
        let key = match expected {
            TokenType::Access => &self.access_decoding,
            TokenType::Refresh => &self.refresh_decoding,
        };
        let claims = decode::<Claims>(token, key, &self.validation).map_err(|_| InvalidToken)?.claims;
        if claims.token_type != expected {
            return Err(InvalidToken);
        }
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| InvalidToken)?;
        Ok(VerifiedToken { user_id, token_version: claims.token_version, token_id: claims.jti })
    }
}
