//! Login attempts per account (or unknown name), counted in fixed windows in the database so
//! that every replica enforces one budget.

use chrono::NaiveDateTime;

use super::{on_pool, Store};

/// The window an attempt was counted in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginWindow {
    pub attempts: i32,
    pub window_started_at: NaiveDateTime,
}

impl Store {
    /// Counts one attempt for `subject`: in its current window, or in a new one starting `now`
    /// when the current one started before `expired_before`.
    pub async fn count_login_attempt(
        &self,
        subject: &str,
        now: NaiveDateTime,
        expired_before: NaiveDateTime,
    ) -> Result<LoginWindow, sqlx::Error> {
        let sql = "INSERT INTO login_attempts (subject, window_started_at, attempts) VALUES ($1, $2, 1) \
                   ON CONFLICT (subject) DO UPDATE SET \
                   attempts = CASE WHEN login_attempts.window_started_at <= $3 THEN 1 ELSE login_attempts.attempts + 1 END, \
                   window_started_at = CASE WHEN login_attempts.window_started_at <= $3 THEN $2 \
                                       ELSE login_attempts.window_started_at END \
                   RETURNING attempts, window_started_at";
        on_pool!(self, pool => sqlx::query_as(sql).bind(subject).bind(now).bind(expired_before).fetch_one(pool).await)
    }

    /// Forgets windows that started before `before` (they have ended).
    pub async fn prune_login_attempts(&self, before: NaiveDateTime) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM login_attempts WHERE window_started_at < $1")
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }
}
