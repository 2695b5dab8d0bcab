//! `/users/*`: one's own profile, and account management for admins.

use axum::extract::State;
use axum::Json;

use super::settings::{get_my_settings, put_my_settings};
use crate::auth::{AdminUser, CurrentUser};
use crate::error::{ApiError, ApiResult};
use crate::schemas::users::{UserListQuery, UserResponse, UserUpdate};
use crate::services::users;
use crate::state::AppState;
use crate::validation::{UserPath, ValidJson, ValidPath, ValidQuery};

api_routes! {
    "/users/me" => get(me).put(update_me),
    "/users/me/settings" => get(get_my_settings).put(put_my_settings),
    "/users" => get(list),
    "/users/{user_id}" => get(get_user).put(update_user).delete(deactivate_user),
    "/users/{user_id}/activate" => post(activate_user),
}

async fn me(CurrentUser(user): CurrentUser) -> Json<UserResponse> {
    Json(user.into())
}

async fn update_me(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidJson(update): ValidJson<UserUpdate>,
) -> ApiResult<Json<UserResponse>> {
    Ok(Json(users::update_own_profile(&state.store, &user, update).await?.into()))
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidQuery(query): ValidQuery<UserListQuery>,
) -> ApiResult<Json<Vec<UserResponse>>> {
    let users = state.store.list_users(query.skip, query.limit).await?;
    Ok(Json(users.into_iter().map(UserResponse::from).collect()))
}

async fn get_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<UserResponse>> {
    let user = state.store.user_by_id(path.user_id).await?.ok_or(ApiError::NotFound("User not found"))?;
    Ok(Json(user.into()))
}

async fn update_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
    ValidJson(update): ValidJson<UserUpdate>,
) -> ApiResult<Json<UserResponse>> {
    Ok(Json(users::update_by_admin(&state.store, &admin, path.user_id, update).await?.into()))
}

async fn deactivate_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<UserResponse>> {
    Ok(Json(users::set_active_by_admin(&state.store, &admin, path.user_id, false).await?.into()))
}

async fn activate_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<UserPath>,
) -> ApiResult<Json<UserResponse>> {
    Ok(Json(users::set_active_by_admin(&state.store, &admin, path.user_id, true).await?.into()))
}
