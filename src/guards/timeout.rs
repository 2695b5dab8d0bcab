//! A time limit on every request (`REQUEST_TIMEOUT_SECS`), lifted by the routes that stream or
//! wait for a model's answer or a model download, whose length is the model's.
//!
//! The limit is the default, so a new route has it without anyone remembering; a streaming
//! route lifts it where it is declared (`routes!(chat).without_time_limit()`, see `routes`).
//! The limit runs outside the route's own layers and cannot see them, so it hands the request a
//! [`TimeLimit`] that the route's [`lift_time_limit`] layer lifts as the route starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

/// The time limit of one request; lifted for the routes that stream.
#[derive(Clone, Default)]
pub struct TimeLimit {
    lifted: Arc<AtomicBool>,
}

impl TimeLimit {
    fn lift(&self) {
        self.lifted.store(true, Ordering::Relaxed);
    }

    fn is_lifted(&self) -> bool {
        self.lifted.load(Ordering::Relaxed)
    }
}

pub async fn limit_duration(State(limit): State<Duration>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let time_limit = TimeLimit::default();
    request.extensions_mut().insert(time_limit.clone());
    let path = request.uri().path().to_owned();
    let response = next.run(request);
    tokio::pin!(response);
    if let Ok(response) = tokio::time::timeout(limit, &mut response).await {
        return Ok(response);
    }
    if time_limit.is_lifted() {
        return Ok(response.await);
    }
    tracing::warn!(%path, limit_ms = limit.as_millis() as u64, "request timed out");
    Err(ApiError::Unavailable("Request timed out"))
}

/// The layer of the routes that stream: their request has no time limit.
pub async fn lift_time_limit(request: Request, next: Next) -> Response {
    if let Some(time_limit) = request.extensions().get::<TimeLimit>() {
        time_limit.lift();
    }
    next.run(request).await
}
