//! The one error type of the HTTP layer. Every failure becomes a FastAPI-style `{"detail": ...}`
//! answer; 5xx causes go to the log, never into the body. The mapping of what services, the
//! database, the upstream and password hashing report to statuses lives here, once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::passwords::HashingError;
use crate::ollama::OllamaError;
use crate::services::generation::GenerationError;
use crate::services::ServiceError;
use crate::validation::ValidationIssue;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422 with the list of `{type, loc, msg, input, ctx}` the SPA shows.
    #[error("validation failed")]
    Validation(Vec<ValidationIssue>),
    /// No credentials at all.
    #[error("not authenticated")]
    NotAuthenticated,
    /// Credentials present but not valid (bad signature, expired, revoked, unknown user).
    #[error("could not validate credentials")]
    InvalidCredentials,
    #[error("incorrect username or password")]
    IncorrectLogin,
    #[error("inactive user")]
    InactiveUser,
    #[error("not an admin user")]
    NotAdmin,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("model not allowed: {0}")]
    ModelNotAllowed(String),
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A problem with an upstream service (Ollama), with the status we answer.
    #[error("upstream: {detail}")]
    Upstream { status: StatusCode, detail: String },
    #[error("rate limit exceeded: {limit}")]
    TooManyRequests { limit: String, retry_after_secs: u64 },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// 503 with `Retry-After`: the server is saturated right now.
    #[error("overloaded: {detail}")]
    Overloaded { detail: &'static str, retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotAuthenticated | ApiError::InvalidCredentials | ApiError::IncorrectLogin => StatusCode::UNAUTHORIZED,
            ApiError::InactiveUser | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAdmin | ApiError::Forbidden(_) | ApiError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream { status, .. } => *status,
            ApiError::DatabaseUnavailable(_) | ApiError::Unavailable(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid(issues) => ApiError::Validation(issues),
            ServiceError::Refused(detail) => ApiError::BadRequest(detail),
            ServiceError::IncorrectLogin => ApiError::IncorrectLogin,
            ServiceError::InactiveUser => ApiError::InactiveUser,
            ServiceError::InvalidCredentials => ApiError::InvalidCredentials,
            ServiceError::Forbidden(detail) => ApiError::Forbidden(detail),
            ServiceError::ModelNotAllowed(model) => ApiError::ModelNotAllowed(model),
            ServiceError::NotFound(detail) => ApiError::NotFound(detail),
            ServiceError::Conflict(detail) => ApiError::Conflict(detail),
            ServiceError::Limited { limit, retry_after_secs } => ApiError::TooManyRequests { limit, retry_after_secs },
            ServiceError::Unavailable(detail) => ApiError::Unavailable(detail),
            ServiceError::Upstream(err) => err.into(),
            ServiceError::Database(err) => err.into(),
            ServiceError::Hashing(err) => err.into(),
            ServiceError::Internal(err) => ApiError::Internal(err),
        }
    }
}

/// Unknown model 404, other upstream 4xx 400, upstream 5xx or unreachable 502, timeout 504;
/// the detail is Ollama's message, never its address.
impl From<OllamaError> for ApiError {
    fn from(err: OllamaError) -> Self {
        let status = match &err {
            OllamaError::Upstream { status, .. } if *status == StatusCode::NOT_FOUND => StatusCode::NOT_FOUND,
            OllamaError::Upstream { status, .. } if status.is_client_error() => StatusCode::BAD_REQUEST,
            OllamaError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::Upstream { status, detail: err.to_string() }
    }
}

impl From<GenerationError> for ApiError {
    fn from(err: GenerationError) -> Self {
        match err {
            GenerationError::Ollama(err) => err.into(),
            GenerationError::QuestionNotStored => ApiError::Unavailable("Your message could not be stored"),
            GenerationError::Interrupted => ApiError::internal(GenerationError::Interrupted),
            GenerationError::ServerLost => ApiError::Unavailable("The server generating this answer stopped before it ended"),
            GenerationError::Elsewhere(detail) => ApiError::Upstream { status: StatusCode::BAD_GATEWAY, detail },
        }
    }
}

impl From<HashingError> for ApiError {
    fn from(err: HashingError) -> Self {
        match err {
            HashingError::Busy => {
                ApiError::Overloaded { detail: "Too many sign-ins at once; please try again in a moment", retry_after_secs: 2 }
            }
            HashingError::Abandoned => ApiError::Unavailable("Request timed out"),
            HashingError::Failed(err) => ApiError::Internal(err),
        }
    }
}

/// An unreachable database answers 503 "Database unavailable"; a conflict that persisted after
/// the transaction's retries, 503 "busy"; anything else is an internal error.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::store::is_connection_error(&err) {
            ApiError::DatabaseUnavailable(err)
        } else if crate::store::is_transient_conflict(&err) {
            tracing::warn!(error = %err, "a database conflict persisted after retries");
            ApiError::Unavailable("The database is busy; please try again")
        } else {
            ApiError::Internal(anyhow::Error::new(err).context("database query failed"))
        }
    }
}

impl ApiError {
    /// What the answer's `detail` says. 5xx causes go to the log here, never into the answer.
    fn detail(&self) -> serde_json::Value {
        match self {
            ApiError::Validation(issues) => serde_json::to_value(issues).unwrap_or_default(),
            ApiError::NotAuthenticated => json!("Not authenticated"),
            ApiError::InvalidCredentials => json!("Could not validate credentials"),
            ApiError::IncorrectLogin => json!("Incorrect username or password"),
            ApiError::InactiveUser => json!("Inactive user"),
            ApiError::NotAdmin => json!("Not an admin user"),
            ApiError::PayloadTooLarge => json!("Request body too large"),
            ApiError::TooManyRequests { limit, .. } => json!(format!("Rate limit exceeded: {limit}")),
            ApiError::Forbidden(msg) | ApiError::NotFound(msg) | ApiError::Conflict(msg) | ApiError::Unavailable(msg) => {
                json!(msg)
            }
            ApiError::BadRequest(msg) => json!(msg),
            ApiError::ModelNotAllowed(model) => json!(format!("You may not use model {model}")),
            ApiError::Overloaded { detail, .. } => json!(detail),
            ApiError::Upstream { status, detail } => {
                if status.is_server_error() {
                    tracing::warn!(status = status.as_u16(), cause = %detail, "the upstream failed");
                }
                json!(detail)
            }
            ApiError::DatabaseUnavailable(err) => {
                tracing::error!(error = ?err, "database unavailable");
                json!("Database unavailable")
            }
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), cause = ?err.root_cause(), "internal error");
                json!("Internal server error")
            }
        }
    }

    /// When the client may try again (`Retry-After`), for refusals that pass.
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests { retry_after_secs, .. } | ApiError::Overloaded { retry_after_secs, .. } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(json!({ "detail": self.detail() }))).into_response();
        if let Some(retry_after_secs) = self.retry_after_secs() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The one error type of the OpenAI-compatible API (`/v1`): `{"error": {"message", "type",
/// "param", "code"}}` with the status the official SDKs map to their exception classes. Every
/// failure the rest of the server reports ([`ApiError`], [`ServiceError`]) converts to it, so
/// the statuses are decided once; a 422 becomes OpenAI's 400.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
    code: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        OpenAiError { status, message: message.into(), param: None, code: None, retry_after_secs: None }
    }

    pub fn invalid_api_key(message: &str) -> Self {
        OpenAiError { code: Some("invalid_api_key"), ..Self::new(StatusCode::UNAUTHORIZED, message) }
    }

    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        OpenAiError { param: param.map(str::to_owned), ..Self::new(StatusCode::BAD_REQUEST, message) }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("The model `{model}` does not exist or you do not have access to it."))
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 409 | 413 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        self.code.or(match self.status.as_u16() {
            404 => Some("model_not_found"),
            429 => Some("rate_limit_exceeded"),
            _ => None,
        })
    }

    /// The body, also sent as an event when a stream fails after it began.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "message": self.message, "type": self.kind(), "param": self.param, "code": self.code() } })
    }
}

impl From<ApiError> for OpenAiError {
    fn from(err: ApiError) -> Self {
        if let ApiError::Validation(issues) = &err {
            let Some(issue) = issues.first() else { return OpenAiError::invalid_request("Invalid request", None) };
            let param: Vec<String> =
                issue.loc.iter().skip(1).map(|part| part.as_str().map_or_else(|| part.to_string(), str::to_owned)).collect();
            return OpenAiError::invalid_request(issue.msg.clone(), (!param.is_empty()).then(|| param.join(".")).as_deref());
        }
        let detail = err.detail();
        let message = detail.as_str().map_or_else(|| detail.to_string(), str::to_owned);
        OpenAiError { retry_after_secs: err.retry_after_secs(), ..OpenAiError::new(err.status(), message) }
    }
}

impl From<ServiceError> for OpenAiError {
    fn from(err: ServiceError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<GenerationError> for OpenAiError {
    fn from(err: GenerationError) -> Self {
        ApiError::from(err).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(retry_after_secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
