//! `/v1/*`: the OpenAI-compatible API, for OpenAI's SDKs and every tool that speaks it. Callers
//! authenticate with a personal API key (`KeyHolder`); every answer, errors included, is in
//! OpenAI's shapes (`OpenAiError`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, Path, Request, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use futures_util::{stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RouteRules;
use crate::auth::KeyHolder;
use crate::error::OpenAiError;
use crate::schemas::openai::{ChatCompletionRequest, EmbeddingsRequest, ModelList, ModelObject, OpenAiErrorBody};
use crate::services::generation::{Delta, EndStatus, Ending, Generation, GenerationEvent, GenerationWatcher, StopOnDrop};
use crate::services::openai;
use crate::state::AppState;
use crate::validation::{read_json, BodyLimits, BodySize};

pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(chat_completions).without_time_limit())
        .routes(routes!(embeddings).without_time_limit());
    // Model ids may contain `/`.
    super::route_catch_all(router, "/v1/models/{*model}", routes!(get_model))
}

/// A JSON body read with serde into `T`, refused in OpenAI's shape (400).
pub struct OpenAiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OpenAiJson<T>
where
    BodyLimits: FromRef<S>,
{
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = read_json(req, &BodyLimits::from_ref(state), BodySize::Message)
            .await?
            .ok_or_else(|| OpenAiError::invalid_request("The request needs a JSON body", None))?;
        serde_json::from_value(body).map(OpenAiJson).map_err(|err| OpenAiError::invalid_request(err.to_string(), None))
    }
}

/// The models the key may use.
#[utoipa::path(
    get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, description = "Missing, unknown, revoked or expired key, or its owner is deactivated", body = OpenAiErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn list_models(State(state): State<AppState>, holder: KeyHolder) -> Result<Json<ModelList>, OpenAiError> {
    let data = openai::models(&state.upstreams, &state.admission.models, &holder.user, &holder.key).await?;
    Ok(Json(ModelList { object: "list", data }))
}

/// One model the key may use (its id may contain `:` and `/`).
#[utoipa::path(
    get, path = "/v1/models/{model}", tag = "openai", params(("model" = String, Path, description = "The model's id, e.g. `llama3.2:1b`")),
    responses((status = 200, body = ModelObject), (status = 404, description = "No such model for this key", body = OpenAiErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn get_model(
    State(state): State<AppState>,
    holder: KeyHolder,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, OpenAiError> {
    let found = openai::model(&state.upstreams, &state.admission.models, &holder.user, &holder.key, &model).await?;
    found.map(Json).ok_or_else(|| OpenAiError::model_not_found(&model))
}

/// A chat completion, streamed (`stream: true`, server-sent events ending in `data: [DONE]`) or
/// whole. Nothing is stored in a chat; a client that leaves ends the answer.
#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequest,
    responses((status = 200, description = "A `chat.completion`, or `chat.completion.chunk` events", content((Object = "application/json"), (String = "text/event-stream"))),
              (status = 403, description = "The key may not use this model", body = OpenAiErrorBody),
              (status = 404, description = "Unknown model", body = OpenAiErrorBody),
              (status = 502, description = "The model server is unreachable or failed", body = OpenAiErrorBody),
              (status = 504, description = "The model server did not answer in time", body = OpenAiErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    holder: KeyHolder,
    OpenAiJson(request): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, OpenAiError> {
    let streamed = request.stream.unwrap_or(false);
    let include_usage = request.stream_options.as_ref().is_some_and(|options| options.include_usage);
    let generation = openai::start_chat(&state.generations, &state.admission, &holder.user, &holder.key, request).await?;
    let stop_when_gone = generation.stop_on_drop();
    let abandoned = crate::lifetime::abandoned().unwrap_or_default();
    let mut watcher = generation.watch();
    let completion = Completion::new(&generation);
    // Like OpenAI, hold the status line until the first token, so a refusal is a real error.
    let Some(first) = next_unless_abandoned(&mut watcher, &abandoned).await else {
        return Err(OpenAiError::invalid_request("The client went away", None));
    };
    if let GenerationEvent::End(ending) = &first {
        if ending.status == EndStatus::Failed && !ending.produced_anything {
            return Err(failure(ending));
        }
    }
    if streamed {
        return Ok(completion.stream(first, watcher, stop_when_gone, include_usage, state.config.heartbeat_interval));
    }
    let mut answer = Delta::default();
    let mut event = first;
    let ending = loop {
        match event {
            GenerationEvent::Delta(delta) => {
                answer.content.push_str(&delta.content);
                answer.thinking.push_str(&delta.thinking);
                answer.tool_calls.extend(delta.tool_calls);
            }
            GenerationEvent::End(ending) => break ending,
        }
        event = next_unless_abandoned(&mut watcher, &abandoned)
            .await
            .ok_or_else(|| OpenAiError::invalid_request("The client went away", None))?;
    };
    if ending.status == EndStatus::Failed || ending.status == EndStatus::Stopped {
        return Err(failure(&ending));
    }
    Ok(Json(completion.whole(&answer, &ending)).into_response())
}

async fn next_unless_abandoned(watcher: &mut GenerationWatcher, abandoned: &CancellationToken) -> Option<GenerationEvent> {
    tokio::select! {
        event = watcher.next() => event,
        _ = abandoned.cancelled() => None,
    }
}

fn failure(ending: &Ending) -> OpenAiError {
    match &ending.error {
        Some(err) => err.clone().into(),
        None => OpenAiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "The answer was stopped before it was complete"),
    }
}

/// What every object of one completion shares.
struct Completion {
    id: String,
    created: i64,
    model: String,
}

impl Completion {
    fn new(generation: &Generation) -> Self {
        Completion {
            id: format!("chatcmpl-{}", generation.id.simple()),
            created: chrono::Utc::now().timestamp(),
            model: generation.model.clone(),
        }
    }

    fn whole(&self, answer: &Delta, ending: &Ending) -> Value {
        let mut message = json!({
            "role": "assistant",
            "content": if answer.content.is_empty() && !answer.tool_calls.is_empty() { Value::Null } else { json!(answer.content) },
        });
        if !answer.thinking.is_empty() {
            message["reasoning_content"] = json!(answer.thinking);
        }
        if !answer.tool_calls.is_empty() {
            let calls: Vec<Value> =
                answer.tool_calls.iter().enumerate().map(|(i, call)| openai::openai_tool_call(call, i)).collect();
            message["tool_calls"] = json!(calls);
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(ending, !answer.tool_calls.is_empty()) }],
            "usage": usage(ending),
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        Event::default().data(chunk.to_string())
    }

    fn stream(
        self,
        first: GenerationEvent,
        watcher: GenerationWatcher,
        stop_when_gone: StopOnDrop,
        include_usage: bool,
        heartbeat: std::time::Duration,
    ) -> Response {
        let state = ChunkStream {
            completion: Arc::new(self),
            watcher,
            pending: Some(first),
            sent_role: false,
            tool_calls_sent: 0,
            include_usage,
            _stop_when_gone: stop_when_gone,
        };
        let events = stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let event = match state.pending.take() {
                Some(event) => event,
                None => state.watcher.next().await?,
            };
            let (events, more) = state.events(event);
            Some((events, more.then_some(state)))
        })
        .flat_map(stream::iter)
        .map(Ok::<_, Infallible>);
        let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat)).into_response();
        let headers = response.headers_mut();
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        response
    }
}

/// A streamed completion; dropping it (the client left) stops the generation.
struct ChunkStream {
    completion: Arc<Completion>,
    watcher: GenerationWatcher,
    pending: Option<GenerationEvent>,
    sent_role: bool,
    tool_calls_sent: usize,
    include_usage: bool,
    _stop_when_gone: StopOnDrop,
}

impl ChunkStream {
    /// The events for one generation event, and whether more follow.
    fn events(&mut self, event: GenerationEvent) -> (Vec<Event>, bool) {
        match event {
            GenerationEvent::Delta(delta) => {
                let mut deltas = Vec::new();
                if !delta.thinking.is_empty() {
                    deltas.push(json!({ "reasoning_content": delta.thinking }));
                }
                if !delta.content.is_empty() {
                    deltas.push(json!({ "content": delta.content }));
                }
                if !delta.tool_calls.is_empty() {
                    let calls: Vec<Value> = delta
                        .tool_calls
                        .iter()
                        .enumerate()
                        .map(|(i, call)| openai::openai_tool_call(call, self.tool_calls_sent + i))
                        .collect();
                    self.tool_calls_sent += calls.len();
                    deltas.push(json!({ "tool_calls": calls }));
                }
                let events = deltas.into_iter().map(|mut delta| {
                    if !self.sent_role {
                        self.sent_role = true;
                        delta["role"] = json!("assistant");
                    }
                    self.completion.chunk(delta, None)
                });
                (events.collect(), true)
            }
            GenerationEvent::End(ending) => {
                if matches!(ending.status, EndStatus::Failed | EndStatus::Stopped) {
                    return (vec![Event::default().data(failure(&ending).body().to_string())], false);
                }
                let mut events = vec![self.completion.chunk(json!({}), Some(finish_reason(&ending, self.tool_calls_sent > 0)))];
                if self.include_usage {
                    let completion = &self.completion;
                    let chunk = json!({
                        "id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                        "model": completion.model, "system_fingerprint": null, "choices": [], "usage": usage(&ending),
                    });
                    events.push(Event::default().data(chunk.to_string()));
                }
                events.push(Event::default().data("[DONE]"));
                (events, false)
            }
        }
    }
}

fn finish_reason(ending: &Ending, called_tools: bool) -> &'static str {
    match ending.status {
        EndStatus::Length => "length",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

fn usage(ending: &Ending) -> Value {
    let counters = ending.final_chunk.as_ref();
    let prompt = counters.and_then(|c| c.prompt_eval_count).unwrap_or(0);
    let completion = counters.and_then(|c| c.eval_count).unwrap_or(0);
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// Embeddings through Ollama's `/api/embed`; `encoding_format: "base64"` packs each vector as
/// little-endian float32.
#[utoipa::path(
    post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingsRequest,
    responses((status = 200, description = "`{\"object\": \"list\", \"data\": [{\"object\": \"embedding\", \"index\", \"embedding\"}], \"model\", \"usage\"}`", body = Object),
              (status = 403, description = "The key may not use this model", body = OpenAiErrorBody),
              (status = 404, description = "Unknown model", body = OpenAiErrorBody),
              (status = 502, description = "The model server is unreachable or failed", body = OpenAiErrorBody)),
    security(("api_key" = []))
)]
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    holder: KeyHolder,
    OpenAiJson(request): OpenAiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, OpenAiError> {
    let as_base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(OpenAiError::invalid_request("encoding_format must be float or base64", Some("encoding_format"))),
    };
    let embeddings = openai::embed(&state.upstreams, &state.admission.models, &holder.user, &holder.key, &request).await?;
    let data: Vec<Value> = embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if as_base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": { "prompt_tokens": embeddings.prompt_tokens, "total_tokens": embeddings.prompt_tokens },
    })))
}
