//! `POST /api/chat`: request decoding and validation; the answer is produced by
//! [`generation`](crate::generation).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Knobs;
use crate::generation::{self, thinking_text, Answer, Flavor, Job, ToolCall, Work};
use crate::params::{parse_think, KeepAlive, ModelOptions};
use crate::state::Shared;
use crate::text::word_count;
use crate::validate;
use crate::wire::{parse_body, ApiError};

/// The fields of a chat request the emulator looks at (unknown fields are ignored, `null` is
/// the same as missing).
#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    stream: Option<bool>,
    think: Option<Value>,
    tools: Option<Vec<Value>>,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

#[derive(Deserialize)]
struct Message {
    role: Option<String>,
    content: Option<String>,
    images: Option<Vec<String>>,
}

impl Message {
    /// Roles are lower-cased on input.
    fn role(&self) -> String {
        self.role.as_deref().unwrap_or_default().to_lowercase()
    }

    fn content(&self) -> &str {
        self.content.as_deref().unwrap_or_default()
    }
}

pub(crate) async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match prepare(&shared, &body) {
        Ok((knobs, job)) => generation::serve(shared, knobs, job).await,
        Err(error) => error.into_response(),
    }
}

/// Validates in Ollama's order: decoding (including images, `think`, `keep_alive`), the model
/// name, the model, its capabilities, then option types.
fn prepare(shared: &Shared, body: &[u8]) -> Result<(Knobs, Job), ApiError> {
    let request: ChatRequest = parse_body(body)?;
    let messages = request.messages.unwrap_or_default();
    validate::images(messages.iter().flat_map(|m| m.images.iter().flatten()))?;
    let think = parse_think(request.think.as_ref())?;
    let keep_alive = KeepAlive::parse(request.keep_alive.as_ref())?;
    let model = request.model.unwrap_or_default();
    let spec = validate::installed_model(shared, &model)?;
    validate::capability(&spec, &model, "completion", "chat")?;
    if think == Some(true) {
        validate::capability(&spec, &model, "thinking", "thinking")?;
    }
    let tools = request.tools.unwrap_or_default();
    if !tools.is_empty() {
        validate::capability(&spec, &model, "tools", "tools")?;
    }
    let options = ModelOptions::parse(request.options.as_ref())?;
    let knobs = shared.knobs();

    let work = if messages.is_empty() {
        Work::empty_request(keep_alive)
    } else {
        let last_user = messages.iter().rev().find(|m| m.role() == "user").map_or("", Message::content);
        let reply = knobs.reply.clone().unwrap_or_else(|| format!("Echo: {last_user}"));
        let thinking = thinking_text(&spec, think, last_user);
        // After a tool result the model answers instead of calling the tool again.
        let answers_tool_result = messages.last().is_some_and(|m| m.role() == "tool");
        let tool_call = tools.first().filter(|_| !answers_tool_result).map(|tool| ToolCall::for_tool(tool, last_user));
        let prompt_words = messages.iter().map(|m| word_count(m.content())).sum();
        Work::Answer(Answer::compose(&reply, thinking.as_deref(), tool_call, prompt_words, &knobs, options.num_predict))
    };
    let job = Job {
        flavor: Flavor::Chat,
        model,
        spec,
        stream: request.stream.unwrap_or(true),
        keep_alive,
        num_ctx: options.num_ctx,
        work,
    };
    Ok((knobs, job))
}
