//! `/health` (the process answers) and `/health/db` (the database answers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(health_db))
}

#[utoipa::path(
    get, path = "/health", tag = "health", responses((status = 200, description = "`{\"status\": \"healthy\"}`", body = Object))
)]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "healthy"}))
}

#[utoipa::path(
    get, path = "/health/db", tag = "health", responses((status = 200, description = "`db_status` reachable and `latency_ms`", body = Object), (status = 503, description = "`db_status` unreachable", body = Object))
)]
pub(crate) async fn health_db(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.ping().await {
        Ok(latency) => (StatusCode::OK, Json(json!({"db_status": "reachable", "latency_ms": latency.as_secs_f64() * 1000.0}))),
        Err(err) => {
            tracing::warn!(error = %err, "database health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"db_status": "unreachable", "detail": "Database unavailable"})))
        }
    }
}
