//! `/user-settings/*`: one's own settings, and admins' access to anyone's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RouteRules;
use crate::auth::{AdminUser, CurrentUser};
use crate::error::ApiResult;
use crate::guards::rate_limit::{ClientAddress, LimitKind};
use crate::schemas::settings::{SettingsResponse, SettingsUpdate};
use crate::services::audit::ActionContext;
use crate::services::settings;
use crate::state::AppState;
use crate::validation::{UserPath, ValidJson, ValidPath};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_my_settings).rate_limited(LimitKind::SettingsRead))
        .routes(routes!(put_my_settings).rate_limited(LimitKind::SettingsWrite))
        .routes(routes!(get_settings, put_settings, delete_settings))
}

#[utoipa::path(
    get, path = "/user-settings/me", tag = "settings", responses((status = 200, description = "Created with defaults when missing", body = SettingsResponse)), security(("access_token" = []), ("bearer" = []))
)]
pub async fn get_my_settings(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Json<SettingsResponse>> {
    Ok(Json(settings::settings_of(&state.store, &user).await?.into()))
}

#[utoipa::path(
    put, path = "/user-settings/me", tag = "settings", request_body = SettingsUpdate, responses((status = 200, body = SettingsResponse)), security(("access_token" = []), ("bearer" = []))
)]
pub async fn put_my_settings(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidJson(update): ValidJson<SettingsUpdate>,
) -> ApiResult<Json<SettingsResponse>> {
    Ok(Json(settings::update_settings(&state.store, &user, update).await?.into()))
}

#[utoipa::path(
    get, path = "/user-settings/{user_id}", tag = "settings", params(("user_id" = Uuid, Path)),
    responses((status = 200, body = SettingsResponse),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "Settings not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn get_settings(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<SettingsResponse>> {
    Ok(Json(settings::settings_for_admin(&state.store, path.user_id).await?.into()))
}

#[utoipa::path(
    put, path = "/user-settings/{user_id}", tag = "settings", params(("user_id" = Uuid, Path)), request_body = SettingsUpdate,
    responses((status = 200, body = SettingsResponse),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "User not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn put_settings(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
    ValidJson(update): ValidJson<SettingsUpdate>,
) -> ApiResult<Json<SettingsResponse>> {
    let context = ActionContext::user(admin.id, address);
    Ok(Json(settings::update_settings_for_admin(&state.store, &context, path.user_id, update).await?.into()))
}

#[utoipa::path(
    delete, path = "/user-settings/{user_id}", tag = "settings", params(("user_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "Settings not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn delete_settings(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<StatusCode> {
    settings::delete_settings_for_admin(&state.store, &ActionContext::user(admin.id, address), path.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
