//! The admin's providers: requests (`POST`, `PUT`) and what is answered (never an API key).

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::serialize_utc;
use crate::services::providers::{ProviderDraft, ProviderUpdate, ProviderView};
use crate::upstream::{ProviderKind, ProviderStatus};
use crate::validation::{boolean, string, BodySize, Fields, FromFields, Problem};

pub const NAME_MAX_CHARS: usize = 100;
/// The `api_url` column is `VARCHAR(255)`.
pub const BASE_URL_MAX_CHARS: usize = 255;
pub const API_KEY_MAX_CHARS: usize = 4096;
pub const MODEL_PREFIX_MAX_CHARS: usize = 50;
pub const MAX_PRIORITY: i64 = 1000;

/// `POST /admin/providers`.
#[derive(ToSchema)]
pub struct ProviderCreate {
    /// Letters, digits, `.`, `_` and `-`; unique. Shown to users next to its models.
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._-]+$", example = "gpu-box-2")]
    pub name: String,
    /// `ollama` (default) or `openai` (an OpenAI-compatible server).
    #[schema(value_type = Option<String>, example = "ollama")]
    pub kind: Option<String>,
    /// `http(s)://host[:port][/path]`: Ollama's address, or the OpenAI-compatible API's base.
    #[schema(max_length = 255, example = "http://10.0.0.12:11434")]
    pub base_url: String,
    /// Sent as `Authorization: Bearer`; stored encrypted, never shown again.
    #[schema(max_length = 4096)]
    pub api_key: Option<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
    /// -1000 to 1000, default 0: among equally good providers, the higher is chosen.
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i64>,
    /// Prepended to its model names (to tell apart two providers offering the same name).
    #[schema(max_length = 50, example = "cloud/")]
    pub model_prefix: Option<String>,
}

/// `PUT /admin/providers/{provider_id}`: any of the fields; absent ones keep their value, `null`
/// clears `api_key` and `model_prefix`.
#[derive(ToSchema)]
pub struct ProviderChangeRequest {
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: Option<String>,
    #[schema(value_type = Option<String>)]
    pub kind: Option<String>,
    #[schema(max_length = 255)]
    pub base_url: Option<String>,
    #[schema(max_length = 4096)]
    pub api_key: Option<String>,
    pub enabled: Option<bool>,
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i64>,
    #[schema(max_length = 50)]
    pub model_prefix: Option<String>,
}

fn name(value: &Value) -> Result<String, Problem> {
    let name = string(1, NAME_MAX_CHARS)(value)?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(Problem::new("string_pattern_mismatch", "String should match pattern '^[A-Za-z0-9._-]+$'")
            .with_ctx(serde_json::json!({"pattern": "^[A-Za-z0-9._-]+$"})));
    }
    Ok(name)
}

fn base_url(value: &Value) -> Result<String, Problem> {
    let text = string(1, BASE_URL_MAX_CHARS)(value)?;
    let trimmed = text.trim().trim_end_matches('/').to_owned();
    let parsed =
        url::Url::parse(&trimmed).map_err(|err| Problem::new("url_parsing", format!("Input should be a valid URL, {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Problem::new("url_scheme", "URL scheme should be 'http' or 'https'"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.host_str().is_none_or(str::is_empty) {
        return Err(Problem::new("url_parsing", "Input should be a valid URL, with a host and without query or fragment"));
    }
    Ok(trimmed)
}

fn priority(value: &Value) -> Result<i32, Problem> {
    crate::validation::query_int(-MAX_PRIORITY, Some(MAX_PRIORITY))(value).map(|n| i32::try_from(n).expect("bounded to ±1000"))
}

fn model_prefix(value: &Value) -> Result<String, Problem> {
    let prefix = string(1, MODEL_PREFIX_MAX_CHARS)(value)?;
    if prefix.chars().any(char::is_whitespace) {
        return Err(Problem::new("string_pattern_mismatch", "String should not contain whitespace"));
    }
    Ok(prefix)
}

impl FromFields for ProviderDraft {
    const BODY_SIZE: BodySize = BodySize::Small;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let name = f.required("name", name);
        let kind = f.optional("kind", ProviderKind::from_value).unwrap_or(ProviderKind::Ollama);
        let base_url = f.required("base_url", base_url);
        let api_key = f.optional("api_key", string(1, API_KEY_MAX_CHARS));
        let enabled = f.optional("enabled", boolean).unwrap_or(true);
        let priority = f.optional("priority", priority).unwrap_or(0);
        let model_prefix = f.optional("model_prefix", model_prefix);
        Some(ProviderDraft { name: name?, kind, base_url: base_url?, api_key, enabled, priority, model_prefix })
    }
}

impl FromFields for ProviderUpdate {
    const BODY_SIZE: BodySize = BodySize::Small;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ProviderUpdate {
            name: f.optional("name", name),
            kind: f.optional("kind", ProviderKind::from_value),
            base_url: f.optional("base_url", base_url),
            api_key: f.patch("api_key", string(1, API_KEY_MAX_CHARS)).into_update(),
            enabled: f.optional("enabled", boolean),
            priority: f.optional("priority", priority),
            model_prefix: f.patch("model_prefix", model_prefix).into_update(),
        })
    }
}

/// A provider as the admin sees it: never its API key, only whether it has one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderResponse {
    pub id: Uuid,
    pub name: String,
    /// `ollama` or `openai`.
    pub kind: String,
    pub base_url: String,
    pub enabled: bool,
    pub priority: i32,
    pub model_prefix: Option<String>,
    pub has_api_key: bool,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<NaiveDateTime>,
    /// What this server knows of it now.
    pub status: ProviderStatus,
}

impl From<ProviderView> for ProviderResponse {
    fn from(view: ProviderView) -> Self {
        let row = view.row;
        ProviderResponse {
            enabled: row.enabled(),
            has_api_key: row.api_key_encrypted.is_some(),
            id: row.id,
            name: row.name,
            kind: row.kind,
            base_url: row.api_url,
            priority: row.priority,
            model_prefix: row.model_prefix,
            created_at: row.created_at,
            updated_at: row.updated_at,
            status: view.status,
        }
    }
}

/// `{provider_id}` in paths.
pub struct ProviderPath {
    pub provider_id: Uuid,
}

impl FromFields for ProviderPath {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ProviderPath { provider_id: f.required("provider_id", crate::validation::uuid_any)? })
    }
}
