//! `/chats/*` (and the seed README's `/chat/conversations` aliases): conversations, messages,
//! streamed completions, stop and re-attach.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RouteRules;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult};
use crate::schemas::chats::{
    BulkDelete, BulkDeleted, ChatCreate, ChatListQuery, ChatListResponse, ChatResponse, ChatUpdate, ChatWithMessages,
    CompletionRequest, MessageCreate, MessageDeleted, MessageResponse, MessageUpdate, ModelCatalog, SuccessMessage,
};
use crate::services::chats;
use crate::services::generation::{Ending, Generation, GenerationEvent, GenerationWatcher};
use crate::state::AppState;
use crate::validation::{ChatPath, MessagePath, OptionalJson, ValidJson, ValidPath, ValidQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_chats, create_chat, delete_all_chats))
        .routes(routes!(model_catalog))
        .routes(routes!(get_chat, update_chat, delete_chat))
        .routes(routes!(add_message))
        .routes(routes!(delete_messages))
        .routes(routes!(get_message, edit_message, delete_message))
        .routes(routes!(completions).without_time_limit())
        .routes(routes!(stop))
        .routes(routes!(reattach).without_time_limit())
        // The seed README's routes, served by the same handlers.
        .routes(routes!(list_conversations, create_conversation))
        .routes(routes!(delete_conversation))
        .routes(routes!(get_conversation_messages, add_conversation_message))
}

#[utoipa::path(
    get, path = "/chats/my", tag = "chats", params(ChatListQuery), responses((status = 200, description = "Newest activity first", body = ChatListResponse)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn list_chats(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidQuery(query): ValidQuery<ChatListQuery>,
) -> ApiResult<Json<ChatListResponse>> {
    let page = chats::list(&state.store, &user, &query).await?;
    Ok(Json(ChatListResponse {
        total: page.total,
        chats: page.chats.into_iter().map(ChatResponse::from).collect(),
        skip: query.skip,
        limit: query.limit,
    }))
}

#[utoipa::path(
    post, path = "/chats/my", tag = "chats", request_body(content = Option<ChatCreate>, description = "Optional"), responses((status = 201, body = ChatResponse)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn create_chat(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    OptionalJson(request): OptionalJson<ChatCreate>,
) -> ApiResult<(StatusCode, Json<ChatResponse>)> {
    let chat = chats::create(&state.store, &user, request.unwrap_or_default()).await?;
    Ok((StatusCode::CREATED, Json(chat.into())))
}

#[utoipa::path(
    delete, path = "/chats/my", tag = "chats", responses((status = 200, description = "All of the user's chats and their messages are deleted", body = SuccessMessage)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn delete_all_chats(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<SuccessMessage>> {
    chats::delete_all(&state.store, &state.generations, &user).await?;
    Ok(Json(SuccessMessage { success: true, message: "All chats deleted".into() }))
}

#[utoipa::path(
    get, path = "/chats/models", tag = "chats", responses((status = 200, body = ModelCatalog)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn model_catalog(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<ModelCatalog>> {
    let mut models = state.store.active_models().await?;
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let mut usable = state.admission.models.usable(&user, &names).await?.into_iter();
    models.retain(|_| usable.next().unwrap_or(false));
    let providers = state.store.active_providers().await?;
    // Only admins see where the upstreams are.
    let hide_address = |mut provider: crate::schemas::chats::ProviderSummary| {
        if !user.is_admin() {
            provider.api_url = String::new();
        }
        provider
    };
    Ok(Json(ModelCatalog {
        models: models.into_iter().map(Into::into).collect(),
        providers: providers.into_iter().map(Into::into).map(hide_address).collect(),
    }))
}

#[utoipa::path(
    get, path = "/chats/chat/{chat_id}", tag = "chats", params(("chat_id" = Uuid, Path)), responses((status = 200, description = "The chat and its messages, oldest first", body = ChatWithMessages), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn get_chat(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
) -> ApiResult<Json<ChatWithMessages>> {
    let (chat, messages) = chats::with_messages(&state.store, &user, path.chat_id).await?;
    Ok(Json(ChatWithMessages { chat: chat.into(), messages: messages.into_iter().map(MessageResponse::from).collect() }))
}

#[utoipa::path(
    patch, path = "/chats/chat/{chat_id}", tag = "chats", params(("chat_id" = Uuid, Path)), request_body = ChatUpdate, responses((status = 200, body = ChatResponse), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn update_chat(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
    ValidJson(update): ValidJson<ChatUpdate>,
) -> ApiResult<Json<ChatResponse>> {
    Ok(Json(chats::update(&state.store, &user, path.chat_id, update).await?.into()))
}

#[utoipa::path(
    delete, path = "/chats/chat/{chat_id}", tag = "chats", params(("chat_id" = Uuid, Path)), responses((status = 200, description = "The chat and its messages are deleted; its generation is stopped", body = SuccessMessage), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn delete_chat(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
) -> ApiResult<Json<SuccessMessage>> {
    chats::delete(&state.store, &state.generations, &user, path.chat_id).await?;
    Ok(Json(SuccessMessage { success: true, message: "Chat and all messages deleted".into() }))
}

#[utoipa::path(
    post, path = "/chats/{chat_id}/messages", tag = "chats", params(("chat_id" = Uuid, Path)), request_body = MessageCreate, responses((status = 200, body = MessageResponse), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn add_message(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
    ValidJson(request): ValidJson<MessageCreate>,
) -> ApiResult<Json<MessageResponse>> {
    Ok(Json(chats::add_message(&state.store, &user, path.chat_id, request).await?.into()))
}

#[utoipa::path(
    get, path = "/chats/{chat_id}/messages/{message_id}", tag = "chats", params(("chat_id" = Uuid, Path), ("message_id" = Uuid, Path)), responses((status = 200, body = MessageResponse), (status = 404, description = "Chat not found, or Message not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn get_message(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<MessagePath>,
) -> ApiResult<Json<MessageResponse>> {
    Ok(Json(chats::message(&state.store, &user, path.chat_id, path.message_id).await?.into()))
}

#[utoipa::path(
    patch, path = "/chats/{chat_id}/messages/{message_id}", tag = "chats", params(("chat_id" = Uuid, Path), ("message_id" = Uuid, Path)), request_body = MessageUpdate,
    responses((status = 200, body = MessageResponse), (status = 403, description = "Only user messages can be edited (or a refused cross-site request)", body = crate::openapi::ErrorDetail), (status = 404, description = "Chat not found, or Message not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn edit_message(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<MessagePath>,
    ValidJson(update): ValidJson<MessageUpdate>,
) -> ApiResult<Json<MessageResponse>> {
    Ok(Json(chats::edit_message(&state.store, &user, path.chat_id, path.message_id, update).await?.into()))
}

#[utoipa::path(
    delete, path = "/chats/{chat_id}/messages/{message_id}", tag = "chats", params(("chat_id" = Uuid, Path), ("message_id" = Uuid, Path)), responses((status = 200, body = MessageDeleted), (status = 404, description = "Chat not found, or Message not found", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn delete_message(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<MessagePath>,
) -> ApiResult<Json<MessageDeleted>> {
    chats::delete_message(&state.store, &user, path.chat_id, path.message_id).await?;
    Ok(Json(MessageDeleted { success: true, message: "Message deleted successfully", deleted_message_id: path.message_id }))
}

#[utoipa::path(
    delete, path = "/chats/{chat_id}/messages/bulk", tag = "chats", params(("chat_id" = Uuid, Path)), request_body = BulkDelete, responses((status = 200, description = "Ids not in this chat are reported in failed_deletions", body = BulkDeleted), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn delete_messages(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
    ValidJson(request): ValidJson<BulkDelete>,
) -> ApiResult<Json<BulkDeleted>> {
    Ok(Json(chats::delete_messages(&state.store, &user, path.chat_id, request).await?))
}

// The seed README's conversation routes: the same handlers under other names.

#[utoipa::path(get, path = "/chat/conversations", tag = "chats", params(ChatListQuery), responses((status = 200, description = "Alias of GET /chats/my", body = ChatListResponse)), security(("access_token" = []), ("bearer" = [])))]
pub(crate) async fn list_conversations(
    state: State<AppState>,
    user: CurrentUser,
    query: ValidQuery<ChatListQuery>,
) -> ApiResult<Json<ChatListResponse>> {
    list_chats(state, user, query).await
}

#[utoipa::path(post, path = "/chat/conversations", tag = "chats", request_body(content = Option<ChatCreate>, description = "Optional"), responses((status = 201, description = "Alias of POST /chats/my", body = ChatResponse)), security(("access_token" = []), ("bearer" = [])))]
pub(crate) async fn create_conversation(
    state: State<AppState>,
    user: CurrentUser,
    request: OptionalJson<ChatCreate>,
) -> ApiResult<(StatusCode, Json<ChatResponse>)> {
    create_chat(state, user, request).await
}

#[utoipa::path(delete, path = "/chat/conversations/{chat_id}", tag = "chats", params(("chat_id" = Uuid, Path)), responses((status = 200, description = "Alias of DELETE /chats/chat/{chat_id}", body = SuccessMessage), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = [])))]
pub(crate) async fn delete_conversation(
    state: State<AppState>,
    user: CurrentUser,
    path: ValidPath<ChatPath>,
) -> ApiResult<Json<SuccessMessage>> {
    delete_chat(state, user, path).await
}

#[utoipa::path(get, path = "/chat/conversations/{chat_id}/messages", tag = "chats", params(("chat_id" = Uuid, Path)), responses((status = 200, description = "Alias of GET /chats/chat/{chat_id}", body = ChatWithMessages), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = [])))]
pub(crate) async fn get_conversation_messages(
    state: State<AppState>,
    user: CurrentUser,
    path: ValidPath<ChatPath>,
) -> ApiResult<Json<ChatWithMessages>> {
    get_chat(state, user, path).await
}

#[utoipa::path(post, path = "/chat/conversations/{chat_id}/messages", tag = "chats", params(("chat_id" = Uuid, Path)), request_body = MessageCreate, responses((status = 200, description = "Alias of POST /chats/{chat_id}/messages", body = MessageResponse), (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = [])))]
pub(crate) async fn add_conversation_message(
    state: State<AppState>,
    user: CurrentUser,
    path: ValidPath<ChatPath>,
    request: ValidJson<MessageCreate>,
) -> ApiResult<Json<MessageResponse>> {
    add_message(state, user, path, request).await
}

/// Stores the user message and streams the answer as server-sent events.
#[utoipa::path(
    post, path = "/chats/{chat_id}/completions", tag = "streaming", params(("chat_id" = Uuid, Path)), request_body = CompletionRequest,
    responses((status = 200, description = "Server-sent events: `start`, `delta` (`content` or `thinking`), `tool_calls`, then `done` (status `completed`, `stopped` or `length`) or `error` (`failed`, or `interrupted` when the replica generating it died)", content_type = "text/event-stream", body = crate::openapi::ServerSentEvent),
              (status = 403, description = "`keep_alive` from a user who is not an admin (or a refused cross-site request)", body = crate::openapi::ErrorDetail),
              (status = 404, description = "Chat not found (also for another user's chat)", body = crate::openapi::ErrorDetail), (status = 409, description = "A reply is already being generated for this chat", body = crate::openapi::ErrorDetail),
              (status = 429, description = "The user has `GENERATIONS_PER_USER` replies generating already (see the Retry-After header)", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn completions(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
    ValidJson(request): ValidJson<CompletionRequest>,
) -> ApiResult<Response> {
    let generation =
        chats::start_completion(&state.store, &state.generations, &state.admission, &user, path.chat_id, request).await?;
    Ok(event_stream(generation.watch(), state.config.heartbeat_interval))
}

/// Stops the chat's running generation; answers once its partial answer is stored.
#[utoipa::path(
    post, path = "/chats/{chat_id}/stop", tag = "streaming", params(("chat_id" = Uuid, Path)),
    responses((status = 200, description = "Stopped; the partial answer is stored (`status`, `message`, `chat`)", body = Object),
              (status = 404, description = "Chat not found, or no reply is being generated", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn stop(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
) -> ApiResult<Json<Value>> {
    chats::user_chat(&state.store, &user, path.chat_id).await?;
    let generation = state
        .generations
        .stop(user.id, path.chat_id)
        .await?
        .ok_or(ApiError::NotFound("No reply is being generated for this chat"))?;
    let ending = generation.watch().ending().await;
    Ok(Json(ending_payload(&generation, &ending)))
}

/// Re-attaches to a running generation: everything produced so far, then the rest.
#[utoipa::path(
    get, path = "/chats/{chat_id}/generation", tag = "streaming", params(("chat_id" = Uuid, Path)),
    responses((status = 200, description = "Server-sent events: everything produced so far, then the rest", content_type = "text/event-stream", body = crate::openapi::ServerSentEvent),
              (status = 404, description = "Chat not found, or no reply is being generated", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn reattach(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidPath(path): ValidPath<ChatPath>,
) -> ApiResult<Response> {
    chats::user_chat(&state.store, &user, path.chat_id).await?;
    let generation = state
        .generations
        .find_running(user.id, path.chat_id)
        .await?
        .ok_or(ApiError::NotFound("No reply is being generated for this chat"))?;
    Ok(event_stream(generation.watch(), state.config.heartbeat_interval))
}

/// `start`, then `delta` events (`{"content"}` or `{"thinking"}`), `tool_calls`, and finally
/// `done` (completed, stopped, or cut at its maximum length) or `error` (failed; the partial
/// answer is stored). A client that re-attaches gets what was produced so far as one delta.
/// Comments every `heartbeat` keep proxies and browsers from closing the stream while the
/// model loads.
fn event_stream(watcher: GenerationWatcher, heartbeat: Duration) -> Response {
    let generation = watcher.generation().clone();
    let start = Event::default().event("start").data(
        json!({
            "generation_id": generation.id,
            "chat_id": generation.chat_id,
            "user_message_id": generation.user_message_id,
            "model": generation.model,
        })
        .to_string(),
    );
    let events = stream::unfold(Some(watcher), |watcher| async move {
        let mut watcher = watcher?;
        let event = watcher.next().await?;
        let generation = watcher.generation().clone();
        Some((sse_events(&generation, event), Some(watcher)))
    })
    .flat_map(stream::iter);
    let all = stream::once(async move { start }).chain(events).map(Ok::<_, Infallible>);
    let mut response = Sse::new(all).keep_alive(KeepAlive::new().interval(heartbeat).text("keep-alive")).into_response();
    let headers = response.headers_mut();
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

fn sse_events(generation: &Generation, event: GenerationEvent) -> Vec<Event> {
    match event {
        GenerationEvent::Delta(delta) => {
            let mut events = Vec::new();
            if !delta.thinking.is_empty() {
                events.push(Event::default().event("delta").data(json!({ "thinking": delta.thinking }).to_string()));
            }
            if !delta.content.is_empty() {
                events.push(Event::default().event("delta").data(json!({ "content": delta.content }).to_string()));
            }
            if !delta.tool_calls.is_empty() {
                events.push(Event::default().event("tool_calls").data(json!({ "tool_calls": delta.tool_calls }).to_string()));
            }
            events
        }
        GenerationEvent::End(ending) => {
            let name = if ending.status.is_failure() { "error" } else { "done" };
            vec![Event::default().event(name).data(ending_payload(generation, &ending).to_string())]
        }
    }
}

/// How the end of a generation is reported: status, the stored answer and the chat's title.
pub fn ending_payload(generation: &Generation, ending: &Ending) -> Value {
    let mut payload = json!({
        "generation_id": generation.id,
        "status": ending.status.as_str(),
        "message": ending.message.clone().map(MessageResponse::from),
        "chat": { "id": generation.chat_id, "title": ending.chat_title },
    });
    if let Some(err) = &ending.error {
        payload["detail"] = json!(err.to_string());
    }
    payload
}
