//! The HTTP surface: one router per area nested under `/api/v1`, and the middleware stack.
//!
//! Each route is declared once, in its area's `router()`: `routes!(handler)` registers the
//! handler at the path of its `#[utoipa::path]` annotation together with its documentation, and
//! [`RouteRules`] attach what else governs the route (its rate limit, no time limit).

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod chats;
pub mod health;
pub mod ollama;
pub mod openai;
pub mod search;
pub mod settings;
pub mod usage;
pub mod users;

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};

use crate::guards;
use crate::guards::rate_limit::LimitKind;
use crate::openapi;
use crate::request_id::{self, RequestId};
use crate::state::AppState;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

/// Where the API lives; the areas' paths are relative to it.
const API_PREFIX: &str = "/api/v1";

/// What a route declares next to its handler, e.g. `routes!(login).rate_limited(LimitKind::Login)`.
pub(crate) trait RouteRules {
    /// Counts the route's requests against `kind`'s limit (routes of one kind share its
    /// budget), and documents the 429.
    fn rate_limited(self, kind: LimitKind) -> Self;

    /// Frees the route from `REQUEST_TIMEOUT_SECS`: it streams, or waits for, a model.
    fn without_time_limit(self) -> Self;
}

impl<S: Clone + Send + Sync + 'static> RouteRules for UtoipaMethodRouter<S> {
    fn rate_limited(self, kind: LimitKind) -> Self {
        let (schemas, mut paths, method_router) = self;
        openapi::document_rate_limit(&mut paths);
        (schemas, paths, method_router)
            .map(|routes| routes.route_layer(middleware::from_fn_with_state(kind, guards::rate_limit::enforce)))
    }

    fn without_time_limit(self) -> Self {
        self.map(|routes| routes.route_layer(middleware::from_fn(guards::timeout::lift_time_limit)))
    }
}

/// Registers `routes` (one handler) at the catch-all `axum_path` (`/models/{*name}`), which takes
/// a last segment with `/` in it, while its documentation keeps the annotation's plain
/// `{name}` parameter.
pub(crate) fn route_catch_all(
    router: OpenApiRouter<AppState>,
    axum_path: &str,
    (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let mut router = router.route(axum_path, method_router);
    let openapi = router.get_openapi_mut();
    openapi.paths.paths.extend(paths.paths);
    openapi.components.get_or_insert_with(Default::default).schemas.extend(schemas);
    router
}

/// Every route under `/api/v1`, with its documentation.
pub fn api() -> OpenApiRouter<AppState> {
    let areas = OpenApiRouter::new()
        .merge(accounts::router())
        .merge(users::router())
        .merge(settings::router())
        .merge(health::router())
        .merge(chats::router())
        .merge(search::router())
        .merge(ollama::router())
        .merge(api_keys::router())
        .merge(usage::router())
        .merge(admin::router());
    OpenApiRouter::new().nest(API_PREFIX, areas)
}

/// The OpenAI-compatible API at `/v1` (see [`openai`]), with its documentation.
pub fn openai_api() -> OpenApiRouter<AppState> {
    openai::router()
}

/// Every route under `/api/v1` as `(method, path)`: lower-case methods, paths relative to
/// `/api/v1`. Read from the routers' own documentation.
pub fn all_routes() -> Vec<(String, String)> {
    let mut paths = api().into_openapi().paths.paths;
    paths
        .iter_mut()
        .flat_map(|(path, item)| {
            let path = path.strip_prefix(API_PREFIX).unwrap_or(path).to_owned();
            openapi::operations_mut(item).map(move |(method, _)| (method.to_owned(), path.clone()))
        })
        .collect()
}

pub fn router(state: AppState) -> Router {
    let (api, _) = api().split_for_parts();
    let (openai_api, _) = openai_api().split_for_parts();
    let cors = cors_layer(&state.config.frontend_origins);
    Router::new()
        .merge(api)
        .merge(openai_api)
        .merge(openapi::router())
        .route("/metrics", axum::routing::get(crate::metrics::render))
        .fallback(frontend_or_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(run_to_completion))
        .layer(middleware::from_fn_with_state(state.config.request_timeout, guards::timeout::limit_duration))
        .layer(middleware::from_fn_with_state(state.clone(), guards::cross_site::refuse_cross_site))
        // For the rate-limited routes' layers (`RouteRules::rate_limited`).
        .layer(Extension(state.rate_limits.clone()))
        .layer(middleware::from_fn(crate::metrics::track_requests))
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_request(()).on_response(log_response).on_failure(()))
        .layer(cors)
        .layer(CatchPanicLayer::custom(|_| internal_error()))
        .layer(middleware::from_fn_with_state(state.rate_limits.clone(), request_id::assign))
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

/// The SPA's file or page (`FRONTEND_DIR`), or else the JSON 404.
async fn frontend_or_not_found(State(state): State<AppState>, request: Request) -> Response {
    if let Some(frontend) = &state.frontend {
        if let Some(response) = frontend.serve(request).await {
            return response;
        }
    }
    not_found().await
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
    let handler = crate::lifetime::scope(abandoned, next.run(request)).instrument(tracing::Span::current());
    let response = match tokio::spawn(handler).await {
        Ok(response) => response,
        Err(_) => internal_error(),
    };
    mark_abandoned_if_dropped.disarm();
    response
}

/// Every request runs in a `request` span (method, matched route, and the user once an
/// extractor knows them), so every line it logs carries them; its end is one `request` line with
/// the status and the latency. Never the query string, headers or body, where secrets could be.
fn request_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or("(no route)", MatchedPath::as_str);
    let id = request.extensions().get::<RequestId>().map_or("", RequestId::as_str);
    tracing::info_span!("request", method = %request.method(), route = %route, request_id = %id, user_id = tracing::field::Empty)
}

/// A 5xx is a warning: its cause was logged in the same span where it arose.
fn log_response(response: &Response, latency: Duration, _span: &tracing::Span) {
    let status = response.status().as_u16();
    let latency_us = latency.as_micros() as u64;
    if response.status().is_server_error() {
        tracing::warn!(status, latency_us, "request");
    } else {
        tracing::info!(status, latency_us, "request");
    }
}

/// Adds `Set-Cookie` headers to a response.
pub fn with_cookies(mut response: Response, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;
    use utoipa_axum::routes;

    use super::*;

    const TIME_LIMIT: Duration = Duration::from_millis(50);

    #[utoipa::path(get, path = "/new", responses((status = 200)))]
    async fn new_route() -> &'static str {
        std::future::pending().await
    }

    #[utoipa::path(get, path = "/stream", responses((status = 200)))]
    async fn streaming_route() -> &'static str {
        tokio::time::sleep(TIME_LIMIT * 4).await;
        "the whole answer"
    }

    /// A new route has the time limit without declaring anything; a route declared
    /// `without_time_limit` outlives it.
    #[tokio::test]
    async fn routes_have_a_time_limit_unless_declared_without() {
        let (router, _) = OpenApiRouter::<()>::new()
            .routes(routes!(new_route))
            .routes(routes!(streaming_route).without_time_limit())
            .split_for_parts();
        let router = router
            .layer(middleware::from_fn(run_to_completion))
            .layer(middleware::from_fn_with_state(TIME_LIMIT, guards::timeout::limit_duration));
        let call = |path: &str| router.clone().oneshot(Request::get(path).body(Body::empty()).unwrap());
        assert_eq!(call("/new").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(call("/stream").await.unwrap().status(), StatusCode::OK);
    }
}
