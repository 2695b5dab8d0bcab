//! Routing and the accept loop.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::state::{RecordedRequest, Shared};
use crate::wire::{with_content_type, ApiError};
use crate::{chat, embed, generate, models, openai, pull};

/// Largest request body read (images can be large).
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// The routes of the native API, or of the OpenAI-compatible one in OpenAI mode. Every
/// request is recorded, then checked for the API key (when there is one).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let routes = if shared.openai { openai_routes() } else { native_routes() };
    routes
        .layer(middleware::from_fn_with_state(shared.clone(), openai::authorize))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

/// `get` also answers HEAD. Unknown paths and wrong methods get Gin's plain-text 404/405
/// bodies.
fn native_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(models::root))
        .route("/api/version", get(models::version))
        .route("/api/tags", get(models::tags))
        .route("/api/ps", get(models::ps))
        .route("/api/show", post(models::show))
        .route("/api/delete", delete(models::delete))
        .route("/api/pull", post(pull::pull))
        .route("/api/chat", post(chat::chat))
        .route("/api/embed", post(embed::embed))
        .route("/api/generate", post(generate::generate))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}

/// Unknown paths (`/api/*` included) and wrong methods get OpenAI-shaped 404/405 errors.
fn openai_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/health", get(openai::health))
        .route("/v1/models", get(openai::models))
        .route(openai::CHAT_COMPLETIONS, post(openai::chat_completions))
        .method_not_allowed_fallback(openai::method_not_allowed)
        .fallback(openai::not_found)
}

async fn not_found() -> Response {
    with_content_type(StatusCode::NOT_FOUND, "text/plain", Body::from("404 page not found"))
}

async fn method_not_allowed() -> Response {
    with_content_type(StatusCode::METHOD_NOT_ALLOWED, "text/plain", Body::from("405 method not allowed"))
}

/// Records every request (reading the whole body first, as Ollama's JSON decoding does; this
/// also lets hyper notice a client that goes away while the handler is still waiting).
async fn record(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => return axum::response::IntoResponse::into_response(ApiError::bad_request(error.to_string())),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    shared.record_request(RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        body: serde_json::from_slice(&bytes).ok(),
        headers,
    });
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if shared.log_requests {
        eprintln!("{method} {path} -> {}", response.status().as_u16());
    }
    response
}

/// Accepts connections until the task is aborted. Connections live in a `JoinSet` owned by
/// this task, so aborting it closes every connection too.
pub(crate) async fn serve(listener: TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small NDJSON chunks must leave at once, as Go's server does.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // E.g. too many open files: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
