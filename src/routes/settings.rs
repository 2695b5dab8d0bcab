//! `/user-settings/*`: one's own settings, and admins' access to anyone's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::auth::{AdminUser, CurrentUser};
use crate::error::ApiResult;
use crate::schemas::settings::{SettingsResponse, SettingsUpdate};
use crate::services::settings;
use crate::state::AppState;
use crate::validation::{UserPath, ValidJson, ValidPath};

api_routes! {
    "/user-settings/me" => get(get_my_settings).put(put_my_settings),
    "/user-settings/{user_id}" => get(get_settings).put(put_settings).delete(delete_settings),
}

pub async fn get_my_settings(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Json<SettingsResponse>> {
    Ok(Json(settings::settings_of(&state.store, &user).await?.into()))
}

pub async fn put_my_settings(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidJson(update): ValidJson<SettingsUpdate>,
) -> ApiResult<Json<SettingsResponse>> {
    Ok(Json(settings::update_settings(&state.store, &user, update).await?.into()))
}

async fn get_settings(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<SettingsResponse>> {
    Ok(Json(settings::settings_for_admin(&state.store, path.user_id).await?.into()))
}

async fn put_settings(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
    ValidJson(update): ValidJson<SettingsUpdate>,
) -> ApiResult<Json<SettingsResponse>> {
    Ok(Json(settings::update_settings_for_admin(&state.store, &admin, path.user_id, update).await?.into()))
}

async fn delete_settings(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<StatusCode> {
    settings::delete_settings_for_admin(&state.store, &admin, path.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
