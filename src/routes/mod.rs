//! The HTTP surface: one router per area nested under `/api/v1`, and the middleware stack.

/// Declares an area's routes once: builds its router and lists its `(method, path)` pairs,
/// which the authorization matrix and the OpenAPI drift tests check against.
macro_rules! api_routes {
    ($($path:literal => $first:ident($first_handler:expr) $(.$method:ident($handler:expr))*),* $(,)?) => {
        pub fn router() -> axum::Router<crate::state::AppState> {
            axum::Router::new()$(.route($path, axum::routing::$first($first_handler)$(.$method($handler))*))*
        }

        /// `(method, path)` of every route of this area, paths relative to `/api/v1`.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($first), $path), $((stringify!($method), $path),)*)*];
    };
}

pub mod accounts;
pub mod chats;
pub mod health;
pub mod ollama;
pub mod settings;
pub mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::extract::RequestUser;
use crate::guards;
use crate::guards::cross_site::AllowedOrigins;
use crate::state::AppState;

/// Every route under `/api/v1` as `(method, path)`, lower-case methods.
pub fn all_routes() -> Vec<(&'static str, &'static str)> {
    [accounts::ROUTES, users::ROUTES, settings::ROUTES, health::ROUTES, chats::ROUTES, ollama::ROUTES].concat()
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(accounts::router())
        .merge(users::router())
        .merge(settings::router())
        .merge(health::router())
        .merge(chats::router())
        .merge(ollama::router());
    let cors = cors_layer(&state.config.frontend_origins);
    let origins = AllowedOrigins(Arc::new(state.config.frontend_origins.clone()));
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(run_to_completion))
        .layer(middleware::from_fn_with_state(state.config.request_timeout, guards::timeout::limit_duration))
        .layer(middleware::from_fn_with_state(origins, guards::cross_site::refuse_cross_site))
        .layer(middleware::from_fn_with_state(state.rate_limits.clone(), guards::rate_limit::enforce))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(log_requests))
        .layer(cors)
        .layer(CatchPanicLayer::custom(|_| internal_error()))
        .with_state(state)
}

/// CORS exactly for `FRONTEND_ORIGINS`, with credentials. `*` (refused in production) mirrors
/// the caller's origin, since browsers reject a literal `*` with credentials.
fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_credentials(true)
        .allow_methods([Method::DELETE, Method::GET, Method::HEAD, Method::OPTIONS, Method::PATCH, Method::POST, Method::PUT])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(600))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"detail": "Method Not Allowed"}))).into_response()
}

fn internal_error() -> Response {
    tracing::error!("a handler panicked");
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"detail": "Internal server error"}))).into_response()
}

/// Runs the handler in its own task, so a client that hangs up (or a time limit) cannot
/// cancel it halfway: a cancelled `BEGIN` would otherwise return its connection to the pool
/// still inside a transaction (sqlx 0.8), and a half-done change is worse than a finished one.
/// When this middleware's own future is dropped (the client hung up, or the time limit passed),
/// the request is marked abandoned for the work that should then be skipped.
async fn run_to_completion(request: Request, next: Next) -> Response {
    let abandoned = tokio_util::sync::CancellationToken::new();
    let mark_abandoned_if_dropped = abandoned.clone().drop_guard();
    let response = match tokio::spawn(crate::lifetime::scope(abandoned, next.run(request))).await {
        Ok(response) => response,
        Err(_) => internal_error(),
    };
    mark_abandoned_if_dropped.disarm();
    response
}

/// One line per request: method, path, status, latency and the user when known. Never the
/// query string, headers or body, where secrets could be.
async fn log_requests(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let user = RequestUser::default();
    request.extensions_mut().insert(user.clone());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match user.0.get() {
        Some(user_id) => tracing::info!(%method, %path, status, latency_ms, %user_id, "request"),
        None => tracing::info!(%method, %path, status, latency_ms, "request"),
    }
    response
}

/// Adds `Set-Cookie` headers to a response.
pub fn with_cookies(mut response: Response, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}
