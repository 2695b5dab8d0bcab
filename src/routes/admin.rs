//! `/admin/*`: the admin area. Every route here takes the `AdminUser` extractor; new admin
//! routes (providers, stats, ...) are listed in this `router()`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::error::ApiResult;
use crate::guards::rate_limit::ClientAddress;
use crate::schemas::admin::{AuditPage, AuditQuery};
use crate::schemas::api_keys::{AdminKeyQuery, ApiKeyResponse, KeyPath};
use crate::schemas::models::{ModelNamePath, ModelPolicyChange, ModelPolicyResponse, QuotaChange};
use crate::schemas::providers::{ProviderChangeRequest, ProviderCreate, ProviderPath, ProviderResponse};
use crate::schemas::usage::{UsageQuery, UsageReport};
use crate::services::audit::ActionContext;
use crate::services::model_access::PolicyUpdate;
use crate::services::providers::{ProviderDraft, ProviderUpdate};
use crate::services::quotas::QuotaDocument;
use crate::services::stats::Stats;
use crate::services::{api_keys, audit, providers, stats, usage};
use crate::state::AppState;
use crate::store::audit::AuditFilter;
use crate::validation::ValidJson;
use crate::validation::{ValidPath, ValidQuery};

pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(audit_log))
        .routes(routes!(overview))
        .routes(routes!(list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(all_usage))
        .routes(routes!(list_models))
        .routes(routes!(get_quotas, put_quotas))
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(update_provider, delete_provider));
    // Model names may contain `/`.
    super::route_catch_all(router, "/admin/models/{*name}", routes!(put_model))
}

/// Every model the upstream offers and every model with a policy, with its policy.
#[utoipa::path(
    get, path = "/admin/models", tag = "admin",
    responses((status = 200, body = Vec<ModelPolicyResponse>), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn list_models(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Vec<ModelPolicyResponse>>> {
    let policies = state.admission.models.all(&state.upstreams).await?;
    Ok(Json(policies.into_iter().map(Into::into).collect()))
}

/// Changes a model's policy (its name URL-encoded); fields left out keep their value.
#[utoipa::path(
    put, path = "/admin/models/{name}", tag = "admin", params(("name" = String, Path, description = "The model's name, URL-encoded")),
    request_body = ModelPolicyChange,
    responses((status = 200, body = ModelPolicyResponse), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 400, description = "A user id that no account has, or Inactive user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "Not found", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn put_model(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<ModelNamePath>,
    ValidJson(update): ValidJson<PolicyUpdate>,
) -> ApiResult<Json<ModelPolicyResponse>> {
    let context = ActionContext::user(admin.id, address);
    Ok(Json(state.admission.models.update(&context, &admin, &path.name, update).await?.into()))
}

/// The quotas: each role's limits (built-in ones for roles never set) and each user's own.
#[utoipa::path(
    get, path = "/admin/quotas", tag = "admin",
    responses((status = 200, body = QuotaDocument), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn get_quotas(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<QuotaDocument>> {
    Ok(Json((*state.admission.quotas.document().await?).clone()))
}

/// Replaces the quotas; a role left out gets its built-in limits. `null` is unlimited.
#[utoipa::path(
    put, path = "/admin/quotas", tag = "admin", request_body = QuotaDocument,
    responses((status = 200, body = QuotaDocument), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn put_quotas(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidJson(QuotaChange(document)): ValidJson<QuotaChange>,
) -> ApiResult<Json<QuotaDocument>> {
    let saved = state.admission.quotas.replace(&ActionContext::user(admin.id, address), &document).await?;
    tracing::info!(admin_id = %admin.id, "quotas changed");
    Ok(Json((*saved).clone()))
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

/// Accounts by role and state, chats, messages, answers and tokens today and in the last 30
/// days by model, the answers running on this instance, and the upstream's health.
#[utoipa::path(
    get, path = "/admin/stats", tag = "admin",
    responses((status = 200, body = Stats), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn overview(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Stats>> {
    Ok(Json(stats::stats(&state.store, state.generations.running_count(), state.upstreams.any_healthy()).await?))
}

/// The audit log, newest first.
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
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<KeyPath>,
) -> ApiResult<StatusCode> {
    api_keys::revoke(&state.store, &ActionContext::user(admin.id, address), None, path.key_id).await?;
    tracing::info!(key_id = %path.key_id, admin_id = %admin.id, "API key revoked by an admin");
    Ok(StatusCode::NO_CONTENT)
}

/// Every provider with its state here (models, health); never an API key.
#[utoipa::path(
    get, path = "/admin/providers", tag = "admin",
    responses((status = 200, body = Vec<ProviderResponse>), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn list_providers(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Vec<ProviderResponse>>> {
    let providers = providers::list(&state.store, &state.upstreams).await?;
    Ok(Json(providers.into_iter().map(Into::into).collect()))
}

/// Adds a provider; it is probed in the background (its `status` says so once it answered).
#[utoipa::path(
    post, path = "/admin/providers", tag = "admin", request_body = ProviderCreate,
    responses((status = 201, body = ProviderResponse), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 409, description = "A provider with this name already exists", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn create_provider(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidJson(draft): ValidJson<ProviderDraft>,
) -> ApiResult<(StatusCode, Json<ProviderResponse>)> {
    let context = ActionContext::user(admin.id, address);
    let created = providers::create(&state.store, &state.upstreams, &context, draft).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Changes a provider; fields left out keep their value, `null` clears `api_key` and `model_prefix`.
#[utoipa::path(
    put, path = "/admin/providers/{provider_id}", tag = "admin", params(("provider_id" = Uuid, Path)), request_body = ProviderChangeRequest,
    responses((status = 200, body = ProviderResponse), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "Provider not found", body = crate::openapi::ErrorDetail),
              (status = 409, description = "A provider with this name already exists", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn update_provider(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<ProviderPath>,
    ValidJson(update): ValidJson<ProviderUpdate>,
) -> ApiResult<Json<ProviderResponse>> {
    let context = ActionContext::user(admin.id, address);
    Ok(Json(providers::update(&state.store, &state.upstreams, &context, path.provider_id, update).await?.into()))
}

/// Removes a provider: no new answer goes to it.
#[utoipa::path(
    delete, path = "/admin/providers/{provider_id}", tag = "admin", params(("provider_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "Provider not found", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn delete_provider(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidPath(path): ValidPath<ProviderPath>,
) -> ApiResult<StatusCode> {
    providers::delete(&state.store, &state.upstreams, &ActionContext::user(admin.id, address), path.provider_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
