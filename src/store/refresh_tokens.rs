use chrono::NaiveDateTime;
use uuid::Uuid;

use super::audit::{self, NewAuditEvent};
use super::{in_transaction, on_pool, TxEnd};

use super::Store;

/// A row of `refresh_tokens`: one refresh token of a login's chain.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshTokenRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub issued_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

/// Revokes every refresh token of user `$1` at time `$2` (ends all their sessions).
pub(super) const REVOKE_USERS_TOKENS: &str =
    "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";

impl Store {
    /// Records a newly issued refresh token (and forgets the user's expired ones).
    pub async fn record_refresh_token(&self, record: &RefreshTokenRecord) -> Result<(), sqlx::Error> {
        in_transaction!(self, tx => {
            sqlx::query(
                "INSERT INTO refresh_tokens (id, user_id, family_id, issued_at, expires_at, used_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
            )
            .bind(record.id)
            .bind(record.user_id)
            .bind(record.family_id)
            .bind(record.issued_at)
            .bind(record.expires_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1 AND expires_at < $2")
                .bind(record.user_id)
                .bind(record.issued_at)
                .execute(&mut *tx)
                .await?;
            Ok(TxEnd::Commit(()))
        })
    }

    pub async fn refresh_token(&self, id: Uuid) -> Result<Option<RefreshTokenRecord>, sqlx::Error> {
        let sql = "SELECT id, user_id, family_id, issued_at, expires_at, used_at, revoked_at FROM refresh_tokens WHERE id = $1";
        on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
    }

    /// Marks the token used, if nobody did before; true when this call did.
    pub async fn use_refresh_token(&self, id: Uuid, at: NaiveDateTime) -> Result<bool, sqlx::Error> {
        let changed = on_pool!(self, pool => {
            sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL")
                .bind(id)
                .bind(at)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Revokes every token of a login's chain (a retired token was presented again), with the
    /// audit event of the reuse.
    pub async fn revoke_refresh_family(
        &self,
        family_id: Uuid,
        at: NaiveDateTime,
        event: &NewAuditEvent,
    ) -> Result<(), sqlx::Error> {
        in_transaction!(self, tx => {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                .bind(family_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            audit::record(&mut *tx, event).await?;
            Ok(TxEnd::Commit(()))
        })
    }
}
