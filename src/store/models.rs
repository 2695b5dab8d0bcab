use chrono::NaiveDateTime;
use serde_json::Value;
use uuid::Uuid;

use super::audit::{self, NewAuditEvent};
use super::{in_transaction, on_pool, TxEnd};

use super::Store;

/// A row of `models`: a model an admin registered (the original never wrote any).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelRecord {
    pub id: Uuid,
    pub provider_id: Option<Uuid>,
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub config: Option<Value>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub is_active: Option<bool>,
}

/// A row of `model_providers`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRecord {
    pub id: Uuid,
    pub name: String,
    pub api_url: String,
    pub auth_type: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: Option<NaiveDateTime>,
    pub is_active: Option<bool>,
}

impl Store {
    pub async fn active_models(&self) -> Result<Vec<ModelRecord>, sqlx::Error> {
        let sql = "SELECT id, provider_id, name, display_name, description, config, created_at, updated_at, is_active \
                   FROM models WHERE COALESCE(is_active, TRUE) ORDER BY name, id";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
    }

    pub async fn active_providers(&self) -> Result<Vec<ProviderRecord>, sqlx::Error> {
        let sql = "SELECT id, name, api_url, auth_type, created_by, created_at, is_active \
                   FROM model_providers WHERE COALESCE(is_active, TRUE) ORDER BY name, id";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
    }

    /// The id of the registered model with this name, if an admin registered it.
    pub async fn model_id_by_name(&self, name: &str) -> Result<Option<Uuid>, sqlx::Error> {
        let sql = "SELECT id FROM models WHERE name = $1 ORDER BY created_at LIMIT 1";
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(name).fetch_optional(pool).await)
    }
}

/// A model's access rules as stored: its `models` row and its active grants.
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    pub name: String,
    pub enabled: bool,
    /// `models.config`: `allowed_roles`, `system_prompt`, `options` (rows adopted from the
    /// original may hold anything, or nothing).
    pub config: Option<Value>,
    pub user_ids: Vec<Uuid>,
}

/// Why a policy was not saved.
#[derive(Debug)]
pub enum PolicySave {
    Saved,
    UnknownUser(Uuid),
}

impl Store {
    /// Every model row with its active grants (`user_model_access`), by name. Of several rows
    /// with one name (possible in an adopted database), the oldest speaks.
    pub async fn model_policies(&self) -> Result<Vec<StoredPolicy>, sqlx::Error> {
        let models: Vec<(Uuid, String, Option<bool>, Option<Value>)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, name, is_active, config FROM models ORDER BY name, created_at, id").fetch_all(pool).await
        })?;
        let grants: Vec<(Uuid, Uuid)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT model_id, user_id FROM user_model_access \
                 WHERE COALESCE(is_active, TRUE) AND model_id IS NOT NULL AND user_id IS NOT NULL ORDER BY granted_at, id",
            )
            .fetch_all(pool)
            .await
        })?;
        let mut policies: Vec<StoredPolicy> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (id, name, is_active, config) in models {
            if !seen.insert(name.clone()) {
                continue;
            }
            let user_ids = grants.iter().filter(|(model_id, _)| *model_id == id).map(|(_, user_id)| *user_id).collect();
            policies.push(StoredPolicy { name, enabled: is_active.unwrap_or(true), config, user_ids });
        }
        Ok(policies)
    }

    /// Writes a model's rules: its row (made when missing) and its grants, replaced whole, in one
    /// transaction.
    pub async fn save_model_policy(
        &self,
        policy: &StoredPolicy,
        granted_by: Uuid,
        event: &NewAuditEvent,
    ) -> Result<PolicySave, sqlx::Error> {
        let at = event.occurred_at;
        in_transaction!(self, tx => {
            for user_id in &policy.user_ids {
                let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)").bind(user_id).fetch_one(&mut *tx).await?;
                if !exists {
                    return Ok(TxEnd::Rollback(PolicySave::UnknownUser(*user_id)));
                }
            }
            let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM models WHERE name = $1 ORDER BY created_at, id LIMIT 1")
                .bind(&policy.name)
                .fetch_optional(&mut *tx)
                .await?;
            let model_id = match existing {
                Some(id) => {
                    sqlx::query("UPDATE models SET is_active = $2, config = $3, updated_at = $4 WHERE id = $1")
                        .bind(id)
                        .bind(policy.enabled)
                        .bind(&policy.config)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    id
                }
                None => {
                    let id = Uuid::new_v4();
                    sqlx::query(
                        "INSERT INTO models (id, provider_id, name, display_name, description, config, created_at, updated_at, is_active) \
                         VALUES ($1, NULL, $2, NULL, NULL, $3, $4, $4, $5)",
                    )
                    .bind(id)
                    .bind(&policy.name)
                    .bind(&policy.config)
                    .bind(at)
                    .bind(policy.enabled)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
            };
            sqlx::query("DELETE FROM user_model_access WHERE model_id = $1").bind(model_id).execute(&mut *tx).await?;
            for user_id in &policy.user_ids {
                sqlx::query(
                    "INSERT INTO user_model_access (id, user_id, model_id, granted_by, granted_at, is_active) VALUES ($1, $2, $3, $4, $5, TRUE)",
                )
                .bind(Uuid::new_v4())
                .bind(user_id)
                .bind(model_id)
                .bind(granted_by)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(PolicySave::Saved))
        })
    }
}
