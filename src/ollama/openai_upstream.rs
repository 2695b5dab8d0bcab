//! Client of an OpenAI-compatible upstream (vLLM, llama.cpp's server, LM Studio, a hosted API):
//! `GET /models` and streamed `POST /chat/completions`, spoken in the engine's Ollama terms.
//! A [`ChatRequest`] goes out as OpenAI's request, and the server-sent events come back as
//! [`ChatChunk`]s shaped like Ollama's `/api/chat` stream, so `stream_answer` reads both alike.
//!
//! The configured base URL is what OpenAI's SDKs call `base_url`: `http://vllm:8000/v1`,
//! `https://api.openai.com/v1`. A URL without a path (`http://vllm:8000`) gets `/v1`; any other
//! path is used as given (e.g. `https://generativelanguage.googleapis.com/v1beta/openai`).
//!
//! What is translated:
//! - messages: images become `image_url` parts with `data:` URLs; an assistant's `tool_calls`
//!   get their arguments as JSON text and an id (theirs, or a made-up 9-character one); a
//!   `tool` message names the call it answers (`tool_call_id`, matched by `tool_name`);
//!   earlier `thinking` is not sent back.
//! - options: `temperature`, `top_p`, `seed`, `stop`, `presence_penalty`,
//!   `frequency_penalty`, and `num_predict` as `max_tokens`; Ollama-only options (`num_ctx`,
//!   `top_k`, ...) and `keep_alive` are left out, as strict servers refuse unknown fields.
//! - `format`: `"json"` becomes `response_format: {"type": "json_object"}`, a schema
//!   `{"type": "json_schema", "json_schema": {"name": "response", "schema"}}`.
//! - `think`: a level (`low`, `medium`, `high`; `max` as `high`) becomes `reasoning_effort`;
//!   `true`/`false` are not sent (no portable way to say them).
//! - A 400 naming an unsupported parameter (OpenAI's `unsupported_parameter` /
//!   `unsupported_value`, `Unrecognized request argument supplied`) is retried without it; a
//!   refused `max_tokens` is sent again as `max_completion_tokens` (OpenAI's reasoning models).
//!
//! And back: `delta.content` is `message.content`; `delta.reasoning_content` or
//! `delta.reasoning` is `message.thinking`; tool-call fragments are put together and sent as
//! one chunk with `message.tool_calls: [{"id", "function": {"name", "arguments": {...}}}]`
//! once complete (when the next call starts, or at `finish_reason`); arguments that are not
//! JSON stay a string. After `data: [DONE]` (or the end of the body after a `finish_reason`)
//! comes a `done: true` chunk: `done_reason` is `length` for `finish_reason: "length"` and
//! `stop` otherwise, `prompt_eval_count`/`eval_count` are the usage's `prompt_tokens` /
//! `completion_tokens` (without a usage, `eval_count` is the number of chunks that carried
//! text), `total_duration` and `eval_duration` are measured here.
//!
//! Like Ollama, [`OpenAiUpstream::chat`] returns only once the first piece of the answer (or
//! an error) is there, so a failure before the first token is an `Err`, never a stream that
//! fails at once. An upstream's 401/403 is reported as a 502 (the upstream's key is wrong, not
//! the user's request). Neither the URL nor the API key appears in any error or log line.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::types::{ChatChunk, ChatRequest, ChunkMessage, UpstreamMessage};
use super::{transport_error, without_credentials, OllamaError};
use crate::config::OllamaConfig;

/// How many times a request is sent again without a parameter the upstream refused.
const MAX_PARAMETER_RETRIES: usize = 4;

/// Parameters that may be left out (or renamed) when an upstream refuses them.
const OPTIONAL_PARAMETERS: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "stream_options",
    "response_format",
];

/// Ollama options that OpenAI's API has under the same name.
const SAME_NAME_OPTIONS: &[&str] = &["temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty"];

/// How long to wait for an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the first piece of an answer (a cold model may load first).
    pub first_byte: Duration,
    /// Longest silence between two chunks afterwards.
    pub idle: Duration,
}

impl From<&OllamaConfig> for Timeouts {
    fn from(config: &OllamaConfig) -> Self {
        Timeouts { connect: config.connect_timeout, first_byte: config.first_byte_timeout, idle: config.idle_timeout }
    }
}

/// An OpenAI-compatible server. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct OpenAiUpstream {
    http: reqwest::Client,
    /// Where `/models` and `/chat/completions` are, without a trailing slash.
    api_base: String,
    /// `api_base` without any user or password in it: what the log names.
    logged_address: String,
    api_key: Option<String>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for OpenAiUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiUpstream")
            .field("address", &self.logged_address)
            .field("has_api_key", &self.api_key.is_some())
            .finish_non_exhaustive()
    }
}

/// A refusal before the answer began, and the parameter it names when it refuses one.
struct Refusal {
    error: OllamaError,
    unsupported_parameter: Option<String>,
}

impl From<OllamaError> for Refusal {
    fn from(error: OllamaError) -> Self {
        Refusal { error, unsupported_parameter: None }
    }
}

impl OpenAiUpstream {
    /// `base_url` as OpenAI's SDKs take it (see the module's documentation); `api_key` is sent
    /// as `Authorization: Bearer <api_key>`.
    pub fn new(base_url: &str, api_key: Option<String>, timeouts: Timeouts) -> anyhow::Result<Self> {
        let http =
            reqwest::Client::builder().connect_timeout(timeouts.connect).pool_idle_timeout(Duration::from_secs(30)).build()?;
        let api_base = api_base(base_url);
        Ok(Self {
            http,
            logged_address: without_credentials(&api_base),
            api_base,
            api_key: api_key.filter(|key| !key.is_empty()),
            timeouts,
        })
    }

    /// The upstream's address as the log names it (without credentials), `/v1` included.
    pub fn address(&self) -> &str {
        &self.logged_address
    }

    /// The ids of the models it serves (`GET /models`).
    pub async fn models(&self) -> Result<Vec<String>, OllamaError> {
        let response = tokio::time::timeout(self.timeouts.first_byte, self.send(Method::GET, "/models", None))
            .await
            .map_err(|_| OllamaError::Timeout(self.timeouts.first_byte))?
            .map_err(|refusal| refusal.error)?;
        let text = tokio::time::timeout(self.timeouts.idle, response.text())
            .await
            .map_err(|_| OllamaError::Timeout(self.timeouts.idle))?
            .map_err(|e| OllamaError::Disconnected(e.without_url().to_string()))?;
        let listed: Value = serde_json::from_str(&text).map_err(|e| OllamaError::Protocol(format!("invalid JSON: {e}")))?;
        let data = listed
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| OllamaError::Protocol("no data in the model list".into()))?;
        Ok(data.iter().filter_map(|model| model.get("id").and_then(Value::as_str)).map(str::to_owned).collect())
    }

    /// Starts a streamed chat completion and waits for the first piece of the answer; yields
    /// Ollama-shaped chunks, the last one `done: true`. Dropping the stream drops the request
    /// (the upstream sees the client leave).
    pub async fn chat(
        &self,
        request: &ChatRequest,
    ) -> Result<impl Stream<Item = Result<ChatChunk, OllamaError>> + Send + 'static, OllamaError> {
        let mut body = request_body(request);
        let mut retries = 0;
        loop {
            let started = tokio::time::timeout(self.timeouts.first_byte, self.start(&request.model, &body))
                .await
                .map_err(|_| OllamaError::Timeout(self.timeouts.first_byte))?;
            match started {
                Ok(stream) => return Ok(stream),
                Err(Refusal { unsupported_parameter: Some(parameter), error })
                    if retries < MAX_PARAMETER_RETRIES && leave_out(&mut body, &parameter) =>
                {
                    retries += 1;
                    tracing::info!(address = %self.logged_address, parameter, %error, "the upstream refused a parameter; sending the request without it");
                }
                Err(refusal) => return Err(refusal.error),
            }
        }
    }

    /// Sends the request and reads up to the first chunk, which is put back in front.
    async fn start(
        &self,
        model: &str,
        body: &Map<String, Value>,
    ) -> Result<impl Stream<Item = Result<ChatChunk, OllamaError>> + Send + 'static, Refusal> {
        let sent = Instant::now();
        let response = self.send(Method::POST, "/chat/completions", Some(body)).await?;
        let mut chunks = ChunkStream::new(response, model.to_owned(), sent, self.timeouts);
        let first = match chunks.next().await {
            Some(Ok(first)) => first,
            Some(Err(error)) => return Err(error.into()),
            None => return Err(OllamaError::Disconnected("the answer ended before it began".into()).into()),
        };
        let rest = futures_util::stream::unfold(chunks, |mut chunks| async move { Some((chunks.next().await?, chunks)) });
        Ok(futures_util::stream::iter([Ok(first)]).chain(rest))
    }

    /// Sends a request and waits for the status line; an error status becomes a [`Refusal`].
    async fn send(&self, method: Method, path: &str, body: Option<&Map<String, Value>>) -> Result<reqwest::Response, Refusal> {
        let mut request = self.http.request(method, format!("{}{path}", self.api_base));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| transport_error(&self.logged_address, err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(self.refusal(status, &text))
    }

    fn refusal(&self, status: StatusCode, text: &str) -> Refusal {
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            // Its message may quote part of the key: neither answered nor logged.
            let message = format!("The upstream refused its API key ({status})");
            return Refusal {
                error: OllamaError::Upstream { status: StatusCode::BAD_GATEWAY, message },
                unsupported_parameter: None,
            };
        }
        let body = serde_json::from_str::<Value>(text).ok();
        let message = body.as_ref().and_then(error_message).map(|message| self.scrubbed(&message)).unwrap_or_else(|| {
            // Not an API error (a proxy's page, say): it may name hosts, so it goes to the log
            // and the answer says only the status.
            if !text.trim().is_empty() {
                tracing::warn!(%status, address = %self.logged_address, body = %self.scrubbed(text.trim()), "the upstream answered an error that is not its own");
            }
            format!("The upstream answered {status}")
        });
        let unsupported_parameter =
            if status == StatusCode::BAD_REQUEST { body.as_ref().and_then(unsupported_parameter) } else { None };
        Refusal { error: OllamaError::Upstream { status, message }, unsupported_parameter }
    }

    /// `text` with the API key taken out.
    fn scrubbed(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.as_str(), "***"),
            None => text.to_owned(),
        }
    }
}

/// Where the API is: `base_url` itself, or `base_url/v1` when it has no path.
fn api_base(base_url: &str) -> String {
    let trimmed = base_url.trim().trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(url) if url.path().trim_end_matches('/').is_empty() && url.query().is_none() => format!("{trimmed}/v1"),
        _ => trimmed.to_owned(),
    }
}

/// The message of an error body: OpenAI's `{"error": {"message"}}`, `{"error": "..."}`, vLLM's
/// older `{"message"}`, or FastAPI's `{"detail"}`.
fn error_message(body: &Value) -> Option<String> {
    let error = body.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .or(error.filter(|e| e.is_string()))
        .or_else(|| body.get("message"))
        .or_else(|| body.get("detail"))?;
    Some(message.as_str().map_or_else(|| message.to_string(), str::to_owned))
}

/// The parameter a 400 refuses, if it refuses one.
fn unsupported_parameter(body: &Value) -> Option<String> {
    let error = body.get("error").unwrap_or(body);
    let code = error.get("code").and_then(Value::as_str);
    if matches!(code, Some("unsupported_parameter" | "unsupported_value")) {
        if let Some(param) = error.get("param").and_then(Value::as_str) {
            return Some(param.to_owned());
        }
    }
    let message = error_message(body)?;
    ["Unsupported parameter: '", "Unsupported value: '", "Unrecognized request argument supplied: "].iter().find_map(|prefix| {
        let rest = message.split_once(prefix)?.1;
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        (!name.is_empty()).then_some(name)
    })
}

/// Takes a refused parameter out of the request (a refused `max_tokens` becomes
/// `max_completion_tokens`); false when there is nothing to take out.
fn leave_out(body: &mut Map<String, Value>, parameter: &str) -> bool {
    if !OPTIONAL_PARAMETERS.contains(&parameter) {
        return false;
    }
    match body.remove(parameter) {
        Some(limit) if parameter == "max_tokens" => {
            body.insert("max_completion_tokens".into(), limit);
            true
        }
        Some(_) => true,
        None => false,
    }
}

/// Our request in OpenAI's terms, streamed with usage.
fn request_body(request: &ChatRequest) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert("messages".into(), Value::Array(messages(&request.messages)));
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({ "include_usage": true }));
    if let Some(options) = request.options.as_ref().and_then(Value::as_object) {
        for name in SAME_NAME_OPTIONS {
            if let Some(value) = options.get(*name).filter(|v| !v.is_null()) {
                body.insert((*name).into(), value.clone());
            }
        }
        if let Some(limit) = options.get("num_predict").and_then(Value::as_i64).filter(|n| *n > 0) {
            body.insert("max_tokens".into(), json!(limit));
        }
    }
    match &request.format {
        Some(Value::String(format)) if format == "json" => {
            body.insert("response_format".into(), json!({ "type": "json_object" }));
        }
        Some(schema @ Value::Object(_)) => {
            body.insert(
                "response_format".into(),
                json!({ "type": "json_schema", "json_schema": { "name": "response", "schema": schema } }),
            );
        }
        _ => {}
    }
    if let Some(tools) = request.tools.as_ref().filter(|tools| !tools.is_empty()) {
        body.insert("tools".into(), json!(tools));
    }
    let effort = match request.think.as_ref().and_then(Value::as_str) {
        Some(level @ ("low" | "medium" | "high")) => Some(level),
        Some("max") => Some("high"),
        _ => None,
    };
    if let Some(effort) = effort {
        body.insert("reasoning_effort".into(), json!(effort));
    }
    body
}

/// The conversation in OpenAI's shape.
fn messages(messages: &[UpstreamMessage]) -> Vec<Value> {
    // Calls of the last assistant message not answered yet: (function name, id).
    let mut open_calls: Vec<(String, String)> = Vec::new();
    messages
        .iter()
        .enumerate()
        .map(|(position, message)| {
            let mut out = json!({ "role": message.role, "content": content(message) });
            let calls = message.tool_calls.as_ref().and_then(Value::as_array).filter(|calls| !calls.is_empty());
            if let (Some(calls), "assistant") = (calls, message.role.as_str()) {
                open_calls.clear();
                let calls: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(index, call)| {
                        let (name, id, arguments) = outgoing_call(call, position, index);
                        open_calls.push((name.clone(), id.clone()));
                        json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } })
                    })
                    .collect();
                out["tool_calls"] = json!(calls);
                if message.content.is_empty() {
                    out["content"] = Value::Null;
                }
            }
            if message.role == "tool" && !open_calls.is_empty() {
                let answered = message
                    .tool_name
                    .as_ref()
                    .and_then(|name| open_calls.iter().position(|(called, _)| called == name))
                    .unwrap_or(0);
                out["tool_call_id"] = json!(open_calls.remove(answered).1);
            }
            out
        })
        .collect()
}

/// A message's text, or text and images as parts.
fn content(message: &UpstreamMessage) -> Value {
    let images = message.images.as_deref().unwrap_or_default();
    if images.is_empty() {
        return json!(message.content);
    }
    let text = (!message.content.is_empty()).then(|| json!({ "type": "text", "text": message.content }));
    let pictures = images.iter().map(|image| json!({ "type": "image_url", "image_url": { "url": data_url(image) } }));
    Value::Array(text.into_iter().chain(pictures).collect())
}

/// An image (base64, as Ollama takes them) as a `data:` URL, its type told by its first bytes.
fn data_url(image: &str) -> String {
    if image.starts_with("data:") {
        return image.to_owned();
    }
    let media_type = match image.get(..6).unwrap_or(image) {
        start if start.starts_with("/9j/") => "image/jpeg",
        start if start.starts_with("R0lGOD") => "image/gif",
        start if start.starts_with("UklGR") => "image/webp",
        _ => "image/png",
    };
    format!("data:{media_type};base64,{image}")
}

/// An earlier call of the assistant as OpenAI takes it: name, id, arguments as JSON text.
fn outgoing_call(call: &Value, position: usize, index: usize) -> (String, String, String) {
    let function = call.get("function").unwrap_or(&Value::Null);
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    // Some servers (Mistral's) take only 9 letters and digits.
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("c{:04}{:04}", position % 10_000, index % 10_000), str::to_owned);
    let arguments = match function.get("arguments") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => "{}".to_owned(),
        Some(other) => other.to_string(),
    };
    (name, id, arguments)
}

/// One server-sent event's meaning.
#[derive(Debug, PartialEq)]
enum Event {
    Data(String),
    /// `event: error`.
    Error(String),
    Done,
}

/// Splits a body into server-sent events.
#[derive(Default)]
struct EventDecoder {
    buffer: BytesMut,
    data: Vec<String>,
    kind: Option<String>,
}

impl EventDecoder {
    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event in the buffer.
    fn next_event(&mut self) -> Option<Event> {
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(end + 1);
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if let Some(event) = self.line(line) {
                return Some(event);
            }
        }
        None
    }

    /// The event left when the body ends without its blank line.
    fn finish(&mut self) -> Option<Event> {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
        for line in rest.lines() {
            if let Some(event) = self.line(line) {
                return Some(event);
            }
        }
        self.line("")
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let kind = self.kind.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(match (kind.as_deref(), data.trim()) {
                (_, "[DONE]") => Event::Done,
                (Some("error"), _) => Event::Error(data),
                _ => Event::Data(data),
            });
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.kind = Some(value.to_owned()),
            // Comments (`: ping`), `id`, `retry`.
            _ => {}
        }
        None
    }
}

/// A tool call whose fragments are still coming.
#[derive(Debug)]
struct PartialCall {
    index: u64,
    id: Option<String>,
    name: String,
    arguments: String,
}

impl PartialCall {
    /// Whether a fragment without an index belongs to this call: another id or another name
    /// begins a new call.
    fn continued_by(&self, id: Option<&str>, name: Option<&str>) -> bool {
        match (id, name) {
            (Some(id), _) => self.id.as_deref() == Some(id),
            (None, Some(name)) => name == self.name,
            (None, None) => true,
        }
    }

    /// The call in Ollama's shape.
    fn complete(self) -> Result<Value, OllamaError> {
        if self.name.is_empty() {
            return Err(OllamaError::Protocol("a tool call without a function name".into()));
        }
        let arguments = if self.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&self.arguments).unwrap_or(Value::String(self.arguments))
        };
        let mut call = json!({ "function": { "name": self.name, "arguments": arguments } });
        if let Some(id) = self.id {
            call["id"] = json!(id);
        }
        Ok(call)
    }
}

/// Turns chunk objects into Ollama's chunks.
struct Translator {
    model: String,
    sent: Instant,
    first_piece: Option<Instant>,
    calls: Vec<PartialCall>,
    /// Indexes of calls already sent on.
    closed: Vec<u64>,
    finish_reason: Option<String>,
    usage: Option<(Option<u64>, Option<u64>)>,
    pieces: u64,
}

impl Translator {
    fn new(model: String, sent: Instant) -> Self {
        Translator {
            model,
            sent,
            first_piece: None,
            calls: Vec::new(),
            closed: Vec::new(),
            finish_reason: None,
            usage: None,
            pieces: 0,
        }
    }

    fn chunk(&self, message: ChunkMessage) -> ChatChunk {
        ChatChunk { model: self.model.clone(), created_at: now(), message, ..ChatChunk::default() }
    }

    /// The chunks one event's object gives.
    fn object(&mut self, object: &Value) -> Result<Vec<ChatChunk>, OllamaError> {
        if object.get("error").is_some_and(|e| !e.is_null()) || object.get("object").and_then(Value::as_str) == Some("error") {
            let message = error_message(object).unwrap_or_else(|| "The upstream failed".into());
            return Err(OllamaError::Upstream { status: StatusCode::BAD_GATEWAY, message });
        }
        if let Some(usage) = object.get("usage").filter(|usage| usage.is_object()) {
            let count = |name: &str| usage.get(name).and_then(Value::as_u64);
            self.usage = Some((count("prompt_tokens"), count("completion_tokens")));
        }
        let choices = object.get("choices").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let Some(choice) = choices.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) else {
            return Ok(Vec::new());
        };
        let delta = choice.get("delta").or_else(|| choice.get("message")).unwrap_or(&Value::Null);
        let mut chunks = Vec::new();
        let calls = delta.get("tool_calls").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for call in calls {
            if let Some(done) = self.call_fragment(call)? {
                chunks.push(done);
            }
        }
        let text = |name: &str| delta.get(name).and_then(Value::as_str).filter(|t| !t.is_empty());
        let content = text("content");
        let thinking = text("reasoning_content").or_else(|| text("reasoning"));
        if content.is_some() || thinking.is_some() {
            self.pieces += 1;
            self.first_piece.get_or_insert_with(Instant::now);
            let message = ChunkMessage {
                content: content.unwrap_or_default().to_owned(),
                thinking: thinking.map(str::to_owned),
                ..ChunkMessage::default()
            };
            chunks.push(self.chunk(message));
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
            chunks.extend(self.close_calls(u64::MAX)?);
        }
        Ok(chunks)
    }

    /// Adds one fragment of a call; a call with a new index completes the earlier ones.
    fn call_fragment(&mut self, call: &Value) -> Result<Option<ChatChunk>, OllamaError> {
        let function = call.get("function").unwrap_or(&Value::Null);
        let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let name = function.get("name").and_then(Value::as_str).filter(|name| !name.is_empty());
        let index = match call.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            None => match self.calls.last() {
                Some(last) if last.continued_by(id, name) => last.index,
                _ => (self.closed.len() + self.calls.len()) as u64,
            },
        };
        if self.closed.contains(&index) {
            return Err(OllamaError::Protocol("a tool call went on after the next one began".into()));
        }
        let completed = if self.calls.iter().any(|c| c.index == index) { None } else { self.close_calls(index)? };
        let position = match self.calls.iter().position(|c| c.index == index) {
            Some(position) => position,
            None => {
                self.calls.push(PartialCall { index, id: None, name: String::new(), arguments: String::new() });
                self.first_piece.get_or_insert_with(Instant::now);
                self.calls.len() - 1
            }
        };
        let partial = &mut self.calls[position];
        if let Some(id) = id {
            partial.id = Some(id.to_owned());
        }
        // A name comes once, or again whole in every fragment, or (rarely) in pieces.
        if let Some(name) = name.filter(|name| *name != partial.name) {
            partial.name.push_str(name);
        }
        match function.get("arguments") {
            Some(Value::String(fragment)) => partial.arguments.push_str(fragment),
            Some(Value::Null) | None => {}
            Some(object) => partial.arguments.push_str(&object.to_string()),
        }
        Ok(completed)
    }

    /// Sends on the calls with an index below `below`, in one chunk.
    fn close_calls(&mut self, below: u64) -> Result<Option<ChatChunk>, OllamaError> {
        let (done, open): (Vec<PartialCall>, Vec<PartialCall>) =
            std::mem::take(&mut self.calls).into_iter().partition(|c| c.index < below);
        self.calls = open;
        if done.is_empty() {
            return Ok(None);
        }
        self.closed.extend(done.iter().map(|c| c.index));
        self.pieces += 1;
        let calls = done.into_iter().map(PartialCall::complete).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(self.chunk(ChunkMessage { tool_calls: Some(calls), ..ChunkMessage::default() })))
    }

    /// The calls still open, then the final `done` chunk.
    fn finish(&mut self) -> Result<Vec<ChatChunk>, OllamaError> {
        let mut chunks: Vec<ChatChunk> = self.close_calls(u64::MAX)?.into_iter().collect();
        let (prompt_tokens, completion_tokens) = self.usage.unwrap_or_default();
        let nanos = |since: Instant| u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let done_reason = if self.finish_reason.as_deref() == Some("length") { "length" } else { "stop" };
        chunks.push(ChatChunk {
            done: true,
            done_reason: Some(done_reason.into()),
            total_duration: Some(nanos(self.sent)),
            prompt_eval_count: prompt_tokens,
            eval_count: Some(completion_tokens.unwrap_or(self.pieces)),
            eval_duration: self.first_piece.map(nanos),
            ..self.chunk(ChunkMessage::default())
        });
        Ok(chunks)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The answer's chunks as they arrive: network reads, events, translation.
struct ChunkStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    events: EventDecoder,
    translator: Translator,
    ready: VecDeque<Result<ChatChunk, OllamaError>>,
    finished: bool,
    /// Whether a chunk was yielded yet: until then reads wait up to the first-byte timeout.
    started: bool,
    timeouts: Timeouts,
}

impl ChunkStream {
    fn new(response: reqwest::Response, model: String, sent: Instant, timeouts: Timeouts) -> Self {
        ChunkStream {
            body: Box::pin(response.bytes_stream()),
            events: EventDecoder::default(),
            translator: Translator::new(model, sent),
            ready: VecDeque::new(),
            finished: false,
            started: false,
            timeouts,
        }
    }

    async fn next(&mut self) -> Option<Result<ChatChunk, OllamaError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                self.started = true;
                return Some(item);
            }
            if self.finished {
                return None;
            }
            if let Some(event) = self.events.next_event() {
                self.event(event);
                continue;
            }
            let wait = if self.started { self.timeouts.idle } else { self.timeouts.first_byte };
            match tokio::time::timeout(wait, self.body.next()).await {
                Err(_) => self.fail(OllamaError::Timeout(wait)),
                Ok(Some(Ok(bytes))) => self.events.push(&bytes),
                Ok(Some(Err(err))) => self.fail(OllamaError::Disconnected(err.without_url().to_string())),
                Ok(None) => {
                    if let Some(event) = self.events.finish() {
                        self.event(event);
                    }
                    // Without `[DONE]`, a stream that told its finish reason is complete; any
                    // other ends here, and the engine reports the answer as cut off.
                    if !self.finished && self.translator.finish_reason.is_some() {
                        self.event(Event::Done);
                    }
                    self.finished = true;
                }
            }
        }
    }

    fn event(&mut self, event: Event) {
        let chunks = match event {
            Event::Done => {
                self.finished = true;
                self.translator.finish()
            }
            Event::Data(data) | Event::Error(data) if data.trim().is_empty() => return,
            Event::Error(data) => {
                let message = serde_json::from_str::<Value>(&data).ok().as_ref().and_then(error_message).unwrap_or(data);
                Err(OllamaError::Upstream { status: StatusCode::BAD_GATEWAY, message })
            }
            Event::Data(data) => match serde_json::from_str::<Value>(&data) {
                Ok(object) => self.translator.object(&object),
                Err(e) => Err(OllamaError::Protocol(format!("invalid event: {e}"))),
            },
        };
        match chunks {
            Ok(chunks) => self.ready.extend(chunks.into_iter().map(Ok)),
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: OllamaError) {
        self.ready.push_back(Err(error));
        self.finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> UpstreamMessage {
        UpstreamMessage {
            role: role.into(),
            content: content.into(),
            thinking: None,
            images: None,
            tool_calls: None,
            tool_name: None,
        }
    }

    fn request(model: &str, messages: Vec<UpstreamMessage>) -> ChatRequest {
        ChatRequest::streamed(model, messages)
    }

    fn translated(events: &[Value]) -> Result<Vec<ChatChunk>, OllamaError> {
        let mut translator = Translator::new("m".into(), Instant::now());
        let mut chunks = Vec::new();
        for event in events {
            chunks.extend(translator.object(event)?);
        }
        chunks.extend(translator.finish()?);
        Ok(chunks)
    }

    fn delta(delta: Value) -> Value {
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    }

    fn finish(reason: &str) -> Value {
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    }

    #[test]
    fn the_api_base_gets_v1_only_without_a_path() {
        assert_eq!(api_base("http://vllm:8000"), "http://vllm:8000/v1");
        assert_eq!(api_base("http://vllm:8000/"), "http://vllm:8000/v1");
        assert_eq!(api_base("http://vllm:8000/v1/"), "http://vllm:8000/v1");
        assert_eq!(api_base(" https://api.openai.com/v1 "), "https://api.openai.com/v1");
        assert_eq!(
            api_base("https://generativelanguage.googleapis.com/v1beta/openai/"),
            "https://generativelanguage.googleapis.com/v1beta/openai"
        );
    }

    #[test]
    fn a_request_in_openais_terms() {
        let mut question = message("user", "What is this?");
        question.images = Some(vec!["iVBORw0KGgo=".into(), "/9j/4AAQ".into()]);
        let mut called = message("assistant", "");
        called.thinking = Some("I should look".into());
        called.tool_calls = Some(json!([
            {"function": {"name": "lookup", "arguments": {"q": "x"}}},
            {"id": "call_own", "function": {"name": "weather", "arguments": {}}},
        ]));
        let mut weather = message("tool", "11 degrees");
        weather.tool_name = Some("weather".into());
        let mut lookup = message("tool", "a cat");
        lookup.tool_name = Some("lookup".into());
        let mut chat = request("llama3.2:1b", vec![message("system", "Be brief"), question, called, weather, lookup]);
        chat.options =
            Some(json!({"temperature": 0.2, "num_predict": 64, "num_ctx": 8192, "top_k": 40, "seed": 7, "stop": ["END"]}));
        chat.format = Some(json!("json"));
        chat.think = Some(json!("max"));
        chat.keep_alive = Some(json!("5m"));
        chat.tools = Some(vec![json!({"type": "function", "function": {"name": "weather"}})]);

        let body = Value::Object(request_body(&chat));
        assert_eq!(
            body,
            json!({
                "model": "llama3.2:1b",
                "messages": [
                    {"role": "system", "content": "Be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c00020000", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
                        {"id": "call_own", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
                    ]},
                    {"role": "tool", "content": "11 degrees", "tool_call_id": "call_own"},
                    {"role": "tool", "content": "a cat", "tool_call_id": "c00020000"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.2,
                "seed": 7,
                "stop": ["END"],
                "max_tokens": 64,
                "response_format": {"type": "json_object"},
                "tools": [{"type": "function", "function": {"name": "weather"}}],
                "reasoning_effort": "high",
            })
        );

        let mut plain = request("m", vec![message("user", "hi")]);
        plain.think = Some(json!(false));
        plain.format = Some(json!({"type": "object"}));
        plain.options = Some(json!({"num_predict": -1}));
        let body = request_body(&plain);
        assert!(!body.contains_key("reasoning_effort") && !body.contains_key("max_tokens"));
        assert_eq!(
            body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}})
        );
    }

    #[test]
    fn refused_parameters_are_left_out_or_renamed() {
        let refusal = json!({"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                                        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}});
        assert_eq!(unsupported_parameter(&refusal).as_deref(), Some("max_tokens"));
        let by_message = json!({"error": {"message": "Unsupported value: 'temperature' does not support 0.2 with this model."}});
        assert_eq!(unsupported_parameter(&by_message).as_deref(), Some("temperature"));
        let azure = json!({"error": {"message": "Unrecognized request argument supplied: stream_options"}});
        assert_eq!(unsupported_parameter(&azure).as_deref(), Some("stream_options"));
        assert_eq!(unsupported_parameter(&json!({"error": {"message": "model not found"}})), None);

        let mut body = request_body(&request("m", vec![message("user", "hi")]));
        body.insert("max_tokens".into(), json!(5));
        assert!(leave_out(&mut body, "max_tokens"));
        assert_eq!(body["max_completion_tokens"], 5);
        assert!(!body.contains_key("max_tokens"));
        assert!(!leave_out(&mut body, "max_tokens"), "nothing left to take out");
        assert!(leave_out(&mut body, "stream_options"));
        assert!(!leave_out(&mut body, "messages"), "never the conversation");
    }

    #[test]
    fn error_messages_of_every_shape() {
        assert_eq!(error_message(&json!({"error": {"message": "a"}})).as_deref(), Some("a"));
        assert_eq!(error_message(&json!({"error": "b"})).as_deref(), Some("b"));
        assert_eq!(error_message(&json!({"object": "error", "message": "c", "code": 400})).as_deref(), Some("c"));
        assert_eq!(error_message(&json!({"detail": "d"})).as_deref(), Some("d"));
        assert_eq!(error_message(&json!({"nothing": 1})), None);
    }

    #[test]
    fn refusals_never_show_the_key() {
        let timeouts =
            Timeouts { connect: Duration::from_secs(1), first_byte: Duration::from_secs(1), idle: Duration::from_secs(1) };
        let upstream = OpenAiUpstream::new("http://user:pw@gpu:8000", Some("sk-secret".into()), timeouts).unwrap();
        assert_eq!(upstream.address(), "http://gpu:8000/v1");
        assert!(!format!("{upstream:?}").contains("sk-secret"));
        let denied =
            upstream.refusal(StatusCode::UNAUTHORIZED, r#"{"error": {"message": "Incorrect API key provided: sk-se****cret"}}"#);
        let OllamaError::Upstream { status, message } = denied.error else { panic!("an upstream error") };
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(message, "The upstream refused its API key (401 Unauthorized)");
        let echoed = upstream.refusal(StatusCode::BAD_REQUEST, r#"{"error": {"message": "bad header Bearer sk-secret"}}"#);
        assert_eq!(echoed.error.to_string(), "bad header Bearer ***");
        let page = upstream.refusal(StatusCode::SERVICE_UNAVAILABLE, "<html>nginx at gpu:8000</html>");
        assert_eq!(page.error.to_string(), "The upstream answered 503 Service Unavailable");
    }

    #[test]
    fn events_are_split_wherever_the_bytes_break() {
        let mut decoder = EventDecoder::default();
        let body = b": ping\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: error\ndata: {\"error\":\ndata: \"x\"}\n\ndata:[DONE]\n\n";
        let mut events = Vec::new();
        for byte in body.chunks(3) {
            decoder.push(byte);
            while let Some(event) = decoder.next_event() {
                events.push(event);
            }
        }
        assert_eq!(events, [Event::Data("{\"a\":1}".into()), Event::Error("{\"error\":\n\"x\"}".into()), Event::Done]);
        decoder.push(b"data: {\"b\":2}");
        assert_eq!(decoder.next_event(), None);
        assert_eq!(decoder.finish(), Some(Event::Data("{\"b\":2}".into())));
    }

    #[test]
    fn deltas_become_ollamas_chunks() {
        let chunks = translated(&[
            delta(json!({"role": "assistant", "content": ""})),
            delta(json!({"reasoning_content": "Let me"})),
            delta(json!({"reasoning": " think"})),
            delta(json!({"content": "Hello"})),
            finish("stop"),
            json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}),
        ])
        .unwrap();
        let thinking: Vec<_> = chunks.iter().filter_map(|c| c.message.thinking.as_deref()).collect();
        assert_eq!(thinking, ["Let me", " think"]);
        assert_eq!(chunks[2].message.content, "Hello");
        assert_eq!(chunks.len(), 4);
        let done = &chunks[3];
        assert!(done.done && !chunks[..3].iter().any(|c| c.done));
        assert_eq!(done.done_reason.as_deref(), Some("stop"));
        assert_eq!((done.prompt_eval_count, done.eval_count), (Some(12), Some(3)));
        assert!(done.total_duration.is_some() && done.eval_duration.is_some());

        let cut = translated(&[delta(json!({"content": "a"})), delta(json!({"content": "b"})), finish("length")]).unwrap();
        let done = cut.last().unwrap();
        assert_eq!(done.done_reason.as_deref(), Some("length"));
        assert_eq!((done.prompt_eval_count, done.eval_count), (None, Some(2)), "without usage, the chunks are counted");
    }

    #[test]
    fn tool_call_fragments_are_put_together() {
        let chunks = translated(&[
            delta(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]})),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]})),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]})),
            delta(json!({"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "time", "arguments": "{}"}}]})),
            delta(json!({"tool_calls": [{"index": 2, "id": "call_3", "function": {"name": "broken", "arguments": "{nope"}}]})),
            finish("tool_calls"),
        ])
        .unwrap();
        let calls: Vec<&Vec<Value>> = chunks.iter().filter_map(|c| c.message.tool_calls.as_ref()).collect();
        // Each is complete when the next begins, the last at the finish reason.
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0], &vec![json!({"id": "call_1", "function": {"name": "weather", "arguments": {"city": "Oslo"}}})]);
        assert_eq!(calls[1], &vec![json!({"id": "call_2", "function": {"name": "time", "arguments": {}}})]);
        assert_eq!(calls[2], &vec![json!({"id": "call_3", "function": {"name": "broken", "arguments": "{nope"}})]);
        assert_eq!(chunks.last().unwrap().done_reason.as_deref(), Some("stop"));

        // Whole calls without an index (some servers), and a name repeated in every fragment.
        let chunks = translated(&[
            delta(json!({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{\"x\":"}}]})),
            delta(json!({"tool_calls": [{"function": {"name": "f", "arguments": "1}"}}]})),
            delta(json!({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]})),
        ])
        .unwrap();
        let calls: Vec<Value> = chunks.iter().filter_map(|c| c.message.tool_calls.clone()).flatten().collect();
        assert_eq!(
            calls,
            [
                json!({"id": "a", "function": {"name": "f", "arguments": {"x": 1}}}),
                json!({"id": "b", "function": {"name": "g", "arguments": {}}})
            ]
        );

        let late = translated(&[
            delta(json!({"tool_calls": [{"index": 0, "function": {"name": "f"}}]})),
            delta(json!({"tool_calls": [{"index": 1, "function": {"name": "g"}}]})),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})),
        ]);
        assert!(matches!(late, Err(OllamaError::Protocol(_))));
    }

    #[test]
    fn an_error_object_in_the_stream_fails_it() {
        let failed = translated(&[
            delta(json!({"content": "a"})),
            json!({"error": {"message": "CUDA out of memory", "type": "server_error"}}),
        ]);
        let Err(OllamaError::Upstream { status, message }) = failed else { panic!("{failed:?}") };
        assert_eq!((status, message.as_str()), (StatusCode::BAD_GATEWAY, "CUDA out of memory"));
        let vllm = translated(&[json!({"object": "error", "message": "too long", "code": 400})]);
        assert!(matches!(vllm, Err(OllamaError::Upstream { .. })));
    }
}

/// The client against the emulator in OpenAI mode.
#[cfg(test)]
mod against_the_emulator {
    use super::*;
    use ollama_emulator::{Emulator, EmulatorConfig, Knobs};

    const SECOND: Duration = Duration::from_secs(1);

    async fn emulator(knobs: Knobs, api_key: Option<&str>) -> Emulator {
        let config = EmulatorConfig { openai: true, knobs, api_key: api_key.map(str::to_owned), ..EmulatorConfig::default() };
        Emulator::start_with(config).await
    }

    fn timeouts(first_byte: Duration) -> Timeouts {
        Timeouts { connect: SECOND, first_byte, idle: 5 * SECOND }
    }

    fn upstream(emulator: &Emulator, api_key: Option<&str>) -> OpenAiUpstream {
        OpenAiUpstream::new(&format!("{}/v1", emulator.base_url()), api_key.map(str::to_owned), timeouts(5 * SECOND)).unwrap()
    }

    fn ask(model: &str, content: &str) -> ChatRequest {
        let question = UpstreamMessage {
            role: "user".into(),
            content: content.into(),
            thinking: None,
            images: None,
            tool_calls: None,
            tool_name: None,
        };
        ChatRequest::streamed(model, vec![question])
    }

    /// Every item up to the end, and the chunks before the first error.
    async fn read_all(upstream: &OpenAiUpstream, request: &ChatRequest) -> (Vec<ChatChunk>, Option<OllamaError>) {
        let stream = upstream.chat(request).await.expect("the answer starts");
        futures_util::pin_mut!(stream);
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => chunks.push(chunk),
                Err(error) => return (chunks, Some(error)),
            }
        }
        (chunks, None)
    }

    fn content(chunks: &[ChatChunk]) -> String {
        chunks.iter().map(|c| c.message.content.as_str()).collect()
    }

    #[tokio::test]
    async fn lists_models_with_or_without_v1_in_the_url() {
        let emulator = emulator(Knobs::default(), None).await;
        let with_v1 = upstream(&emulator, None);
        assert_eq!(with_v1.models().await.unwrap(), ["llama3.2:1b", "qwen3:0.6b"]);
        let bare = OpenAiUpstream::new(&emulator.base_url(), None, timeouts(SECOND)).unwrap();
        assert_eq!(bare.models().await.unwrap(), ["llama3.2:1b", "qwen3:0.6b"]);
        assert_eq!(emulator.requests()[1].path, "/v1/models");
    }

    #[tokio::test]
    async fn streams_content_and_ends_with_the_usage() {
        let emulator = emulator(Knobs::default(), None).await;
        let mut request = ask("llama3.2:1b", "hello there");
        request.options = Some(json!({"num_predict": 100, "temperature": 0.5, "num_ctx": 2048}));
        let (chunks, error) = read_all(&upstream(&emulator, None), &request).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(content(&chunks), "Echo: hello there");
        let done = chunks.last().unwrap();
        assert!(done.done && chunks[..chunks.len() - 1].iter().all(|c| !c.done));
        assert_eq!(done.done_reason.as_deref(), Some("stop"));
        // The emulator counts prompt words + 10, and one token per content chunk.
        assert_eq!((done.prompt_eval_count, done.eval_count), (Some(12), Some(3)));
        assert_eq!(done.model, "llama3.2:1b");

        let sent = &emulator.chat_completion_requests()[0];
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
        assert_eq!(sent["max_tokens"], 100);
        assert_eq!(sent["temperature"], json!(0.5));
        assert!(sent.get("num_ctx").is_none() && sent.get("options").is_none());
        assert_eq!(emulator.completed_chats(), 1);

        request.options = Some(json!({"num_predict": 2}));
        let (cut, _) = read_all(&upstream(&emulator, None), &request).await;
        assert_eq!(content(&cut), "Echo: hello");
        assert_eq!(cut.last().unwrap().done_reason.as_deref(), Some("length"));
    }

    #[tokio::test]
    async fn reasoning_becomes_thinking() {
        let emulator = emulator(Knobs::default(), None).await;
        let (chunks, _) = read_all(&upstream(&emulator, None), &ask("qwen3:0.6b", "Think first")).await;
        let thinking: String = chunks.iter().filter_map(|c| c.message.thinking.as_deref()).collect();
        assert_eq!(thinking, "The user said 11 characters.");
        assert_eq!(content(&chunks), "Echo: Think first");
    }

    #[tokio::test]
    async fn tool_calls_make_the_round_trip() {
        let emulator = emulator(Knobs::default(), None).await;
        let upstream = upstream(&emulator, None);
        let tools = vec![json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})];
        let mut request = ask("qwen3:0.6b", "Oslo");
        request.tools = Some(tools);
        let (chunks, _) = read_all(&upstream, &request).await;
        let calls: Vec<&Vec<Value>> = chunks.iter().filter_map(|c| c.message.tool_calls.as_ref()).collect();
        assert_eq!(calls.len(), 1, "one chunk once the call is complete");
        let call = &calls[0][0];
        assert_eq!(call["function"], json!({"name": "get_weather", "arguments": {"city": "Oslo"}}));
        assert!(call["id"].as_str().unwrap().starts_with("call_"));

        // The call and its result go back, as the engine sends a conversation.
        let mut called = UpstreamMessage {
            role: "assistant".into(),
            content: String::new(),
            thinking: None,
            images: None,
            tool_calls: Some(Value::Array(calls[0].clone())),
            tool_name: None,
        };
        called.thinking = Some("hm".into());
        let result = UpstreamMessage {
            role: "tool".into(),
            content: "11 degrees".into(),
            thinking: None,
            images: None,
            tool_calls: None,
            tool_name: Some("get_weather".into()),
        };
        request.messages.extend([called, result]);
        let (answer, _) = read_all(&upstream, &request).await;
        assert!(answer.iter().all(|c| c.message.tool_calls.is_none()));
        assert_eq!(content(&answer), "Echo: Oslo");
        let sent = &emulator.chat_completion_requests()[1]["messages"];
        assert_eq!(sent[1]["tool_calls"][0]["id"], call["id"]);
        assert_eq!(sent[1]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert!(sent[1]["content"].is_null() && sent[1].get("thinking").is_none());
        assert_eq!(sent[2], json!({"role": "tool", "content": "11 degrees", "tool_call_id": call["id"]}));
    }

    #[tokio::test]
    async fn the_api_key_is_sent_and_a_refusal_is_a_bad_gateway() {
        let emulator = emulator(Knobs::default(), Some("sk-right")).await;
        let (chunks, _) = read_all(&upstream(&emulator, Some("sk-right")), &ask("llama3.2:1b", "hi")).await;
        assert!(chunks.last().unwrap().done);
        let recorded = emulator.requests();
        let authorization = recorded[0].headers.iter().find(|(name, _)| name == "authorization").map(|(_, v)| v.as_str());
        assert_eq!(authorization, Some("Bearer sk-right"));

        let wrong = upstream(&emulator, Some("sk-wrong"));
        for error in [wrong.chat(&ask("llama3.2:1b", "hi")).await.err().unwrap(), wrong.models().await.unwrap_err()] {
            let OllamaError::Upstream { status, message } = &error else { panic!("{error:?}") };
            assert_eq!(*status, StatusCode::BAD_GATEWAY);
            assert!(!message.contains("sk-wrong") && !message.contains("127.0.0.1"), "{message}");
        }
        let none = upstream(&emulator, None).models().await.unwrap_err();
        assert!(matches!(none, OllamaError::Upstream { status: StatusCode::BAD_GATEWAY, .. }));
    }

    #[tokio::test]
    async fn failures_before_the_first_token_are_errors() {
        let emulator = emulator(Knobs { fail_before_first_byte: Some((500, "no GPU".into())), ..Knobs::default() }, None).await;
        let upstream = upstream(&emulator, None);
        let error = upstream.chat(&ask("llama3.2:1b", "hi")).await.err().unwrap();
        assert!(
            matches!(&error, OllamaError::Upstream { status: StatusCode::INTERNAL_SERVER_ERROR, message } if message == "no GPU"),
            "{error:?}"
        );

        let unknown = {
            emulator.set_knobs(Knobs::default());
            upstream.chat(&ask("gpt-9", "hi")).await.err().unwrap()
        };
        assert!(
            matches!(&unknown, OllamaError::Upstream { status: StatusCode::NOT_FOUND, message } if message.contains("gpt-9"))
        );

        // Failing before the first content token: after thinking it is a stream that fails,
        // without anything before it an error of `chat`.
        emulator.set_knobs(Knobs { error_after_tokens: Some((0, "overloaded".into())), ..Knobs::default() });
        let mut thinking = ask("qwen3:0.6b", "hi");
        thinking.think = Some(json!("low"));
        let (thought, error) = read_all(&upstream, &thinking).await;
        assert!(thought.iter().all(|c| c.message.thinking.is_some()) && error.is_some());
        let early = upstream.chat(&ask("llama3.2:1b", "hi")).await.err().unwrap();
        assert!(matches!(&early, OllamaError::Upstream { message, .. } if message == "overloaded"), "{early:?}");

        emulator.set_knobs(Knobs { hang: true, ..Knobs::default() });
        let impatient = OpenAiUpstream::new(&emulator.base_url(), None, timeouts(Duration::from_millis(200))).unwrap();
        assert!(matches!(impatient.chat(&ask("llama3.2:1b", "hi")).await.err().unwrap(), OllamaError::Timeout(_)));

        let address = emulator.base_url();
        drop(emulator);
        let gone = OpenAiUpstream::new(&address, Some("sk-x".into()), timeouts(SECOND)).unwrap();
        let unreachable = gone.chat(&ask("llama3.2:1b", "hi")).await.err().unwrap();
        assert!(matches!(unreachable, OllamaError::Unreachable { .. }), "{unreachable:?}");
        let shown = unreachable.to_string();
        assert!(!shown.contains("127.0.0.1") && !shown.contains("sk-x"), "{shown}");
    }

    #[tokio::test]
    async fn failures_after_the_first_token_end_the_stream() {
        let emulator =
            emulator(Knobs { error_after_tokens: Some((2, "the GPU fell over".into())), ..Knobs::default() }, None).await;
        let upstream = upstream(&emulator, None);
        let (chunks, error) = read_all(&upstream, &ask("llama3.2:1b", "one two three")).await;
        assert_eq!(content(&chunks), "Echo: one");
        assert!(
            matches!(&error, Some(OllamaError::Upstream { status: StatusCode::BAD_GATEWAY, message }) if message == "the GPU fell over"),
            "{error:?}"
        );

        // Paced, so that the status line leaves before the connection is cut.
        let pace = Duration::from_millis(10);
        emulator.set_knobs(Knobs { drop_after_tokens: Some(2), per_token_delay: pace, ..Knobs::default() });
        let (chunks, error) = read_all(&upstream, &ask("llama3.2:1b", "one two three")).await;
        assert_eq!(content(&chunks), "Echo: one");
        assert!(matches!(error, Some(OllamaError::Disconnected(_))), "{error:?}");
    }

    #[tokio::test]
    async fn dropping_the_stream_cancels_the_answer() {
        let knobs = Knobs { per_token_delay: Duration::from_millis(20), tokens: Some(200), ..Knobs::default() };
        let emulator = emulator(knobs, None).await;
        let mut stream = Box::pin(upstream(&emulator, None).chat(&ask("llama3.2:1b", "hi")).await.unwrap());
        stream.next().await.unwrap().unwrap();
        stream.next().await.unwrap().unwrap();
        assert_eq!(emulator.in_flight_chats(), 1);
        drop(stream);
        let gone = emulator.wait_for_cancellations(1, 5 * SECOND).await;
        assert_eq!(gone.len(), 1, "the emulator saw the client leave");
        assert_eq!(gone[0].path, "/v1/chat/completions");
        assert!(gone[0].at_token < 200);
        assert_eq!(emulator.completed_chats(), 0);
    }

    #[tokio::test]
    async fn a_refused_parameter_is_retried_without_it() {
        let refusal =
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.";
        let emulator = emulator(Knobs { fail_before_first_byte: Some((400, refusal.into())), ..Knobs::default() }, None).await;
        let mut request = ask("llama3.2:1b", "hi");
        request.options = Some(json!({"num_predict": 50}));
        let error = upstream(&emulator, None).chat(&request).await.err().unwrap();
        assert!(matches!(error, OllamaError::Upstream { status: StatusCode::BAD_REQUEST, .. }));
        let sent = emulator.chat_completion_requests();
        assert_eq!(sent.len(), 2, "sent again once, then given up: {sent:?}");
        assert_eq!(sent[0]["max_tokens"], 50);
        assert_eq!((sent[1].get("max_tokens"), &sent[1]["max_completion_tokens"]), (None, &json!(50)));
    }
}
