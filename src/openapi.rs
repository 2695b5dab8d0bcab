//! The OpenAPI 3.1 document, generated from the handlers' annotations, and the pages that
//! show it (`/docs` Swagger UI and `/redoc`, both bundled in the binary).
//!
//! The paths come from the routers (`routes::api`), where each handler's annotation registers
//! its route and its documentation at once. Each handler documents its success and its own
//! errors; the responses every route shares (401/400 for signed-in routes, 422 for input, 413
//! for bodies, 403 for refused cross-site requests, 503 when the database is away) are added
//! here, and the 429 of a rate-limited route by the declaration that limits it.

use axum::http::{header, HeaderValue};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::openapi::path::{Operation, PathItem, Paths};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::routes;
use crate::schemas;
use crate::state::AppState;

/// `{"detail": "..."}`.
#[derive(ToSchema)]
pub struct ErrorDetail {
    #[schema(example = "Chat not found")]
    pub detail: String,
}

/// FastAPI's validation answer.
#[derive(ToSchema)]
pub struct ValidationError {
    pub detail: Vec<ValidationIssueDoc>,
}

/// One problem with the input.
#[derive(ToSchema)]
#[schema(as = ValidationIssue)]
pub struct ValidationIssueDoc {
    #[schema(rename = "type", example = "string_too_short")]
    pub kind: String,
    /// Where: `["body", "username"]`, `["query", "limit"]`, `["path", "chat_id"]`.
    #[schema(value_type = Vec<Value>)]
    pub loc: Vec<Value>,
    pub msg: String,
    #[schema(value_type = Value)]
    pub input: Value,
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<Value>,
}

/// One server-sent event of a stream (`event: ...` and `data: <JSON>`).
#[derive(ToSchema)]
pub struct ServerSentEvent {
    /// `start`, `delta`, `tool_calls`, `done` or `error`.
    pub event: Option<String>,
    /// The event's JSON payload, as text.
    pub data: Option<String>,
    pub id: Option<String>,
    pub retry: Option<i64>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "rovertchat", description = "The rovertChat backend: accounts, chats and conversations with local models through Ollama."),
    components(schemas(ErrorDetail, ValidationError, ValidationIssueDoc, ServerSentEvent, schemas::chats::MessageRole, schemas::openai::OpenAiErrorBody, schemas::openai::OpenAiErrorDetail)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Register, log in, refresh, log out"),
        (name = "users", description = "Profiles and account management"),
        (name = "settings", description = "User settings"),
        (name = "chats", description = "Conversations and messages"),
        (name = "streaming", description = "Server-owned generations: stream, stop, re-attach"),
        (name = "ollama", description = "Models and the SPA's chat call"),
        (name = "health", description = "Liveness and database health"),
        (name = "api-keys", description = "Personal API keys for the OpenAI-compatible API"),
        (name = "admin", description = "Administration: API keys, usage"),
        (name = "usage", description = "What each user spent: generations and tokens"),
        (name = "openai", description = "The OpenAI-compatible API under /v1, with an API key as the Bearer token"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn spec() -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    doc.merge(routes::api().into_openapi());
    doc.merge(routes::openai_api().into_openapi());
    SharedResponses.modify(&mut doc);
    doc
}

/// ReDoc's page, loading the bundled script instead of a CDN (works without internet).
const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>rovertchat API</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <div id="redoc-container"></div>
    <script src="/redoc/redoc.standalone.js"></script>
    <script>Redoc.init("/openapi.json", {}, document.getElementById("redoc-container"));</script>
  </body>
</html>"#;

/// ReDoc 2.5.4 (MIT, see assets/redoc-LICENSE), from the npm package `redoc`.
const REDOC_SCRIPT: &str = include_str!("../assets/redoc.standalone.js");

/// The served document, built at its first request: an idle server does not hold it (with the
/// code that builds it, ~4 MB of its memory).
fn spec_json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| serde_json::to_string(&spec()).expect("the OpenAPI document serializes"))
}

/// `/openapi.json`, `/docs` (Swagger UI, vendored) and `/redoc`, all served by the binary; both
/// pages fetch `/openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], spec_json()) }))
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .route(
            "/redoc",
            // The bundle links a logo on a CDN; the page keeps every fetch on this server.
            get(|| async { Html(REDOC_PAGE) }).layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self' 'unsafe-inline' blob:; img-src 'self' data:"),
            )),
        )
        .route("/redoc/redoc.standalone.js", get(|| async { ([(header::CONTENT_TYPE, "application/javascript")], REDOC_SCRIPT) }))
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        // The package declares no license; an empty one would show as "License:".
        openapi.info.license = None;
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "access_token",
                "The cookie set by POST /auth/login (what the SPA and a browser use)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The access_token from the login answer, for API clients"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("rc-...")
                    .description(Some("A personal API key (POST /api/v1/api-keys), for the OpenAI-compatible API under /v1"))
                    .build(),
            ),
        );
    }
}

struct SharedResponses;

fn error_response(description: &str, schema: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build())
        .build()
}

/// The operations of a path, by lower-case method.
pub(crate) fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("post", &mut item.post),
        ("put", &mut item.put),
        ("patch", &mut item.patch),
        ("delete", &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|operation| (method, operation)))
}

/// Documents the 429 of rate-limited operations.
pub(crate) fn document_rate_limit(paths: &mut Paths) {
    for item in paths.paths.values_mut() {
        for (_, operation) in operations_mut(item) {
            operation
                .responses
                .responses
                .entry("429".to_owned())
                .or_insert_with(|| error_response("Rate limit exceeded (see the Retry-After header)", "ErrorDetail").into());
        }
    }
}

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let openai = path.starts_with("/v1/");
            for (method, operation) in operations_mut(item) {
                if openai {
                    add_openai_shared_responses(operation);
                } else {
                    add_shared_responses(method, operation);
                }
            }
        }
    }
}

/// The OpenAI-compatible API's shared refusals, in its own error shape.
fn add_openai_shared_responses(operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_owned()).or_insert_with(|| error_response(description, "OpenAiErrorBody").into());
    };
    add("401", "Missing, unknown, revoked or expired API key, or its owner is deactivated");
    add("429", "Over the key's rate limit (RATE_LIMIT_API_KEY) or the owner's running answers (see Retry-After)");
    if has_body {
        add("400", "The request is not valid");
        add("413", "The request body is too large");
    }
    add("503", "The database is unavailable, or the server is shutting down");
}

fn add_shared_responses(method: &str, operation: &mut Operation) {
    let signed_in = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_input = operation.request_body.is_some() || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let changes_state = method != "get";
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str, schema: &str| {
        responses.entry(status.to_owned()).or_insert_with(|| error_response(description, schema).into());
    };
    if signed_in {
        add("401", "Not authenticated, or the token is invalid, expired or revoked", "ErrorDetail");
        add("400", "The account is deactivated (`Inactive user`)", "ErrorDetail");
        if changes_state {
            add("403", "A cross-site request carrying the session cookie was refused", "ErrorDetail");
        }
    }
    if has_input {
        add("422", "The input is not valid", "ValidationError");
    }
    if operation.request_body.is_some() {
        add("413", "The request body is too large", "ErrorDetail");
    }
    add("503", "The database is unavailable, or the request timed out", "ErrorDetail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_both_auth_schemes() {
        let doc = serde_json::to_value(spec()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["components"]["securitySchemes"]["access_token"]["in"], "cookie");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
