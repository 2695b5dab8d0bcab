//! Who may use which model: one policy per model (enabled, roles, explicit grants, and the
//! defaults a request gets), checked in one place by every way in (chats, `/ollama/chat`, `/v1`)
//! and by the model lists. Policies are read from `models` and `user_model_access` (so grants in
//! an adopted database count) and kept in memory for `USER_CACHE_SECS`; a change made here
//! applies at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::audit::ActionContext;
use super::snapshot::Snapshot;
use super::{ServiceError, ServiceResult};
use crate::ollama::{model_name, ChatRequest, UpstreamMessage};
use crate::store::audit::{AuditAction, AuditTarget};
use crate::store::models::{PolicySave, StoredPolicy};
use crate::store::users::{Role, User};
use crate::store::{Change, Store};
use crate::upstream::Upstreams;

/// A model's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPolicy {
    pub name: String,
    pub enabled: bool,
    pub allowed_roles: Vec<Role>,
    pub user_ids: Vec<Uuid>,
    /// Sent as the system message when a conversation has none.
    pub system_prompt: Option<String>,
    /// Model options a request gets unless it sets them itself.
    pub options: Option<Map<String, Value>>,
}

impl ModelPolicy {
    /// A model without a row: enabled for admins and users, not guests.
    pub fn default_for(name: &str) -> Self {
        ModelPolicy {
            name: name.to_owned(),
            enabled: true,
            allowed_roles: vec![Role::Admin, Role::User],
            user_ids: Vec::new(),
            system_prompt: None,
            options: None,
        }
    }

    fn from_stored(stored: StoredPolicy) -> Self {
        let config = stored.config.unwrap_or(Value::Null);
        let allowed_roles = config
            .get("allowed_roles")
            .and_then(Value::as_array)
            .map(|roles| roles.iter().filter_map(Value::as_str).filter_map(Role::parse).collect())
            .unwrap_or_else(|| ModelPolicy::default_for("").allowed_roles);
        ModelPolicy {
            name: stored.name,
            enabled: stored.enabled,
            allowed_roles,
            user_ids: stored.user_ids,
            system_prompt: config.get("system_prompt").and_then(Value::as_str).map(str::to_owned),
            options: config.get("options").and_then(Value::as_object).cloned(),
        }
    }

    fn to_stored(&self) -> StoredPolicy {
        let roles: Vec<&str> = self.allowed_roles.iter().map(|role| role.as_str()).collect();
        StoredPolicy {
            name: self.name.clone(),
            enabled: self.enabled,
            config: Some(json!({ "allowed_roles": roles, "system_prompt": self.system_prompt, "options": self.options })),
            user_ids: self.user_ids.clone(),
        }
    }

    /// Admins may use everything; others an enabled model their role or a grant opens.
    pub fn allows(&self, user: &User) -> bool {
        user.is_admin() || (self.enabled && (self.allowed_roles.contains(&user.role()) || self.user_ids.contains(&user.id)))
    }
}

/// A change to a policy: `None` keeps a field, `Some(None)` clears a clearable one.
#[derive(Debug, Default)]
pub struct PolicyUpdate {
    pub enabled: Option<bool>,
    pub allowed_roles: Option<Vec<Role>>,
    pub user_ids: Option<Vec<Uuid>>,
    pub system_prompt: Option<Option<String>>,
    pub options: Option<Option<Map<String, Value>>>,
}

type Policies = Arc<HashMap<String, ModelPolicy>>;

/// The policies, cached. Cheap to clone.
#[derive(Clone)]
pub struct ModelAccess {
    store: Store,
    cache: Snapshot<HashMap<String, ModelPolicy>>,
}

impl ModelAccess {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self { store, cache: Snapshot::new(ttl) }
    }

    async fn policies(&self) -> ServiceResult<Policies> {
        self.cache
            .get_or_load(|| async {
                Ok(self
                    .store
                    .model_policies()
                    .await?
                    .into_iter()
                    .map(|p| (p.name.clone(), ModelPolicy::from_stored(p)))
                    .collect())
            })
            .await
    }

    pub fn forget(&self) {
        self.cache.forget();
    }

    pub async fn policy(&self, model: &str) -> ServiceResult<ModelPolicy> {
        Ok(self.policies().await?.get(model).cloned().unwrap_or_else(|| ModelPolicy::default_for(model)))
    }

    /// The model's policy when `user` may use it; 403 otherwise.
    pub async fn check(&self, user: &User, model: &str) -> ServiceResult<ModelPolicy> {
        let policy = self.policy(model).await?;
        if policy.allows(user) {
            Ok(policy)
        } else {
            Err(ServiceError::ModelNotAllowed(model.to_owned()))
        }
    }

    /// Checks the request's model for `user`, then gives it the model's defaults: the system
    /// prompt when the conversation has no system message, and the options it does not set.
    pub async fn admit(&self, user: &User, request: &mut ChatRequest) -> ServiceResult<()> {
        let policy = self.check(user, &request.model).await?;
        if let Some(prompt) = policy.system_prompt.filter(|p| !p.is_empty()) {
            if !request.messages.iter().any(|m| m.role == "system") {
                let system = UpstreamMessage {
                    role: "system".into(),
                    content: prompt,
                    thinking: None,
                    images: None,
                    tool_calls: None,
                    tool_name: None,
                };
                request.messages.insert(0, system);
            }
        }
        if let Some(defaults) = policy.options.filter(|o| !o.is_empty()) {
            let options = request.options.get_or_insert_with(|| json!({}));
            if let Value::Object(options) = options {
                for (name, value) in defaults {
                    options.entry(name).or_insert(value);
                }
            }
        }
        Ok(())
    }

    /// Whether `user` may use each of `models`.
    pub async fn usable(&self, user: &User, models: &[String]) -> ServiceResult<Vec<bool>> {
        let policies = self.policies().await?;
        Ok(models
            .iter()
            .map(|name| policies.get(name).map_or_else(|| ModelPolicy::default_for(name).allows(user), |p| p.allows(user)))
            .collect())
    }

    /// `/ollama/tags` as `user` may see it: only the models they may use.
    pub async fn visible_tags(&self, user: &User, tags: &Value) -> ServiceResult<Value> {
        let mut tags = tags.clone();
        if user.is_admin() {
            return Ok(tags);
        }
        if let Some(models) = tags.get_mut("models").and_then(Value::as_array_mut) {
            let names: Vec<String> = models.iter().map(|m| model_name(m).unwrap_or_default().to_owned()).collect();
            let usable = self.usable(user, &names).await?;
            let mut keep = usable.into_iter();
            models.retain(|_| keep.next().unwrap_or(false));
        }
        Ok(tags)
    }

    /// Every model a provider offers and every model with a row, with its policy, by name.
    pub async fn all(&self, upstreams: &Upstreams) -> ServiceResult<Vec<ModelPolicy>> {
        let mut all: BTreeMap<String, ModelPolicy> = BTreeMap::new();
        match upstreams.tags() {
            Ok(tags) => {
                for model in tags.get("models").and_then(Value::as_array).into_iter().flatten() {
                    let name = model_name(model).unwrap_or_default().to_owned();
                    all.insert(name.clone(), ModelPolicy::default_for(&name));
                }
            }
            // The admin still sees and edits the policies that exist.
            Err(err) => tracing::warn!(error = %err, "listing the upstream's models for the model policies failed"),
        }
        for (name, policy) in self.policies().await?.iter() {
            all.insert(name.clone(), policy.clone());
        }
        Ok(all.into_values().collect())
    }

    /// Changes a model's policy (made from the defaults when it has none); applies at once.
    pub async fn update(
        &self,
        context: &ActionContext,
        admin: &User,
        model: &str,
        update: PolicyUpdate,
    ) -> ServiceResult<ModelPolicy> {
        let mut policy = self.policy(model).await?;
        if let Some(enabled) = update.enabled {
            policy.enabled = enabled;
        }
        if let Some(roles) = update.allowed_roles {
            policy.allowed_roles = roles;
        }
        if let Some(mut user_ids) = update.user_ids {
            user_ids.sort();
            user_ids.dedup();
            policy.user_ids = user_ids;
        }
        if let Some(prompt) = update.system_prompt {
            policy.system_prompt = prompt;
        }
        if let Some(options) = update.options {
            policy.options = options;
        }
        let roles: Vec<&str> = policy.allowed_roles.iter().map(|role| role.as_str()).collect();
        let details = json!({
            "enabled": policy.enabled, "allowed_roles": roles, "user_ids": policy.user_ids,
            "system_prompt_set": policy.system_prompt.is_some(), "options": policy.options,
        });
        let event = context.event(AuditAction::ModelPolicyChanged, Some(AuditTarget::model(model)), details);
        let saved = self.store.save_model_policy(&policy.to_stored(), admin.id, &event).await;
        self.forget();
        self.store.announce(Change::ModelPolicies);
        match saved? {
            PolicySave::Saved => {
                tracing::info!(model, admin_id = %admin.id, "model policy changed");
                Ok(policy)
            }
            PolicySave::UnknownUser(id) => Err(ServiceError::Refused(format!("No user has the id {id}"))),
        }
    }
}
