//! The OpenAI-compatible mode (`EmulatorConfig::openai`), as vLLM or llama.cpp's server offer
//! it: `GET /v1/models`, `POST /v1/chat/completions` (answered by the same
//! [`generation`](crate::generation) engine as `/api/chat`, so every knob applies) and
//! `GET /health`. Errors are `{"error": {"message", "type", "param", "code"}}`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::Knobs;
use crate::generation::{self, thinking_text, Answer, Flavor, Job, ToolCall, Work};
use crate::params::KeepAlive;
use crate::state::Shared;
use crate::text::word_count;
use crate::validate;
use crate::wire::{json_response, parse_body, ApiError};

pub(crate) const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
pub(crate) const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// What `owned_by` says for every model.
const OWNER: &str = "ollama-emulator";

/// An error in OpenAI's shape.
fn openai_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    json_response(status, &json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }))
}

/// An error of the engine or of validation, in OpenAI's shape (the type and code follow from
/// the status).
pub(crate) fn error_response(error: ApiError) -> Response {
    let (kind, code) = match error.status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    };
    openai_error(error.status, &error.message, kind, code)
}

pub(crate) async fn not_found(request: Request) -> Response {
    let message = format!("Invalid URL ({} {})", request.method(), request.uri().path());
    openai_error(StatusCode::NOT_FOUND, &message, "invalid_request_error", None)
}

pub(crate) async fn method_not_allowed(request: Request) -> Response {
    let message = format!("Method not allowed ({} {})", request.method(), request.uri().path());
    openai_error(StatusCode::METHOD_NOT_ALLOWED, &message, "invalid_request_error", None)
}

pub(crate) async fn health() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Refuses a request without `Authorization: Bearer <api_key>` when the emulator has a key
/// (`/health` stays open, as in vLLM).
pub(crate) async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(key) = shared.api_key.as_deref() else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let refusal = match given.map(|value| value.strip_prefix("Bearer ").unwrap_or("").trim()) {
        Some(token) if token == key => return next.run(request).await,
        None => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        Some(_) => "Incorrect API key provided.",
    };
    if shared.openai {
        let code = given.map(|_| "invalid_api_key");
        openai_error(StatusCode::UNAUTHORIZED, refusal, "invalid_request_error", code)
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response()
    }
}

/// `GET /v1/models`: the installed models.
pub(crate) async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let installed = shared.lock().installed.clone();
    let data: Vec<Value> = installed
        .iter()
        .map(|spec| {
            let created = chrono::DateTime::parse_from_rfc3339(&spec.modified_at).map_or(0, |t| t.timestamp());
            json!({ "id": spec.name, "object": "model", "created": created, "owned_by": OWNER })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

/// The fields of a chat completion request the emulator looks at (others are ignored).
#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    reasoning_effort: Option<String>,
    /// vLLM's and llama.cpp's way to turn thinking off: `{"enable_thinking": false}`.
    chat_template_kwargs: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Message {
    role: Option<String>,
    /// A string, or a list of parts (`{"type": "text", "text"}`, `{"type": "image_url", ...}`).
    content: Option<Value>,
}

impl Message {
    fn is(&self, role: &str) -> bool {
        self.role.as_deref() == Some(role)
    }

    /// The text of the message (text parts joined by new lines).
    fn text(&self) -> String {
        match &self.content {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => {
                let texts: Vec<&str> = parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect();
                texts.join("\n")
            }
            _ => String::new(),
        }
    }
}

pub(crate) async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match prepare(&shared, &body) {
        Ok((knobs, job)) => generation::serve(shared, knobs, job).await,
        Err(error) => error_response(error),
    }
}

/// Validates the request and turns it into the engine's job: the same answer `/api/chat`
/// gives (thinking, a tool call when tools are offered, then the reply).
fn prepare(shared: &Shared, body: &[u8]) -> Result<(Knobs, Job), ApiError> {
    let request: CompletionRequest = parse_body(body)?;
    let model = request.model.unwrap_or_default();
    if model.is_empty() {
        return Err(ApiError::bad_request("you must provide a model parameter"));
    }
    let spec = shared.installed(&model).ok_or_else(|| ApiError::not_found(format!("The model `{model}` does not exist.")))?;
    let messages = request.messages.unwrap_or_default();
    if messages.is_empty() {
        return Err(ApiError::bad_request("[] is too short - 'messages'"));
    }
    validate::capability(&spec, &model, "completion", "chat")?;
    let tools_off = request.tool_choice.as_ref().and_then(Value::as_str) == Some("none");
    let tools: Vec<Value> = request.tools.unwrap_or_default().into_iter().filter(|_| !tools_off).collect();
    if !tools.is_empty() {
        validate::capability(&spec, &model, "tools", "tools")?;
    }
    let thinking_off = matches!(request.reasoning_effort.as_deref(), Some("none" | "minimal"))
        || request.chat_template_kwargs.as_ref().and_then(|kwargs| kwargs.get("enable_thinking")) == Some(&Value::Bool(false));
    let num_predict = request.max_completion_tokens.or(request.max_tokens).filter(|n| *n > 0).map(|n| n as usize);
    let knobs = shared.knobs();

    let last_user = messages.iter().rev().find(|m| m.is("user")).map(Message::text).unwrap_or_default();
    let reply = knobs.reply.clone().unwrap_or_else(|| format!("Echo: {last_user}"));
    let thinking = thinking_text(&spec, thinking_off.then_some(false), &last_user);
    // After a tool result the model answers instead of calling the tool again.
    let answers_tool_result = messages.last().is_some_and(|m| m.is("tool"));
    let tool_call = tools.first().filter(|_| !answers_tool_result).map(|tool| ToolCall::for_tool(tool, &last_user));
    let prompt_words = messages.iter().map(|m| word_count(&m.text())).sum();
    let answer = Answer::compose(&reply, thinking.as_deref(), tool_call, prompt_words, &knobs, num_predict);
    let stream = request.stream.unwrap_or(false);
    let include_usage = stream && request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
    let job = Job {
        flavor: Flavor::OpenAi { include_usage },
        model,
        spec,
        stream,
        keep_alive: KeepAlive::Default,
        num_ctx: None,
        work: Work::Answer(answer),
    };
    Ok((knobs, job))
}
