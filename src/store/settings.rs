use serde_json::Value;
use uuid::Uuid;

use super::audit::{self, NewAuditEvent};
use super::{in_transaction, on_pool, TxEnd};

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

/// A partial update: `None` leaves a column as it is, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct SettingsChanges {
    pub default_model_id: Option<Option<Uuid>>,
    pub display_name: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub preferences: Option<Option<Value>>,
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

    /// Sets only the fields that `changes` names, in one statement, so concurrent updates of
    /// different fields both hold; with the audit event of an audited change (an admin's).
    /// `Ok(None)` when the row does not exist.
    pub async fn update_settings(
        &self,
        user_id: Uuid,
        changes: &SettingsChanges,
        event: Option<&NewAuditEvent>,
    ) -> Result<Option<UserSettings>, sqlx::Error> {
        let mut assignments = Vec::new();
        let mut push = |column: &str, given: bool| {
            if given {
                assignments.push(format!("{column} = ${}", assignments.len() + 2));
            }
        };
        push("default_model_id", changes.default_model_id.is_some());
        push("display_name", changes.display_name.is_some());
        push("avatar_url", changes.avatar_url.is_some());
        push("preferences", changes.preferences.is_some());
        if assignments.is_empty() {
            return self.settings(user_id).await;
        }
        let sql = format!("UPDATE user_settings SET {} WHERE user_id = $1 RETURNING {SETTINGS_COLUMNS}", assignments.join(", "));
        in_transaction!(self, tx => {
            let mut query = sqlx::query_as(&sql).bind(user_id);
            if let Some(value) = &changes.default_model_id {
                query = query.bind(*value);
            }
            if let Some(value) = &changes.display_name {
                query = query.bind(value.clone());
            }
            if let Some(value) = &changes.avatar_url {
                query = query.bind(value.clone());
            }
            if let Some(value) = &changes.preferences {
                query = query.bind(value.clone());
            }
            let updated: Option<UserSettings> = query.fetch_optional(&mut *tx).await?;
            match (&updated, event) {
                (None, _) => return Ok(TxEnd::Rollback(None)),
                (Some(_), Some(event)) => audit::record(&mut *tx, event).await?,
                (Some(_), None) => {}
            }
            Ok(TxEnd::Commit(updated))
        })
    }

    /// Deletes the user's settings with the audit event of the deletion; false when there were none.
    pub async fn delete_settings(&self, user_id: Uuid, event: &NewAuditEvent) -> Result<bool, sqlx::Error> {
        in_transaction!(self, tx => {
            let deleted = sqlx::query("DELETE FROM user_settings WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
            if deleted.rows_affected() == 0 {
                return Ok(TxEnd::Rollback(false));
            }
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(true))
        })
    }
}
