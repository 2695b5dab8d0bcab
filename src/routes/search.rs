//! `/chats/search`, `/chats/export`, `/chats/{id}/export`, `/chats/import`: finding chats, and
//! moving them out of and into rovertchat.

use crate::guards::rate_limit::ClientAddress;
use crate::services::audit::ActionContext;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::TryStreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RouteRules;
use crate::auth::CurrentUser;
use crate::error::ApiResult;
use crate::schemas::search::{ChatExport, ExportFormat, ExportQuery, ImportReport, ImportUpload, SearchQuery, SearchResults};
use crate::services::{export, import, search};
use crate::state::AppState;
use crate::validation::{ChatPath, UploadedFile, ValidPath, ValidQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search_chats))
        .routes(routes!(export_chat))
        .routes(routes!(export_all_chats).without_time_limit())
        .routes(routes!(import_chats).without_time_limit())
}

#[utoipa::path(
    get, path = "/chats/search", tag = "chats", params(SearchQuery),
    responses((status = 200, description = "The caller's matching chat titles and messages, best first", body = SearchResults)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn search_chats(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidQuery(query): ValidQuery<SearchQuery>,
) -> ApiResult<Json<SearchResults>> {
    Ok(Json(search::search(&state.store, &user, &query).await?))
}

fn attachment(content_type: &'static str, file_name: &str, body: impl Into<Body>) -> Response {
    let mut response = body.into().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The name holds only ASCII letters, digits, '-' and '.' (see export::file_name).
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

#[utoipa::path(
    get, path = "/chats/{chat_id}/export", tag = "chats", params(("chat_id" = Uuid, Path), ExportQuery),
    responses(
        (status = 200, description = "The chat as a file (`Content-Disposition: attachment`): JSON in the shapes of `GET /chats/chat/{id}`, or Markdown",
         content((ChatExport = "application/json"), (String = "text/markdown"))),
        (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn export_chat(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
    ValidQuery(query): ValidQuery<ExportQuery>,
) -> ApiResult<Response> {
    let chat = export::chat(&state.store, &user, path.chat_id).await?;
    let title = chat.chat.title.as_deref();
    Ok(match query.format {
        ExportFormat::Json => {
            let body = serde_json::to_vec(&chat).map_err(crate::error::ApiError::internal)?;
            attachment("application/json", &export::file_name(title, "json"), body)
        }
        ExportFormat::Markdown => {
            attachment("text/markdown; charset=utf-8", &export::file_name(title, "md"), export::markdown(&chat))
        }
    })
}

#[utoipa::path(
    get, path = "/chats/export", tag = "chats",
    responses((status = 200, description = "Every chat of the caller as NDJSON, one chat per line in the shape of `GET /chats/{id}/export`, streamed",
               content_type = "application/x-ndjson", body = ChatExport)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn export_all_chats(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Response {
    let lines = export::all_chats(state.store.clone(), user.id).inspect_err(|err| {
        // The answer has started: it can only be cut short, which the client sees as an error.
        tracing::error!(error = format!("{err:#}"), "exporting chats failed midway");
    });
    attachment("application/x-ndjson", "rovertchat-chats.ndjson", Body::from_stream(lines))
}

#[utoipa::path(
    post, path = "/chats/import", tag = "chats",
    request_body(description = "The export file: as the form field `file`, or as the body itself. ChatGPT's `conversations.json`, \
        Open WebUI's chat export, or ours (NDJSON, a JSON list, or one chat). At most `MAX_BODY_BYTES` and 10,000 chats.",
        content((ImportUpload = "multipart/form-data"), (Vec<Object> = "application/json"), (String = "application/x-ndjson"))),
    responses(
        (status = 200, description = "What was imported; chats imported before are skipped, and a chat that could not be read or stored is listed in `failed`", body = ImportReport),
        (status = 413, description = "The file is larger than `MAX_BODY_BYTES`", body = crate::openapi::ErrorDetail)),
    security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn import_chats(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    CurrentUser(user): CurrentUser,
    file: UploadedFile,
) -> ApiResult<Json<ImportReport>> {
    let context = ActionContext::user(user.id, address);
    Ok(Json(import::import(&state.store, &context, &user, &file.bytes).await?))
}
