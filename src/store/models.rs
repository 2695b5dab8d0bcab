use chrono::NaiveDateTime;
use serde_json::Value;
use uuid::Uuid;

use super::on_pool;

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
