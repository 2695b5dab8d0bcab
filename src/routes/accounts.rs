//! `/auth/*`: register, login, refresh, logout.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::with_cookies;
use super::RouteRules;
use crate::auth::cookies::{cookie_value, CookiePolicy, REFRESH_COOKIE};
use crate::auth::tokens::IssuedTokens;
use crate::auth::{CurrentUser, MaybeUser};
use crate::error::ApiResult;
use crate::guards::cross_site::SameSiteOrigin;
use crate::guards::rate_limit::{ClientAddress, LimitKind};
use crate::metrics;
use crate::schemas::users::{LoginForm, RegisterRequest, TokenResponse, UserResponse};
use crate::schemas::DetailMessage;
use crate::services::accounts::LoginTarget;
use crate::services::audit::ActionContext;
use crate::services::{accounts, ServiceError};
use crate::state::AppState;
use crate::validation::{ValidForm, ValidJson};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register).rate_limited(LimitKind::Register))
        .routes(routes!(login).rate_limited(LimitKind::Login))
        .routes(routes!(refresh).rate_limited(LimitKind::Refresh))
        .routes(routes!(logout).rate_limited(LimitKind::Logout))
}

#[utoipa::path(
    post, path = "/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses((status = 201, description = "Account created (the first one is admin)", body = UserResponse),
              (status = 400, description = "Username or e-mail already registered", body = crate::openapi::ErrorDetail),
              (status = 403, description = "Registration is closed (`REGISTRATION=closed`) and the caller is not an admin", body = crate::openapi::ErrorDetail)),
    security((), ("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    _: SameSiteOrigin,
    MaybeUser(caller): MaybeUser,
    ClientAddress(address): ClientAddress,
    ValidJson(request): ValidJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<UserResponse>)> {
    let context = match &caller {
        Some(caller) => ActionContext::user(caller.id, address),
        None => ActionContext::anonymous(address),
    };
    let by_admin = caller.as_ref().is_some_and(|caller| caller.is_admin());
    let user = accounts::register(&state.store, &state.config.registration, &context, request, by_admin).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// The `Set-Cookie` values that carry a session's tokens.
pub(super) fn session_cookies(state: &AppState, headers: &HeaderMap, tokens: &IssuedTokens) -> [HeaderValue; 2] {
    let policy = CookiePolicy::for_request(headers, state.config.domain.as_deref());
    policy.session(tokens, state.tokens.access_ttl.as_secs(), state.tokens.refresh_ttl.as_secs())
}

/// Answers the tokens, in the body and as cookies.
fn session_response(state: &AppState, headers: &HeaderMap, tokens: IssuedTokens) -> Response {
    let cookies = session_cookies(state, headers, &tokens);
    let body = TokenResponse { access_token: tokens.access_token, refresh_token: tokens.refresh_token, token_type: "bearer" };
    with_cookies(Json(body).into_response(), cookies)
}

#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Logged in: tokens in the body, and the access_token and refresh_token cookies", body = TokenResponse),
              (status = 400, description = "Inactive user", body = crate::openapi::ErrorDetail),
              (status = 401, description = "Incorrect username or password", body = crate::openapi::ErrorDetail),
              (status = 403, description = "Sent from a foreign page (`Cross-site request refused`)", body = crate::openapi::ErrorDetail))
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    _: SameSiteOrigin,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    ValidForm(form): ValidForm<LoginForm>,
) -> ApiResult<Response> {
    let account = accounts::find_login_account(&state.store, &form.username).await?;
    let target = match &account {
        Some(user) => LoginTarget::Account(user.id),
        None => LoginTarget::UnknownName(&form.username),
    };
    if let Some(limit) = state.rate_limits.login_per_account() {
        accounts::count_login_attempt(&state.store, limit, target).await.inspect_err(|_| metrics::login("rate_limited"))?;
    }
    let user = accounts::login(&state.store, &ActionContext::anonymous(address), account, form.password).await;
    metrics::login(match &user {
        Ok(_) => "success",
        Err(ServiceError::IncorrectLogin) => "incorrect",
        Err(ServiceError::InactiveUser) => "inactive",
        Err(_) => "error",
    });
    let user = user?;
    let tokens = accounts::start_session(&state.store, &state.tokens, &user).await?;
    Ok(session_response(&state, &headers, tokens))
}

#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    params(("refresh_token" = Option<String>, Cookie, description = "Set by login, sent by the browser only to this path")),
    responses((status = 200, description = "New tokens; the refresh token used is retired", body = TokenResponse),
              (status = 401, description = "No, an invalid, expired, retired or revoked refresh token", body = crate::openapi::ErrorDetail),
              (status = 403, description = "Sent from a foreign page (`Cross-site request refused`)", body = crate::openapi::ErrorDetail))
)]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    _: SameSiteOrigin,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
) -> ApiResult<Response> {
    let presented = cookie_value(&headers, REFRESH_COOKIE);
    let grace = state.config.jwt.refresh_reuse_grace;
    let context = ActionContext::anonymous(address);
    let (_user, tokens) = accounts::refresh(&state.store, &context, &state.tokens, presented, grace).await?;
    Ok(session_response(&state, &headers, tokens))
}

#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    responses((status = 200, description = "Every token of the user is revoked; the cookies are cleared", body = crate::schemas::DetailMessage)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Response> {
    accounts::logout(&state.store, &ActionContext::user(user.id, address), &user).await?;
    let policy = CookiePolicy::for_request(&headers, state.config.domain.as_deref());
    Ok(with_cookies(Json(DetailMessage { detail: "Successfully logged out" }).into_response(), policy.cleared()))
}
