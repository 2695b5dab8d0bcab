//! `/usage/me`: what the caller used.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::ApiResult;
use crate::schemas::usage::{UsageQuery, UsageReport};
use crate::services::usage;
use crate::state::AppState;
use crate::validation::ValidQuery;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(my_usage))
}

/// The caller's generations and tokens in a period (UTC days), in total, per day and per model.
#[utoipa::path(
    get, path = "/usage/me", tag = "usage",
    params(("from" = Option<String>, Query, format = Date, description = "First day (YYYY-MM-DD, UTC); default: 29 days before `to`"),
           ("to" = Option<String>, Query, format = Date, description = "Last day (YYYY-MM-DD, UTC); default: today")),
    responses((status = 200, body = UsageReport)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn my_usage(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidQuery(query): ValidQuery<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    Ok(Json(usage::report(&state.store, &query, Some(user.id), false).await?))
}
