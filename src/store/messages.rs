use chrono::NaiveDateTime;
use serde_json::Value;
use uuid::Uuid;

use super::{in_transaction, on_pool, TxEnd};

use super::Store;

/// A row of `messages`.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub chat_id: Option<Uuid>,
    pub role: String,
    pub content: String,
    pub thinking: Option<String>,
    pub tool_calls: Option<Value>,
    pub images: Option<Value>,
    pub model_id: Option<Uuid>,
    pub created_at: Option<NaiveDateTime>,
    pub tokens_used: Option<i32>,
    pub extended_metadata: Option<Value>,
}

/// A message to append to a chat.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub role: String,
    pub content: String,
    pub thinking: Option<String>,
    pub tool_calls: Option<Value>,
    pub images: Option<Value>,
    pub model_id: Option<Uuid>,
    pub tokens_used: i32,
    pub extended_metadata: Option<Value>,
}

pub(super) const MESSAGE_COLUMNS: &str =
    "id, chat_id, role, content, thinking, tool_calls, images, model_id, created_at, tokens_used, extended_metadata";

/// Followed by the values: id, chat_id, role, content, thinking, tool_calls, images, model_id,
/// created_at, tokens_used, extended_metadata.
pub(super) const INSERT_MESSAGE_INTO: &str =
    "INSERT INTO messages (id, chat_id, role, content, thinking, tool_calls, images, model_id, created_at, tokens_used, extended_metadata) ";

/// Moves the chat's `updated_at`, only when it belongs to the user: zero rows means "not yours".
pub(super) const TOUCH_USER_CHAT: &str = "UPDATE chats SET updated_at = $3 WHERE id = $1 AND user_id = $2";

/// Inside `in_transaction!`: appends `$new` to the chat `$chat_id` of `$user_id` and moves the
/// chat's `updated_at`; evaluates to the stored message, or `None` when the chat is not the
/// user's (nothing written then).
macro_rules! append_message {
    ($tx:ident, $id:expr, $user_id:expr, $chat_id:expr, $new:expr, $at:expr) => {{
        // Write first: on SQLite this takes the write lock at once instead of upgrading later.
        let touched = sqlx::query($crate::store::messages::TOUCH_USER_CHAT)
            .bind($chat_id)
            .bind($user_id)
            .bind($at)
            .execute(&mut *$tx)
            .await?;
        if touched.rows_affected() == 0 {
            None
        } else {
            let new: &$crate::store::messages::NewMessage = $new;
            let message: $crate::store::messages::Message = sqlx::query_as(&$crate::store::messages::insert_message_returning())
                .bind($id)
                .bind($chat_id)
                .bind(&new.role)
                .bind(&new.content)
                .bind(&new.thinking)
                .bind(&new.tool_calls)
                .bind(&new.images)
                .bind(new.model_id)
                .bind($at)
                .bind(new.tokens_used)
                .bind(&new.extended_metadata)
                .fetch_one(&mut *$tx)
                .await?;
            Some(message)
        }
    }};
}
pub(crate) use append_message;

pub(super) fn insert_message_returning() -> String {
    format!("{INSERT_MESSAGE_INTO} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {MESSAGE_COLUMNS}")
}

impl Store {
    /// Appends a message to a chat of `user_id` and moves the chat's `updated_at`, in one
    /// transaction. `Ok(None)` when the chat is missing or foreign.
    pub async fn add_message(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        new: &NewMessage,
        at: NaiveDateTime,
    ) -> Result<Option<Message>, sqlx::Error> {
        self.add_message_with_id(Uuid::new_v4(), user_id, chat_id, new, at).await
    }

    /// [`Store::add_message`] with an id chosen by the caller (known before the write).
    pub async fn add_message_with_id(
        &self,
        id: Uuid,
        user_id: Uuid,
        chat_id: Uuid,
        new: &NewMessage,
        at: NaiveDateTime,
    ) -> Result<Option<Message>, sqlx::Error> {
        in_transaction!(self, tx => {
            let message = append_message!(tx, id, user_id, chat_id, new, at);
            Ok(if message.is_some() { TxEnd::Commit(message) } else { TxEnd::Rollback(None) })
        })
    }

    /// The chat's messages, oldest first.
    pub async fn chat_messages(&self, chat_id: Uuid) -> Result<Vec<Message>, sqlx::Error> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1 ORDER BY created_at, id");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(chat_id).fetch_all(pool).await)
    }

    pub async fn chat_message(&self, chat_id: Uuid, message_id: Uuid) -> Result<Option<Message>, sqlx::Error> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND chat_id = $2");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(message_id).bind(chat_id).fetch_optional(pool).await)
    }

    /// Writes a message's content and metadata, moving the chat's `updated_at`.
    pub async fn edit_message(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        message_id: Uuid,
        content: &str,
        extended_metadata: Option<&Value>,
        at: NaiveDateTime,
    ) -> Result<Option<Message>, sqlx::Error> {
        let update = format!(
            "UPDATE messages SET content = $3, extended_metadata = $4 WHERE id = $1 AND chat_id = $2 RETURNING {MESSAGE_COLUMNS}"
        );
        in_transaction!(self, tx => {
            let touched = sqlx::query(TOUCH_USER_CHAT).bind(chat_id).bind(user_id).bind(at).execute(&mut *tx).await?;
            if touched.rows_affected() == 0 {
                return Ok(TxEnd::Rollback(None));
            }
            let message = sqlx::query_as(&update)
                .bind(message_id)
                .bind(chat_id)
                .bind(content)
                .bind(extended_metadata)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(message) = message else { return Ok(TxEnd::Rollback(None)) };
            Ok(TxEnd::Commit(Some(message)))
        })
    }

    /// Deletes the given messages of a chat of `user_id`; returns the ids that were deleted
    /// (ids of other chats or unknown ids are left alone). Moves the chat's `updated_at`.
    pub async fn delete_messages(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        message_ids: &[Uuid],
        at: NaiveDateTime,
    ) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
        in_transaction!(self, tx => {
            let touched = sqlx::query(TOUCH_USER_CHAT).bind(chat_id).bind(user_id).bind(at).execute(&mut *tx).await?;
            if touched.rows_affected() == 0 {
                return Ok(TxEnd::Rollback(None));
            }
            let mut deleted = Vec::with_capacity(message_ids.len());
            for id in message_ids {
                let gone: Option<Uuid> = sqlx::query_scalar("DELETE FROM messages WHERE id = $1 AND chat_id = $2 RETURNING id")
                    .bind(id)
                    .bind(chat_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                deleted.extend(gone);
            }
            // Nothing deleted: the chat's `updated_at` stays as it was.
            if deleted.is_empty() {
                return Ok(TxEnd::Rollback(Some(deleted)));
            }
            Ok(TxEnd::Commit(Some(deleted)))
        })
    }
}
