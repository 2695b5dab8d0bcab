use chrono::NaiveDateTime;
use uuid::Uuid;

use super::audit::{self, NewAuditEvent};
use super::{in_transaction, on_pool, Store, TxEnd};

/// A row of `quotas`: the limits of a role (`scope = "role"`) or of one user (`"user"`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QuotaRow {
    pub scope: String,
    pub subject: String,
    pub tokens_per_day: Option<i64>,
    pub requests_per_day: Option<i64>,
    pub concurrent_generations: Option<i64>,
}

/// What a user (and one of their keys) used since a moment.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct UsedSince {
    pub requests: i64,
    pub tokens: i64,
    pub key_tokens: i64,
}

impl Store {
    pub async fn quotas(&self) -> Result<Vec<QuotaRow>, sqlx::Error> {
        let sql =
            "SELECT scope, subject, tokens_per_day, requests_per_day, concurrent_generations FROM quotas ORDER BY scope, subject";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
    }

    /// Replaces every quota at once.
    pub async fn replace_quotas(&self, rows: &[QuotaRow], event: &NewAuditEvent) -> Result<(), sqlx::Error> {
        in_transaction!(self, tx => {
            sqlx::query("DELETE FROM quotas").execute(&mut *tx).await?;
            for row in rows {
                sqlx::query(
                    "INSERT INTO quotas (scope, subject, tokens_per_day, requests_per_day, concurrent_generations) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&row.scope)
                .bind(&row.subject)
                .bind(row.tokens_per_day)
                .bind(row.requests_per_day)
                .bind(row.concurrent_generations)
                .execute(&mut *tx)
                .await?;
            }
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(()))
        })
    }

    /// The user's generations and tokens since `since`, and the tokens of `key_id` among them:
    /// one query on the `(user_id, started_at)` index.
    pub async fn used_since(&self, user_id: Uuid, since: NaiveDateTime, key_id: Option<Uuid>) -> Result<UsedSince, sqlx::Error> {
        let sql = "SELECT COUNT(*) AS requests, \
                   CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens, \
                   CAST(COALESCE(SUM(CASE WHEN api_key_id = $3 THEN prompt_tokens + completion_tokens ELSE 0 END), 0) AS BIGINT) AS key_tokens \
                   FROM generations WHERE user_id = $1 AND started_at >= $2";
        on_pool!(self, pool => sqlx::query_as(sql).bind(user_id).bind(since).bind(key_id).fetch_one(pool).await)
    }
}
