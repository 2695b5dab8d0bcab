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

/// Usage of one model by one user on one UTC day.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub model: String,
    pub user_id: Uuid,
    pub username: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl Store {
    /// Generations started in `[from, until)`, of one user or everyone, summed per day, model
    /// and user.
    pub async fn usage(
        &self,
        from: NaiveDateTime,
        until: NaiveDateTime,
        user_id: Option<Uuid>,
    ) -> Result<Vec<UsageRow>, sqlx::Error> {
        // Timestamps are `timestamp` on PostgreSQL and ISO text on SQLite.
        let day = if self.is_postgres() { "to_char(g.started_at, 'YYYY-MM-DD')" } else { "substr(g.started_at, 1, 10)" };
        let sql = format!(
            "SELECT {day} AS day, g.model, g.user_id, u.username, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(g.prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(g.completion_tokens), 0) AS BIGINT) AS completion_tokens \
             FROM generations g LEFT JOIN users u ON u.id = g.user_id \
             WHERE g.started_at >= $1 AND g.started_at < $2 AND ($3 IS NULL OR g.user_id = $3) \
             GROUP BY {day}, g.model, g.user_id, u.username ORDER BY 1, 2"
        );
        on_pool!(self, pool => sqlx::query_as(&sql).bind(from).bind(until).bind(user_id).fetch_all(pool).await)
    }
}
