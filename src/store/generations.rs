use chrono::NaiveDateTime;
use uuid::Uuid;

use super::{on_pool, Store};

/// A row of `generations`: one model answer, however it ended, kept for usage and quotas. It
/// outlives its chat, its API key and its user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenerationRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub chat_id: Option<Uuid>,
    pub model: String,
    pub provider: Option<String>,
    pub status: String,
    pub started_at: NaiveDateTime,
    pub ended_at: Option<NaiveDateTime>,
    pub first_token_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl Store {
    pub async fn record_generation(&self, record: &GenerationRecord) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO generations (id, user_id, api_key_id, chat_id, model, provider, status, started_at, ended_at, \
                   first_token_ms, duration_ms, prompt_tokens, completion_tokens) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(record.id)
                .bind(record.user_id)
                .bind(record.api_key_id)
                .bind(record.chat_id)
                .bind(&record.model)
                .bind(&record.provider)
                .bind(&record.status)
                .bind(record.started_at)
                .bind(record.ended_at)
                .bind(record.first_token_ms)
                .bind(record.duration_ms)
                .bind(record.prompt_tokens)
                .bind(record.completion_tokens)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
