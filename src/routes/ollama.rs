//! `/ollama/*`: models (list, show, pull, delete) and the SPA's chat call.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RouteRules;
use crate::auth::{AdminUser, CurrentUser};
use crate::error::{ApiError, ApiResult};
use crate::guards::rate_limit::ClientAddress;
use crate::ollama::OllamaError;
use crate::schemas::chats::{ModelName, OllamaChatRequest};
use crate::schemas::Message;
use crate::services::audit::ActionContext;
use crate::services::generation::{EndStatus, Ending, Generation, GenerationEvent};
use crate::services::{chats, models, ServiceError};
use crate::state::AppState;
use crate::validation::ValidJson;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(version))
        .routes(routes!(tags))
        .routes(routes!(show))
        .routes(routes!(pull).without_time_limit())
        .routes(routes!(delete_model))
        .routes(routes!(clear_cache))
        .routes(routes!(chat).without_time_limit())
}

#[utoipa::path(
    get, path = "/ollama/version", tag = "ollama", responses((status = 200, description = "Ollama's version", body = Object), (status = 502, description = "Ollama is unreachable or failed", body = crate::openapi::ErrorDetail), (status = 504, description = "Ollama did not answer in time", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn version(State(state): State<AppState>, CurrentUser(_user): CurrentUser) -> ApiResult<Json<Value>> {
    Ok(Json(state.upstreams.version().await?))
}

#[utoipa::path(
    get, path = "/ollama/tags", tag = "ollama", responses((status = 200, description = "The models of every reachable provider with their capabilities and `provider` (from memory)", body = Object), (status = 502, description = "Ollama is unreachable or failed", body = crate::openapi::ErrorDetail), (status = 504, description = "Ollama did not answer in time", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn tags(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Json<Value>> {
    let tags = state.upstreams.tags()?;
    Ok(Json(state.admission.models.visible_tags(&user, &tags).await?))
}

#[utoipa::path(
    post, path = "/ollama/show", tag = "ollama", request_body = ModelName, responses((status = 200, body = Object), (status = 404, description = "Unknown model", body = crate::openapi::ErrorDetail), (status = 400, description = "Ollama refused the request, or Inactive user", body = crate::openapi::ErrorDetail), (status = 502, description = "Ollama is unreachable or failed", body = crate::openapi::ErrorDetail), (status = 504, description = "Ollama did not answer in time", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    CurrentUser(_user): CurrentUser,
    ValidJson(request): ValidJson<ModelName>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.upstreams.show(&request.model).await?))
}

/// A pull that ends in an error line is a failure (the original answered 200).
fn pull_error(err: OllamaError) -> ApiError {
    match &err {
        OllamaError::Upstream { message, .. } if message.contains("file does not exist") => {
            ApiError::Upstream { status: StatusCode::NOT_FOUND, detail: message.clone() }
        }
        _ => err.into(),
    }
}

/// Without `stream`: waits for the pull and answers Ollama's progress lines as one string (as
/// the original). With `"stream": true`: passes the NDJSON progress through as it arrives.
#[utoipa::path(
    post, path = "/ollama/pull", tag = "ollama", request_body = ModelName,
    responses((status = 200, description = "Without `stream`: Ollama's progress lines as one string. With `stream: true`: NDJSON progress as it arrives", content((String = "application/json"), (String = "application/x-ndjson"))),
              (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail), (status = 404, description = "Unknown model", body = crate::openapi::ErrorDetail), (status = 400, description = "Ollama refused the request, or Inactive user", body = crate::openapi::ErrorDetail), (status = 502, description = "Ollama is unreachable or failed", body = crate::openapi::ErrorDetail), (status = 504, description = "Ollama did not answer in time", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn pull(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidJson(request): ValidJson<ModelName>,
) -> ApiResult<Response> {
    let context = ActionContext::user(admin.id, address);
    let provider = request.provider.as_deref();
    let (providers, progress) =
        models::pull(&state.store, &state.upstreams, &context, &request.model, provider).await.map_err(|err| match err {
            ServiceError::Upstream(err) => pull_error(err),
            err => err.into(),
        })?;
    if request.stream {
        let lines = progress.map(|(provider, line)| {
            let mut value = line.unwrap_or_else(|err| json!({ "error": err.to_string() }));
            value["provider"] = json!(&*provider);
            Ok::<_, std::convert::Infallible>(format!("{value}\n"))
        });
        return Ok(ndjson_response(Body::from_stream(lines)));
    }
    let mut text = String::new();
    futures_util::pin_mut!(progress);
    while let Some((provider, line)) = progress.next().await {
        let line = line.map_err(|err| match err {
            OllamaError::Upstream { status, message } if providers > 1 => {
                OllamaError::Upstream { status, message: format!("{provider}: {message}") }
            }
            err if providers > 1 => OllamaError::NoProvider(format!("{provider}: {err}")),
            err => err,
        });
        text.push_str(&line.map_err(pull_error)?.to_string());
        text.push('\n');
    }
    Ok(Json(Value::String(text)).into_response())
}

#[utoipa::path(
    delete, path = "/ollama/delete", tag = "ollama", request_body = ModelName,
    responses((status = 200, body = crate::schemas::Message), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail), (status = 404, description = "Unknown model", body = crate::openapi::ErrorDetail), (status = 400, description = "Ollama refused the request, or Inactive user", body = crate::openapi::ErrorDetail), (status = 502, description = "Ollama is unreachable or failed", body = crate::openapi::ErrorDetail), (status = 504, description = "Ollama did not answer in time", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn delete_model(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AdminUser(admin): AdminUser,
    ValidJson(request): ValidJson<ModelName>,
) -> ApiResult<Json<Message>> {
    let context = ActionContext::user(admin.id, address);
    models::delete(&state.store, &state.upstreams, &context, &request.model, request.provider.as_deref()).await?;
    Ok(Json(Message { message: "Model deleted successfully" }))
}

#[utoipa::path(
    post, path = "/ollama/cache/clear", tag = "ollama", responses((status = 200, body = crate::schemas::Message), (status = 403, description = "Not an admin user", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn clear_cache(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> Json<Message> {
    state.upstreams.refresh_all().await;
    Json(Message { message: "Model cache cleared successfully" })
}

/// The SPA's chat call. The answer is produced by a server-owned generation: a client that
/// gives up waiting does not cancel it, and it is stored either way.
#[utoipa::path(
    post, path = "/ollama/chat", tag = "ollama", request_body = OllamaChatRequest,
    responses((status = 200, description = "Ollama's answer plus `id` (the stored message) and `chat`; with `stream: true`, NDJSON chunks in Ollama's shape", content((Object = "application/json"), (String = "application/x-ndjson"))),
              (status = 400, description = "Ollama refused the request (e.g. thinking on a model without it), or Inactive user", body = crate::openapi::ErrorDetail),
              (status = 404, description = "Chat not found, or unknown model", body = crate::openapi::ErrorDetail),
              (status = 403, description = "`keep_alive` from a user who is not an admin (or a refused cross-site request)", body = crate::openapi::ErrorDetail),
              (status = 409, description = "A reply is already being generated for this chat", body = crate::openapi::ErrorDetail),
              (status = 429, description = "The user has `GENERATIONS_PER_USER` replies generating already (see the Retry-After header)", body = crate::openapi::ErrorDetail), (status = 502, description = "Ollama is unreachable or failed", body = crate::openapi::ErrorDetail), (status = 504, description = "Ollama did not answer in time", body = crate::openapi::ErrorDetail)), security(("access_token" = []), ("bearer" = []))
)]
pub(crate) async fn chat(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ValidJson(request): ValidJson<OllamaChatRequest>,
) -> ApiResult<Response> {
    let stream = request.stream;
    let generation = chats::start_ollama_chat(&state.store, &state.generations, &state.admission, &user, request).await?;
    let mut watcher = generation.watch();
    if !stream {
        let ending = watcher.ending().await;
        return answer_as_one_object(&generation, &ending);
    }
    // Like Ollama, hold the status line until the first chunk, so a refusal is a real error.
    let first = watcher.next().await;
    if let Some(GenerationEvent::End(ending)) = &first {
        if !ending.produced_anything && ending.status == EndStatus::Failed {
            return Err(failure(ending));
        }
    }
    let lines = stream::unfold((first, Some(watcher)), move |(pending, watcher)| {
        let generation = generation.clone();
        async move {
            let mut watcher = watcher?;
            let event = match pending {
                Some(event) => event,
                None => watcher.next().await?,
            };
            let done = matches!(event, GenerationEvent::End(_));
            let line = ndjson_line(&generation, event);
            Some((line, (None, (!done).then_some(watcher))))
        }
    })
    .filter_map(|line| async move { line })
    .map(Ok::<_, std::convert::Infallible>);
    Ok(ndjson_response(Body::from_stream(lines)))
}

fn ndjson_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Chunks go out in Ollama's shape; the last line is Ollama's final chunk plus `id` and
/// `chat` (`done_reason: "length"` when the answer reached its maximum length), or
/// `{"error": ...}` after a failure.
fn ndjson_line(generation: &Generation, event: GenerationEvent) -> Option<String> {
    let value = match event {
        GenerationEvent::Delta(delta) => {
            let mut message = json!({ "role": "assistant", "content": delta.content });
            if !delta.thinking.is_empty() {
                message["thinking"] = json!(delta.thinking);
            }
            if !delta.tool_calls.is_empty() {
                message["tool_calls"] = json!(delta.tool_calls);
            }
            json!({ "model": generation.model, "created_at": now_rfc3339(), "message": message, "done": false })
        }
        GenerationEvent::End(ending) => match ending.status {
            EndStatus::Failed => json!({ "error": ending.error.as_ref().map(|e| e.to_string()) }),
            _ => final_object(generation, &ending, false),
        },
    };
    Some(format!("{value}\n"))
}

fn failure(ending: &Ending) -> ApiError {
    ending
        .error
        .clone()
        .map(ApiError::from)
        .unwrap_or_else(|| ApiError::internal(anyhow::anyhow!("generation failed without an error")))
}

fn answer_as_one_object(generation: &Generation, ending: &Ending) -> ApiResult<Response> {
    if ending.status == EndStatus::Failed {
        // The partial answer (if any) is stored; the client is told it failed.
        return Err(failure(ending));
    }
    Ok(Json(final_object(generation, ending, true)).into_response())
}

/// A timestamp as Ollama writes it (`2026-11-24T11:39:41.551961769Z`).
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Ollama's final answer object (joined message and counters) plus our `id` and `chat`.
fn final_object(generation: &Generation, ending: &Ending, with_message: bool) -> Value {
    let mut object = match &ending.final_chunk {
        Some(chunk) => serde_json::to_value(chunk).unwrap_or_default(),
        None => {
            let reason = if ending.status == EndStatus::Length { "length" } else { "stopped" };
            json!({ "model": generation.model, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": ""}, "done_reason": reason, "done": true })
        }
    };
    if let Some(message) = &ending.message {
        if with_message {
            let mut joined = json!({ "role": "assistant", "content": message.content });
            if let Some(thinking) = &message.thinking {
                joined["thinking"] = json!(thinking);
            }
            if let Some(calls) = &message.tool_calls {
                joined["tool_calls"] = calls.clone();
            }
            object["message"] = joined;
        }
    }
    object["id"] = json!(ending.message.as_ref().map(|m| m.id));
    object["chat"] = json!({ "id": generation.chat_id, "title": ending.chat_title });
    object
}
