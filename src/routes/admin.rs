//! `/admin/*`: the admin area. Every route here takes the `AdminUser` extractor; new admin
//! routes (models, quotas, providers, keys, usage, stats) are listed in this `router()`.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::error::ApiResult;
use crate::schemas::admin::{AuditPage, AuditQuery};
use crate::services::audit;
use crate::state::AppState;
use crate::store::audit::AuditFilter;
use crate::validation::ValidQuery;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

#[utoipa::path(
    get, path = "/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "Audit events, newest first", body = AuditPage),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    _admin: AdminUser,
    ValidQuery(query): ValidQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let filter = AuditFilter::from(query);
    let (events, total) = audit::events(&state.store, &filter).await?;
    Ok(Json(AuditPage { total, events: events.into_iter().map(Into::into).collect(), skip: filter.skip, limit: filter.limit }))
}
