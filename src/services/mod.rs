//! Behaviour, independent of HTTP: what happens when someone registers, sends a message, ...
//! Services answer [`ServiceError`]; `error.rs` decides what each one looks like on the wire.

pub mod accounts;
pub mod admission;
pub mod api_keys;
pub mod audit;
pub mod chats;
pub mod export;
pub mod generation;
pub mod import;
pub mod model_access;
pub mod models;
pub mod openai;
pub mod providers;
pub mod quotas;
pub mod replicas;
pub mod search;
pub mod settings;
pub mod snapshot;
pub mod stats;
pub mod usage;
pub mod users;

use crate::auth::passwords::HashingError;
use crate::ollama::OllamaError;
use crate::validation::ValidationIssue;

/// Why a service refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field's value breaks a rule only the service can check (a configured bound).
    #[error("invalid input")]
    Invalid(Vec<ValidationIssue>),
    /// The request contradicts the current state (a name is taken, ...).
    #[error("refused: {0}")]
    Refused(String),
    #[error("incorrect username or password")]
    IncorrectLogin,
    #[error("inactive user")]
    InactiveUser,
    /// A token that is not (or no longer) valid.
    #[error("could not validate credentials")]
    InvalidCredentials,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The caller (or the API key) may not use this model.
    #[error("model not allowed: {0}")]
    ModelNotAllowed(String),
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Over a limit on how much one may do at once.
    #[error("limit reached: {limit}")]
    Limited { limit: String, retry_after_secs: u64 },
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Upstream(#[from] OllamaError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Hashing(#[from] HashingError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ServiceResult<T> = Result<T, ServiceError>;
