//! Who is calling: `CurrentUser` for any signed-in active user, `AdminUser` for admins,
//! `MaybeUser` where signing in is optional, and `KeyHolder` on the OpenAI-compatible API (an
//! API key, never a session). Role checks live here, not in handlers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::cookies::{cookie_value, ACCESS_COOKIE};
use super::tokens::TokenType;
use crate::error::{ApiError, OpenAiError};
use crate::state::AppState;
use crate::store::api_keys::ApiKeyRecord;
use crate::store::users::User;

/// The signed-in user: a valid access token (cookie first, then `Authorization: Bearer`),
/// an existing active account, and a `token_version` that logout has not moved past.
pub struct CurrentUser(pub User);

/// A signed-in admin.
pub struct AdminUser(pub User);

/// The signed-in user when valid credentials were sent; `None` otherwise (never an error).
pub struct MaybeUser(pub Option<User>);

/// The owner of the API key a `/v1` request carries (`Authorization: Bearer rc-...`), with the
/// owner's current role; counted against the key's rate limit.
pub struct KeyHolder {
    pub user: User,
    pub key: std::sync::Arc<ApiKeyRecord>,
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn access_token(headers: &HeaderMap) -> Option<&str> {
    cookie_value(headers, ACCESS_COOKIE).or_else(|| bearer_token(headers))
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<User, ApiError> {
    let token = access_token(&parts.headers).ok_or(ApiError::NotAuthenticated)?;
    let verified = state.tokens.verify(token, TokenType::Access).map_err(|_| ApiError::InvalidCredentials)?;
    let user = state.store.user_by_id(verified.user_id).await?.ok_or(ApiError::InvalidCredentials)?;
    // The original checks the active flag before the token version.
    if !user.is_active() {
        return Err(ApiError::InactiveUser);
    }
    if user.token_version != verified.token_version {
        return Err(ApiError::InvalidCredentials);
    }
    // The request's span (routes::request_span) names the user from here on.
    tracing::Span::current().record("user_id", tracing::field::display(user.id));
    Ok(user)
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(CurrentUser)
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = authenticate(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::NotAdmin);
        }
        Ok(AdminUser(user))
    }
}

impl FromRequestParts<AppState> for KeyHolder {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = bearer_token(&parts.headers).ok_or_else(|| {
            OpenAiError::invalid_api_key("You didn't provide an API key: send it as `Authorization: Bearer rc-...`")
        })?;
        let (user, key) = state
            .api_key_check
            .authenticate(presented)
            .await?
            .map_err(|refusal| OpenAiError::invalid_api_key(refusal.message()))?;
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        state.rate_limits.check_api_key(key.id)?;
        Ok(KeyHolder { user, key })
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await {
            Ok(user) => Ok(MaybeUser(Some(user))),
            Err(ApiError::DatabaseUnavailable(e)) => Err(ApiError::DatabaseUnavailable(e)),
            Err(_) => Ok(MaybeUser(None)),
        }
    }
}
