//! `POST /api/generate` (not used by rovertchat, provided for completeness): request decoding
//! and validation; the answer is produced by [`generation`](crate::generation).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Knobs;
use crate::generation::{self, thinking_text, Answer, Flavor, Job, Work};
use crate::params::{parse_think, KeepAlive, ModelOptions};
use crate::state::Shared;
use crate::text::word_count;
use crate::validate;
use crate::wire::{parse_body, ApiError};

#[derive(Deserialize)]
struct GenerateRequest {
    model: Option<String>,
    prompt: Option<String>,
    suffix: Option<String>,
    system: Option<String>,
    template: Option<String>,
    raw: Option<bool>,
    images: Option<Vec<String>>,
    context: Option<Vec<i64>>,
    stream: Option<bool>,
    think: Option<Value>,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

pub(crate) async fn generate(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match prepare(&shared, &body) {
        Ok((knobs, job)) => generation::serve(shared, knobs, job).await,
        Err(error) => error.into_response(),
    }
}

fn prepare(shared: &Shared, body: &[u8]) -> Result<(Knobs, Job), ApiError> {
    let request: GenerateRequest = parse_body(body)?;
    validate::images(request.images.iter().flatten())?;
    let think = parse_think(request.think.as_ref())?;
    let keep_alive = KeepAlive::parse(request.keep_alive.as_ref())?;
    let model = request.model.unwrap_or_default();
    let raw = request.raw.unwrap_or(false);
    let is_set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let has_context = request.context.as_ref().is_some_and(|c| !c.is_empty());
    if raw && (is_set(&request.template) || is_set(&request.system) || has_context) {
        return Err(ApiError::bad_request("raw mode does not support template, system, or context"));
    }
    let spec = validate::installed_model(shared, &model)?;
    validate::capability(&spec, &model, "completion", "generate")?;
    if is_set(&request.suffix) {
        validate::capability(&spec, &model, "insert", "insert")?;
    }
    if think == Some(true) {
        validate::capability(&spec, &model, "thinking", "thinking")?;
    }
    let options = ModelOptions::parse(request.options.as_ref())?;
    let knobs = shared.knobs();

    let prompt = request.prompt.unwrap_or_default();
    let work = if prompt.is_empty() {
        Work::empty_request(keep_alive)
    } else {
        let reply = knobs.reply.clone().unwrap_or_else(|| format!("Echo: {prompt}"));
        let thinking = thinking_text(&spec, think, &prompt);
        let prompt_words = word_count(&prompt) + request.system.as_deref().map_or(0, word_count);
        Work::Answer(Answer::compose(&reply, thinking.as_deref(), None, prompt_words, &knobs, options.num_predict))
    };
    let job = Job {
        flavor: Flavor::Generate { context: !raw },
        model,
        spec,
        stream: request.stream.unwrap_or(true),
        keep_alive,
        num_ctx: options.num_ctx,
        work,
    };
    Ok((knobs, job))
}
