//! `POST /api/embed`: deterministic vectors (the same text always gives the same unit vector),
//! so tests can compare them. Every installed model embeds.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::Shared;
use crate::text::word_count;
use crate::validate;
use crate::wire::{json_response, parse_body, ApiError};

/// Dimensions of a vector when the request sets none.
pub const DEFAULT_DIMENSIONS: usize = 16;

#[derive(Deserialize)]
struct EmbedRequest {
    model: Option<String>,
    input: Option<Value>,
    dimensions: Option<usize>,
}

#[derive(Serialize)]
struct EmbedResponse {
    model: String,
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    prompt_eval_count: usize,
}

pub(crate) async fn embed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match answer(&shared, &body) {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(error) => error.into_response(),
    }
}

fn answer(shared: &Shared, body: &[u8]) -> Result<EmbedResponse, ApiError> {
    let request: EmbedRequest = parse_body(body)?;
    let model = request.model.unwrap_or_default();
    validate::installed_model(shared, &model)?;
    let inputs: Vec<String> = match request.input {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.into_iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
        }
        Some(_) => return Err(ApiError::bad_request("invalid input type")),
    };
    let dimensions = request.dimensions.filter(|d| *d > 0).unwrap_or(DEFAULT_DIMENSIONS);
    Ok(EmbedResponse {
        model,
        embeddings: inputs.iter().map(|text| vector(text, dimensions)).collect(),
        total_duration: 1_000_000 * inputs.len().max(1) as u64,
        prompt_eval_count: inputs.iter().map(|text| word_count(text).max(1)).sum(),
    })
}

/// A unit vector drawn from a generator seeded by the text's FNV-1a hash.
pub fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state =
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    let raw: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}
