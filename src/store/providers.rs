//! `model_providers`: the upstreams answers come from (the original's table, extended by
//! migration 0009), and the provider a chat's last answer came from.

use chrono::NaiveDateTime;
use uuid::Uuid;

use super::audit::{self, NewAuditEvent};
use super::{in_transaction, on_pool, Store, TxEnd};

/// A row of `model_providers`. `is_active` is whether it is enabled and `api_url` its base URL
/// (the original's names); rows adopted from the original have NULL where it wrote nothing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRow {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub api_url: String,
    pub auth_type: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub is_active: Option<bool>,
    pub priority: i32,
    pub model_prefix: Option<String>,
    /// Sealed by `upstream::keys::KeyCipher`; never the key itself.
    pub api_key_encrypted: Option<String>,
}

impl ProviderRow {
    pub fn enabled(&self) -> bool {
        self.is_active.unwrap_or(true)
    }
}

const COLUMNS: &str = "id, name, kind, api_url, auth_type, created_by, created_at, updated_at, is_active, priority, \
                       model_prefix, api_key_encrypted";

/// Why a change was not made.
#[derive(Debug, PartialEq, Eq)]
pub enum ProviderChange {
    Done,
    NameTaken,
    NotFound,
}

impl Store {
    /// Every provider, the preferred first.
    pub async fn providers(&self) -> Result<Vec<ProviderRow>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM model_providers ORDER BY priority DESC, name, id");
        on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await)
    }

    pub async fn provider(&self, id: Uuid) -> Result<Option<ProviderRow>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM model_providers WHERE id = $1");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)
    }

    /// Adds a provider, with its audit event.
    pub async fn create_provider(&self, row: &ProviderRow, event: &NewAuditEvent) -> Result<ProviderChange, sqlx::Error> {
        in_transaction!(self, tx => {
            let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM model_providers WHERE name = $1)")
                .bind(&row.name)
                .fetch_one(&mut *tx)
                .await?;
            if taken {
                return Ok(TxEnd::Rollback(ProviderChange::NameTaken));
            }
            sqlx::query(&format!(
                "INSERT INTO model_providers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(row.id)
            .bind(&row.name)
            .bind(&row.kind)
            .bind(&row.api_url)
            .bind(&row.auth_type)
            .bind(row.created_by)
            .bind(row.created_at)
            .bind(row.updated_at)
            .bind(row.is_active)
            .bind(row.priority)
            .bind(&row.model_prefix)
            .bind(&row.api_key_encrypted)
            .execute(&mut *tx)
            .await?;
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(ProviderChange::Done))
        })
    }

    /// Writes every changeable column of `row`, with its audit event.
    pub async fn update_provider(&self, row: &ProviderRow, event: &NewAuditEvent) -> Result<ProviderChange, sqlx::Error> {
        in_transaction!(self, tx => {
            let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM model_providers WHERE name = $1 AND id <> $2)")
                .bind(&row.name)
                .bind(row.id)
                .fetch_one(&mut *tx)
                .await?;
            if taken {
                return Ok(TxEnd::Rollback(ProviderChange::NameTaken));
            }
            let updated = sqlx::query(
                "UPDATE model_providers SET name = $2, kind = $3, api_url = $4, auth_type = $5, is_active = $6, priority = $7, \
                 model_prefix = $8, api_key_encrypted = $9, updated_at = $10 WHERE id = $1",
            )
            .bind(row.id)
            .bind(&row.name)
            .bind(&row.kind)
            .bind(&row.api_url)
            .bind(&row.auth_type)
            .bind(row.is_active)
            .bind(row.priority)
            .bind(&row.model_prefix)
            .bind(&row.api_key_encrypted)
            .bind(row.updated_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(TxEnd::Rollback(ProviderChange::NotFound));
            }
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(ProviderChange::Done))
        })
    }

    /// Deletes a provider (models registered under it keep their row, without it).
    pub async fn delete_provider(&self, id: Uuid, event: &NewAuditEvent) -> Result<ProviderChange, sqlx::Error> {
        in_transaction!(self, tx => {
            sqlx::query("UPDATE models SET provider_id = NULL WHERE provider_id = $1").bind(id).execute(&mut *tx).await?;
            let deleted = sqlx::query("DELETE FROM model_providers WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
            if deleted == 0 {
                return Ok(TxEnd::Rollback(ProviderChange::NotFound));
            }
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(ProviderChange::Done))
        })
    }

    /// Adds an Ollama provider at `url` unless one has that URL already, under the first of
    /// `names` nobody has. Safe when replicas start at once: the unique name decides, and the
    /// loser finds the winner's row by its URL.
    pub async fn ensure_ollama_provider(&self, url: &str, names: impl IntoIterator<Item = String>) -> Result<(), sqlx::Error> {
        for name in names {
            let known: bool = on_pool!(self, pool => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM model_providers WHERE api_url = $1 AND kind = 'ollama')")
                    .bind(url)
                    .fetch_one(pool)
                    .await
            })?;
            if known {
                return Ok(());
            }
            let at = super::now();
            let inserted = on_pool!(self, pool => {
                sqlx::query(
                    "INSERT INTO model_providers (id, name, kind, api_url, is_active, priority, created_at, updated_at) \
                     VALUES ($1, $2, 'ollama', $3, TRUE, 0, $4, $4) ON CONFLICT (name) DO NOTHING",
                )
                .bind(Uuid::new_v4())
                .bind(&name)
                .bind(url)
                .bind(at)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
            })?;
            if inserted > 0 {
                tracing::info!(provider = %name, "Ollama provider added from OLLAMA_BASE_URL");
                return Ok(());
            }
        }
        Ok(())
    }

    /// The provider of the chat's last answer that recorded one.
    pub async fn last_provider_of_chat(&self, chat_id: Uuid) -> Result<Option<String>, sqlx::Error> {
        let sql = "SELECT provider FROM generations WHERE chat_id = $1 AND provider IS NOT NULL ORDER BY started_at DESC LIMIT 1";
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(chat_id).fetch_optional(pool).await)
    }
}
