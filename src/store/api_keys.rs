use chrono::NaiveDateTime;
use serde_json::Value;
use uuid::Uuid;

use super::audit::{self, NewAuditEvent};
use super::{in_transaction, on_pool, Store, TxEnd};

/// A row of `api_keys`. The key itself is never stored: `key_hash` is its SHA-256 (hex).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    /// `None`: every model the owner may use; a JSON list of names narrows it.
    pub models: Option<Value>,
    pub tokens_per_day: Option<i64>,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

const COLUMNS: &str =
    "id, user_id, name, key_hash, prefix, models, tokens_per_day, created_at, expires_at, last_used_at, revoked_at";

/// Why a key was not created.
#[derive(Debug)]
pub enum KeyCreation {
    Created,
    /// The owner already has this many live keys.
    TooMany,
}

impl Store {
    /// Adds `key` unless its owner already has `max_per_user` keys that are neither revoked nor
    /// expired (counted and inserted in one transaction).
    pub async fn create_api_key(
        &self,
        key: &ApiKeyRecord,
        max_per_user: i64,
        event: &NewAuditEvent,
    ) -> Result<KeyCreation, sqlx::Error> {
        in_transaction!(self, tx => {
            // Serialises concurrent creations for one owner (a no-op update takes the row lock on
            // PostgreSQL; SQLite writers are serialised anyway).
            sqlx::query("UPDATE users SET id = id WHERE id = $1").bind(key.user_id).execute(&mut *tx).await?;
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(key.user_id)
            .bind(key.created_at)
            .fetch_one(&mut *tx)
            .await?;
            if live >= max_per_user {
                return Ok(TxEnd::Rollback(KeyCreation::TooMany));
            }
            sqlx::query(
                "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, models, tokens_per_day, created_at, expires_at, last_used_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)",
            )
            .bind(key.id)
            .bind(key.user_id)
            .bind(&key.name)
            .bind(&key.key_hash)
            .bind(&key.prefix)
            .bind(&key.models)
            .bind(key.tokens_per_day)
            .bind(key.created_at)
            .bind(key.expires_at)
            .execute(&mut *tx)
            .await?;
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(KeyCreation::Created))
        })
    }

    /// The keys that are not revoked, newest first; of one owner, or of everyone.
    pub async fn api_keys(&self, user_id: Option<Uuid>) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE revoked_at IS NULL AND ($1 IS NULL OR user_id = $1) \
             ORDER BY created_at DESC, id"
        );
        on_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await)
    }

    /// The key with this hash, revoked or not; from the row cache when it holds a fresh copy.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<std::sync::Arc<ApiKeyRecord>>, sqlx::Error> {
        let key_hash = key_hash.to_owned();
        let ticket = match self.api_keys.get(&key_hash) {
            Ok(key) => return Ok(Some(key)),
            Err(ticket) => ticket,
        };
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        let key: Option<ApiKeyRecord> = on_pool!(self, pool => sqlx::query_as(&sql).bind(&key_hash).fetch_optional(pool).await)?;
        let key = key.map(std::sync::Arc::new);
        if let Some(key) = &key {
            self.api_keys.put(ticket, key_hash, key);
        }
        Ok(key)
    }

    /// Revokes a live key (of `owner` when given); true when this call revoked it. The cached
    /// copy is forgotten, so the key stops working at once in this process.
    pub async fn revoke_api_key(&self, id: Uuid, owner: Option<Uuid>, event: &NewAuditEvent) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND ($2 IS NULL OR user_id = $2) AND revoked_at IS NULL \
                   RETURNING key_hash";
        let revoked: Option<String> = in_transaction!(self, tx => {
            let revoked: Option<String> =
                sqlx::query_scalar(sql).bind(id).bind(owner).bind(event.occurred_at).fetch_optional(&mut *tx).await?;
            if revoked.is_none() {
                return Ok(TxEnd::Rollback(None));
            }
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(revoked))
        })?;
        if let Some(key_hash) = &revoked {
            self.api_keys.forget(key_hash);
            self.announce(super::Change::ApiKey { key_hash: key_hash.clone() });
        }
        Ok(revoked.is_some())
    }

    /// Records when the key was last used (callers write it at most once a minute per key).
    pub async fn touch_api_key(&self, id: Uuid, at: NaiveDateTime) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1").bind(id).bind(at).execute(pool).await.map(|_| ())
        })
    }
}
