use serde_json::Value;
use uuid::Uuid;

use crate::on_pool;

use super::Store;

/// A row of `user_settings`.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct UserSettings {
    pub user_id: Uuid,
    pub default_model_id: Option<Uuid>,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub preferences: Option<Value>,
}

const SETTINGS_COLUMNS: &str = "user_id, default_model_id, display_name, avatar_url, preferences";

impl Store {
    pub async fn settings(&self, user_id: Uuid) -> Result<Option<UserSettings>, sqlx::Error> {
        let sql = format!("SELECT {SETTINGS_COLUMNS} FROM user_settings WHERE user_id = $1");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_optional(pool).await)
    }

    /// The user's settings, created with the default display name when missing.
    /// `Ok(None)` when the user does not exist.
    pub async fn settings_or_default(&self, user_id: Uuid, display_name: &str) -> Result<Option<UserSettings>, sqlx::Error> {
        if let Some(found) = self.settings(user_id).await? {
            return Ok(Some(found));
        }
        let inserted = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO user_settings (user_id, display_name) \
                 SELECT id, $2 FROM users WHERE id = $1 \
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(display_name)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        inserted?;
        self.settings(user_id).await
    }

    /// Writes every column of the row (the service merged the partial update).
    pub async fn save_settings(&self, settings: &UserSettings) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE user_settings SET default_model_id = $2, display_name = $3, avatar_url = $4, preferences = $5 \
                 WHERE user_id = $1",
            )
            .bind(settings.user_id)
            .bind(settings.default_model_id)
            .bind(&settings.display_name)
            .bind(&settings.avatar_url)
            .bind(&settings.preferences)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    pub async fn delete_settings(&self, user_id: Uuid) -> Result<bool, sqlx::Error> {
        let result = on_pool!(self, pool => {
            sqlx::query("DELETE FROM user_settings WHERE user_id = $1").bind(user_id).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(result > 0)
    }
}
