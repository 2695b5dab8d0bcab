//! A time limit on every request except the streaming ones, whose length is the model's.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

/// Routes that stream (or wait for) a model's answer or a model download.
const UNLIMITED: &[&str] =
    &["/api/v1/chats/{chat_id}/completions", "/api/v1/chats/{chat_id}/generation", "/api/v1/ollama/chat", "/api/v1/ollama/pull"];

pub async fn limit_duration(State(limit): State<Duration>, request: Request, next: Next) -> Result<Response, ApiError> {
    let unlimited = request.extensions().get::<MatchedPath>().is_some_and(|p| UNLIMITED.contains(&p.as_str()));
    if unlimited {
        return Ok(next.run(request).await);
    }
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => Ok(response),
        Err(_) => {
            tracing::warn!(%path, ?limit, "request timed out");
            Err(ApiError::Unavailable("Request timed out"))
        }
    }
}
