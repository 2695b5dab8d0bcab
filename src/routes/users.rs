//! `/users/*`: one's own profile, and account management for admins.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accounts::session_cookies;
use super::settings::{get_my_settings, put_my_settings};
use super::with_cookies;
use super::RouteRules;
use crate::auth::{AdminUser, CurrentUser};
use crate::error::{ApiError, ApiResult};
use crate::guards::rate_limit::{ClientAddress, LimitKind};
use crate::schemas::settings::{SettingsResponse, SettingsUpdate};
use crate::schemas::users::{UserListQuery, UserResponse, UserUpdate};
use crate::services::audit::ActionContext;
use crate::services::{accounts, users};
use crate::state::AppState;
use crate::store::users::User;
use crate::validation::{UserPath, ValidJson, ValidPath, ValidQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me).rate_limited(LimitKind::ProfileRead))
        .routes(routes!(update_me).rate_limited(LimitKind::ProfileWrite))
        .routes(routes!(list))
        .routes(routes!(get_user, update_user, deactivate_user))
        .routes(routes!(activate_user))
        // The seed README's names for `/user-settings/me`, sharing its budgets.
        .routes(routes!(get_my_settings_alias).rate_limited(LimitKind::SettingsRead))
        .routes(routes!(put_my_settings_alias).rate_limited(LimitKind::SettingsWrite))
}

#[utoipa::path(
    get, path = "/users/me", tag = "users", responses((status = 200, body = UserResponse)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn me(CurrentUser(user): CurrentUser) -> Json<UserResponse> {
    Json(user.into())
}

/// Answers the updated account. After a password change, which ended every session of the
/// account, the session that made the change continues: new tokens (in a new refresh chain)
/// come as the `access_token` and `refresh_token` cookies.
async fn updated_account(state: &AppState, headers: &HeaderMap, user: User, renew_session: bool) -> ApiResult<Response> {
    let mut cookies = Vec::new();
    if renew_session {
        let tokens = accounts::start_session(&state.store, &state.tokens, &user).await?;
        cookies.extend(session_cookies(state, headers, &tokens));
    }
    Ok(with_cookies(Json(UserResponse::from(user)).into_response(), cookies))
}

#[utoipa::path(
    put, path = "/users/me", tag = "users", request_body = UserUpdate,
    responses((status = 200, description = "The account. After a password change (which ends every session of the account) new access_token and refresh_token cookies continue this session", body = UserResponse),
              (status = 400, description = "Username or e-mail already registered, or Inactive user", body = crate::openapi::ErrorDetail),
              (status = 403, description = "A user cannot change their own active status", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn update_me(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    CurrentUser(user): CurrentUser,
    ValidJson(update): ValidJson<UserUpdate>,
) -> ApiResult<Response> {
    let changes_password = update.password.is_some();
    let context = ActionContext::user(user.id, address);
    let updated = users::update_own_profile(&state.store, &context, &user, update).await?;
    updated_account(&state, &headers, updated, changes_password).await
}

#[utoipa::path(
    get, path = "/users", tag = "users", params(UserListQuery),
    responses((status = 200, description = "Users by creation time", body = Vec<UserResponse>),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidQuery(query): ValidQuery<UserListQuery>,
) -> ApiResult<Json<Vec<UserResponse>>> {
    let users = state.store.list_users(query.skip, query.limit).await?;
    Ok(Json(users.into_iter().map(UserResponse::from).collect()))
}

#[utoipa::path(
    get, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 200, body = UserResponse),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "User not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<UserResponse>> {
    let user = state.store.user_by_id(path.user_id).await?.ok_or(ApiError::NotFound("User not found"))?;
    Ok(Json(user.into()))
}

#[utoipa::path(
    put, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)), request_body = UserUpdate,
    responses((status = 200, description = "The account. A new password or a changed active flag ends every session of the account; an admin who changed their own password continues with new cookies", body = UserResponse),
              (status = 400, description = "Username or e-mail already registered, or Inactive user", body = crate::openapi::ErrorDetail),
              (status = 403, description = "Not an admin user; or one's own role or active status; or the last active admin", body = crate::openapi::ErrorDetail),
              (status = 404, description = "User not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
    ValidJson(update): ValidJson<UserUpdate>,
) -> ApiResult<Response> {
    let changes_own_password = path.user_id == admin.id && update.password.is_some();
    let context = ActionContext::user(admin.id, address);
    let updated = users::update_by_admin(&state.store, &context, path.user_id, update).await?;
    updated_account(&state, &headers, updated, changes_own_password).await
}

#[utoipa::path(
    delete, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 200, description = "Deactivated; every session of the account has ended", body = UserResponse),
              (status = 403, description = "Not an admin user, or one's own account", body = crate::openapi::ErrorDetail),
              (status = 404, description = "User not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn deactivate_user(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<UserResponse>> {
    let context = ActionContext::user(admin.id, address);
    Ok(Json(users::set_active_by_admin(&state.store, &context, path.user_id, false).await?.into()))
}

#[utoipa::path(
    post, path = "/users/{user_id}/activate", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 200, description = "Activated", body = UserResponse),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "User not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn activate_user(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<UserResponse>> {
    let context = ActionContext::user(admin.id, address);
    Ok(Json(users::set_active_by_admin(&state.store, &context, path.user_id, true).await?.into()))
}

/// The seed README's name for `GET /user-settings/me`.
#[utoipa::path(get, path = "/users/me/settings", tag = "settings", responses((status = 200, description = "Alias of GET /user-settings/me", body = SettingsResponse)), security(("access_token" = []), ("bearer" = [])))]
pub(crate) async fn get_my_settings_alias(state: State<AppState>, user: CurrentUser) -> ApiResult<Json<SettingsResponse>> {
    get_my_settings(state, user).await
}

/// The seed README's name for `PUT /user-settings/me`.
#[utoipa::path(put, path = "/users/me/settings", tag = "settings", request_body = SettingsUpdate, responses((status = 200, description = "Alias of PUT /user-settings/me", body = SettingsResponse)), security(("access_token" = []), ("bearer" = [])))]
pub(crate) async fn put_my_settings_alias(
    state: State<AppState>,
    user: CurrentUser,
    update: ValidJson<SettingsUpdate>,
) -> ApiResult<Json<SettingsResponse>> {
    put_my_settings(state, user, update).await
}
