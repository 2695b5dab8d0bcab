//! The admin's model policies and quotas.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::chats::model_options;
use crate::services::model_access::{ModelPolicy, PolicyUpdate};
use crate::services::quotas::{Limits, QuotaDocument};
use crate::store::users::Role;
use crate::validation::{boolean, parse_uuid, string, too_long_list, BodySize, Fields, FromFields, Problem};

/// Explicit grants one model may hold.
pub const MAX_GRANTS: usize = 1000;
/// The longest default system prompt.
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 32_768;

/// A model's policy as the admin sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelPolicyResponse {
    pub name: String,
    pub enabled: bool,
    pub allowed_roles: Vec<Role>,
    pub user_ids: Vec<Uuid>,
    pub system_prompt: Option<String>,
    #[schema(value_type = Option<crate::schemas::chats::ModelOptionsSchema>)]
    pub options: Option<Map<String, Value>>,
}

impl From<ModelPolicy> for ModelPolicyResponse {
    fn from(policy: ModelPolicy) -> Self {
        ModelPolicyResponse {
            name: policy.name,
            enabled: policy.enabled,
            allowed_roles: policy.allowed_roles,
            user_ids: policy.user_ids,
            system_prompt: policy.system_prompt,
            options: policy.options,
        }
    }
}

/// `PUT /admin/models/{name}`: any of the fields; absent ones keep their value.
#[derive(ToSchema)]
pub struct ModelPolicyChange {
    pub enabled: Option<bool>,
    /// A subset of `admin`, `user`, `guest`.
    pub allowed_roles: Option<Vec<Role>>,
    /// Users granted the model whatever their role (at most 1000).
    pub user_ids: Option<Vec<Uuid>>,
    /// Sent as the system message when a conversation has none; `null` clears it.
    #[schema(max_length = 32768)]
    pub system_prompt: Option<String>,
    /// Options a request gets unless it sets them (the same allow-list as requests); `null` clears them.
    #[schema(value_type = Option<crate::schemas::chats::ModelOptionsSchema>)]
    pub options: Option<Map<String, Value>>,
}

fn roles(value: &Value) -> Result<Vec<Role>, Problem> {
    let Value::Array(items) = value else { return Err(Problem::new("list_type", "Input should be a valid list")) };
    let mut roles = Vec::new();
    for item in items {
        let role = Role::from_value(item)?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

fn user_ids(value: &Value) -> Result<Vec<Uuid>, Problem> {
    let Value::Array(items) = value else { return Err(Problem::new("list_type", "Input should be a valid list")) };
    if items.len() > MAX_GRANTS {
        return Err(too_long_list(MAX_GRANTS, items.len()));
    }
    items
        .iter()
        .map(|item| item.as_str().ok_or_else(|| Problem::new("uuid_type", "UUID input should be a string")).and_then(parse_uuid))
        .collect()
}

impl FromFields for PolicyUpdate {
    const BODY_SIZE: BodySize = BodySize::Medium;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let enabled = f.optional("enabled", boolean);
        let allowed_roles = f.optional("allowed_roles", roles);
        let user_ids = f.optional("user_ids", user_ids);
        let system_prompt = f.patch("system_prompt", string(0, MAX_SYSTEM_PROMPT_CHARS)).into_update();
        let options = match f.patch("options", |_| Ok(())) {
            crate::validation::Patch::Absent => None,
            crate::validation::Patch::Null => Some(None),
            crate::validation::Patch::Value(()) => f.optional_object("options", model_options).map(Some),
        };
        Some(PolicyUpdate { enabled, allowed_roles, user_ids, system_prompt, options })
    }
}

/// The largest daily limit (and number of answers at once) one can set.
const MAX_LIMIT: i64 = 1_000_000_000_000;

fn limit(value: &Value) -> Result<i64, Problem> {
    crate::validation::query_int(0, Some(MAX_LIMIT))(value)
}

fn limits(f: &mut Fields<'_>) -> Option<Limits> {
    let tokens_per_day = f.optional("tokens_per_day", limit);
    let requests_per_day = f.optional("requests_per_day", limit);
    let concurrent_generations = f.optional("concurrent_generations", limit);
    for (name, input) in f.entries() {
        if !["tokens_per_day", "requests_per_day", "concurrent_generations"].contains(&name) {
            f.fail(name, input, Problem::new("extra_forbidden", "Extra inputs are not permitted"));
        }
    }
    Some(Limits { tokens_per_day, requests_per_day, concurrent_generations })
}

/// `PUT /admin/quotas`: the whole document; a role left out gets its built-in limits.
pub struct QuotaChange(pub QuotaDocument);

impl FromFields for QuotaChange {
    const BODY_SIZE: BodySize = BodySize::Medium;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let roles = f.optional_object("roles", |r| {
            let mut roles = BTreeMap::new();
            for (name, _) in r.entries() {
                match Role::parse(name) {
                    Some(role) => {
                        if let Some(l) = r.optional_object(name, limits) {
                            roles.insert(role, l);
                        }
                    }
                    None => r.fail(name, &json!(name), Problem::new("enum", "Input should be 'guest', 'user' or 'admin'")),
                }
            }
            Some(roles)
        });
        let users = f.optional_object("users", |u| {
            let mut users = BTreeMap::new();
            for (id, _) in u.entries() {
                match parse_uuid(id) {
                    Ok(user_id) => {
                        if let Some(l) = u.optional_object(id, limits) {
                            users.insert(user_id, l);
                        }
                    }
                    Err(problem) => u.fail(id, &json!(id), problem),
                }
            }
            Some(users)
        });
        Some(QuotaChange(QuotaDocument { roles: roles.unwrap_or_default(), users: users.unwrap_or_default() }))
    }
}

/// `{name}` of `/admin/models/{name}`: a model name, URL-encoded (it may contain `:` and `/`).
pub struct ModelNamePath {
    pub name: String,
}

impl FromFields for ModelNamePath {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ModelNamePath { name: f.required("name", string(1, 100))? })
    }
}
