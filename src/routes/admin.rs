//! `/admin/*`: what only admins may see and change. Every handler takes [`AdminUser`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::error::ApiResult;
use crate::schemas::api_keys::{AdminKeyQuery, ApiKeyResponse, KeyPath};
use crate::schemas::usage::{UsageQuery, UsageReport};
use crate::services::{api_keys, usage};
use crate::state::AppState;
use crate::validation::{ValidPath, ValidQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_api_keys)).routes(routes!(revoke_api_key)).routes(routes!(all_usage))
}

/// Everyone's (or one user's) generations and tokens in a period, also per user.
#[utoipa::path(
    get, path = "/admin/usage", tag = "admin",
    params(("from" = Option<String>, Query, format = Date, description = "First day (YYYY-MM-DD, UTC); default: 29 days before `to`"),
           ("to" = Option<String>, Query, format = Date, description = "Last day (YYYY-MM-DD, UTC); default: today"),
           ("user_id" = Option<Uuid>, Query, description = "Only this user")),
    responses((status = 200, body = UsageReport), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn all_usage(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidQuery(query): ValidQuery<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    Ok(Json(usage::report(&state.store, &query, query.user_id, true).await?))
}

/// Every live API key, or one user's (`?user_id=`), newest first.
#[utoipa::path(
    get, path = "/admin/api-keys", tag = "admin", params(("user_id" = Option<Uuid>, Query, description = "Only this user's keys")),
    responses((status = 200, body = Vec<ApiKeyResponse>), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn list_api_keys(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidQuery(query): ValidQuery<AdminKeyQuery>,
) -> ApiResult<Json<Vec<ApiKeyResponse>>> {
    let keys = api_keys::list(&state.store, query.user_id).await?;
    Ok(Json(keys.into_iter().map(ApiKeyResponse::from).collect()))
}

/// Revokes anyone's key.
#[utoipa::path(
    delete, path = "/admin/api-keys/{key_id}", tag = "admin", params(("key_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "No such live key", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn revoke_api_key(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<KeyPath>,
) -> ApiResult<StatusCode> {
    api_keys::revoke(&state.store, None, path.key_id).await?;
    tracing::info!(key_id = %path.key_id, admin_id = %admin.id, "API key revoked by an admin");
    Ok(StatusCode::NO_CONTENT)
}
