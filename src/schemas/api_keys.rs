use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::serialize_utc;
use crate::services::api_keys::CreatedKey;
use crate::store::api_keys::ApiKeyRecord;
use crate::validation::{query_int, string_list, too_long_list, BodySize, Fields, FromFields, Problem, Text};

pub type KeyName = Text<1, 100>;
/// Models one key may be narrowed to.
pub const MAX_KEY_MODELS: usize = 100;

/// `POST /api-keys`.
#[derive(ToSchema)]
pub struct ApiKeyCreate {
    #[schema(inline, value_type = KeyName)]
    pub name: String,
    /// 1 to 3650 days; `null` or absent: the key never expires.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<i64>,
    /// The models the key may use (at most 100 names); `null` or absent: every model its owner may use.
    #[schema(value_type = Option<Vec<String>>)]
    pub models: Option<Vec<String>>,
    /// Tokens the key may spend per UTC day (on top of its owner's quota); `null`: no own limit.
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub tokens_per_day: Option<i64>,
}

fn model_names(value: &Value) -> Result<Vec<String>, Problem> {
    let names = string_list(value)?;
    if names.len() > MAX_KEY_MODELS {
        return Err(too_long_list(MAX_KEY_MODELS, names.len()));
    }
    if names.iter().any(|name| name.is_empty() || name.chars().count() > 255) {
        return Err(Problem::new("string_too_long", "Model names have 1 to 255 characters"));
    }
    Ok(names)
}

impl FromFields for ApiKeyCreate {
    const BODY_SIZE: BodySize = BodySize::Small;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let name = f.required("name", KeyName::parse);
        let expires_in_days = f.optional("expires_in_days", query_int(1, Some(3650)));
        let models = f.optional("models", model_names);
        let tokens_per_day = f.optional("tokens_per_day", query_int(0, None));
        Some(ApiKeyCreate { name: name?.into_string(), expires_in_days, models, tokens_per_day })
    }
}

/// A key as its owner (or an admin) sees it: never the key or its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub models: Option<Vec<String>>,
    pub tokens_per_day: Option<i64>,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<NaiveDateTime>,
}

impl From<ApiKeyRecord> for ApiKeyResponse {
    fn from(key: ApiKeyRecord) -> Self {
        ApiKeyResponse {
            models: crate::services::api_keys::key_models(&key),
            id: key.id,
            user_id: key.user_id,
            name: key.name,
            prefix: key.prefix,
            tokens_per_day: key.tokens_per_day,
            created_at: Some(key.created_at),
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
        }
    }
}

/// The answer to `POST /api-keys`: the key, shown this once, and its description.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKeyResponse {
    /// `rc-` and 48 random characters. Only shown now: keep it somewhere safe.
    pub key: String,
    #[serde(flatten)]
    pub described: ApiKeyResponse,
}

impl From<CreatedKey> for CreatedApiKeyResponse {
    fn from(created: CreatedKey) -> Self {
        CreatedApiKeyResponse { key: created.key, described: created.record.into() }
    }
}

/// `GET /admin/api-keys?user_id=`.
pub struct AdminKeyQuery {
    pub user_id: Option<Uuid>,
}

impl FromFields for AdminKeyQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(AdminKeyQuery { user_id: f.optional("user_id", crate::validation::uuid_any) })
    }
}

/// `{key_id}` in paths.
pub struct KeyPath {
    pub key_id: Uuid,
}

impl FromFields for KeyPath {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(KeyPath { key_id: f.required("key_id", crate::validation::uuid_any)? })
    }
}
