//! Imported chats: each is written with its messages and its source in one transaction.

use chrono::NaiveDateTime;
use uuid::Uuid;

use super::messages::{NewMessage, INSERT_MESSAGE_INTO};
use super::{in_transaction, Store, TxEnd};

/// A chat read from an export file, ready to be stored for a user.
#[derive(Debug, Clone)]
pub struct ImportedChat {
    /// Where it came from (`chatgpt:<id>`, ...): a chat of a source is imported once per user.
    pub source: String,
    pub title: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub is_archived: bool,
    /// Oldest first, with strictly increasing times (the chat's order is by time).
    pub messages: Vec<(NewMessage, NaiveDateTime)>,
}

/// Messages written by one statement (11 values each, far below both databases' limits).
const MESSAGES_PER_INSERT: usize = 200;

impl Store {
    /// Stores an imported chat for `user_id` under a new id, with its messages and its source,
    /// in one transaction. `None` when this user imported that source already.
    pub async fn import_chat(&self, user_id: Uuid, chat: &ImportedChat) -> Result<Option<Uuid>, sqlx::Error> {
        let chat_id = Uuid::new_v4();
        in_transaction!(self, tx => {
            let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM chat_imports WHERE user_id = $1 AND source = $2")
                .bind(user_id)
                .bind(&chat.source)
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_some() {
                return Ok(TxEnd::Rollback(None));
            }
            sqlx::query(
                "INSERT INTO chats (id, user_id, title, created_at, updated_at, is_archived) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(chat_id)
            .bind(user_id)
            .bind(&chat.title)
            .bind(chat.created_at)
            .bind(chat.updated_at)
            .bind(chat.is_archived)
            .execute(&mut *tx)
            .await?;
            // An import of the same source running at the same time wins the unique key first.
            let recorded = sqlx::query(
                "INSERT INTO chat_imports (chat_id, user_id, source) VALUES ($1, $2, $3) ON CONFLICT (user_id, source) DO NOTHING",
            )
            .bind(chat_id)
            .bind(user_id)
            .bind(&chat.source)
            .execute(&mut *tx)
            .await?;
            if recorded.rows_affected() == 0 {
                return Ok(TxEnd::Rollback(None));
            }
            for rows in chat.messages.chunks(MESSAGES_PER_INSERT) {
                let mut insert = sqlx::QueryBuilder::new(INSERT_MESSAGE_INTO);
                insert.push_values(rows, |mut row, (message, at)| {
                    row.push_bind(Uuid::new_v4())
                        .push_bind(chat_id)
                        .push_bind(&message.role)
                        .push_bind(&message.content)
                        .push_bind(&message.thinking)
                        .push_bind(&message.tool_calls)
                        .push_bind(&message.images)
                        .push_bind(message.model_id)
                        .push_bind(*at)
                        .push_bind(message.tokens_used)
                        .push_bind(&message.extended_metadata);
                });
                insert.build().execute(&mut *tx).await?;
            }
            Ok(TxEnd::Commit(Some(chat_id)))
        })
    }
}
