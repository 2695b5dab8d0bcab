//! `/api-keys`: a signed-in user's personal keys for the OpenAI-compatible API.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::ApiResult;
use crate::schemas::api_keys::{ApiKeyCreate, ApiKeyResponse, CreatedApiKeyResponse, KeyPath};
use crate::services::api_keys;
use crate::state::AppState;
use crate::validation::{ValidJson, ValidPath};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(revoke_key))
}

/// Makes a key. The answer is the only time the key is shown.
#[utoipa::path(
    post, path = "/api-keys", tag = "api-keys", request_body = ApiKeyCreate,
    responses((status = 201, body = CreatedApiKeyResponse),
              (status = 400, description = "The user has 50 live keys already, or Inactive user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidJson(request): ValidJson<ApiKeyCreate>,
) -> ApiResult<(StatusCode, Json<CreatedApiKeyResponse>)> {
    let created = api_keys::create(&state.store, &user, request).await?;
    tracing::info!(key_id = %created.record.id, "API key created");
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// The caller's keys that are not revoked, newest first (never the keys themselves).
#[utoipa::path(
    get, path = "/api-keys", tag = "api-keys", responses((status = 200, body = Vec<ApiKeyResponse>)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<ApiKeyResponse>>> {
    let keys = api_keys::list(&state.store, Some(user.id)).await?;
    Ok(Json(keys.into_iter().map(ApiKeyResponse::from).collect()))
}

/// Revokes one of the caller's keys; it stops working at once.
#[utoipa::path(
    delete, path = "/api-keys/{key_id}", tag = "api-keys", params(("key_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"),
              (status = 404, description = "No such key of the caller's", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<KeyPath>,
) -> ApiResult<StatusCode> {
    api_keys::revoke(&state.store, Some(user.id), path.key_id).await?;
    tracing::info!(key_id = %path.key_id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
