use std::collections::HashMap;

use chrono::NaiveDateTime;
use uuid::Uuid;

use super::{in_transaction, on_pool, TxEnd};

use super::messages::{Message, MESSAGE_COLUMNS};
use super::Store;

/// A row of `chats`.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Chat {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub title: Option<String>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub is_archived: Option<bool>,
}

pub const DEFAULT_CHAT_TITLE: &str = "New Chat";

/// A no-op write that takes the chat row's lock (and SQLite's write lock) for the transaction.
const LOCK_USER_CHAT: &str = "UPDATE chats SET updated_at = updated_at WHERE id = $1 AND user_id = $2";

const CHAT_COLUMNS: &str = "id, user_id, title, created_at, updated_at, is_archived";

/// A page of a user's chats and how many match in all.
pub struct ChatPage {
    pub total: i64,
    pub chats: Vec<Chat>,
}

impl Store {
    pub async fn create_chat(&self, user_id: Uuid, title: &str, at: NaiveDateTime) -> Result<Chat, sqlx::Error> {
        let sql = format!(
            "INSERT INTO chats (id, user_id, title, created_at, updated_at, is_archived) \
             VALUES ($1, $2, $3, $4, $4, FALSE) RETURNING {CHAT_COLUMNS}"
        );
        on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(Uuid::new_v4()).bind(user_id).bind(title).bind(at).fetch_one(pool).await
        })
    }

    /// The chat when it exists and belongs to `user_id` (a foreign chat reads as missing).
    pub async fn user_chat(&self, user_id: Uuid, chat_id: Uuid) -> Result<Option<Chat>, sqlx::Error> {
        let sql = format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id = $1 AND user_id = $2");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(chat_id).bind(user_id).fetch_optional(pool).await)
    }

    /// Newest activity first.
    pub async fn list_chats(
        &self,
        user_id: Uuid,
        include_archived: bool,
        skip: i64,
        limit: i64,
    ) -> Result<ChatPage, sqlx::Error> {
        let filter = "user_id = $1 AND ($2 OR NOT COALESCE(is_archived, FALSE))";
        let count_sql = format!("SELECT COUNT(*) FROM chats WHERE {filter}");
        let page_sql = format!("SELECT {CHAT_COLUMNS} FROM chats WHERE {filter} ORDER BY updated_at DESC, id LIMIT $3 OFFSET $4");
        on_pool!(self, pool => {
            let total: i64 = sqlx::query_scalar(&count_sql).bind(user_id).bind(include_archived).fetch_one(pool).await?;
            let chats = sqlx::query_as(&page_sql)
                .bind(user_id)
                .bind(include_archived)
                .bind(limit)
                .bind(skip)
                .fetch_all(pool)
                .await?;
            Ok(ChatPage { total, chats })
        })
    }

    /// Up to `limit` of the user's chats with ids after `after`, by id, each with its messages
    /// (oldest first): the pages of an export. Two queries, whatever the number of chats.
    pub async fn chats_with_messages_by_id(
        &self,
        user_id: Uuid,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<(Chat, Vec<Message>)>, sqlx::Error> {
        let page = "SELECT id FROM chats WHERE user_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3";
        let chats_sql = format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id IN ({page}) ORDER BY id");
        let messages_sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id IN ({page}) ORDER BY chat_id, created_at, id");
        let (chats, messages): (Vec<Chat>, Vec<Message>) = on_pool!(self, pool => {
            let chats = sqlx::query_as(&chats_sql).bind(user_id).bind(after).bind(limit).fetch_all(pool).await?;
            let messages = sqlx::query_as(&messages_sql).bind(user_id).bind(after).bind(limit).fetch_all(pool).await?;
            (chats, messages)
        });
        let mut by_chat: HashMap<Uuid, Vec<Message>> = HashMap::new();
        for message in messages {
            if let Some(chat_id) = message.chat_id {
                by_chat.entry(chat_id).or_default().push(message);
            }
        }
        Ok(chats
            .into_iter()
            .map(|chat| {
                let messages = by_chat.remove(&chat.id).unwrap_or_default();
                (chat, messages)
            })
            .collect())
    }

    /// Renames and/or (un)archives a chat of `user_id`, moving its `updated_at`.
    pub async fn update_chat(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        title: Option<&str>,
        is_archived: Option<bool>,
        at: NaiveDateTime,
    ) -> Result<Option<Chat>, sqlx::Error> {
        let sql = format!(
            "UPDATE chats SET title = COALESCE($3, title), is_archived = COALESCE($4, is_archived), updated_at = $5 \
             WHERE id = $1 AND user_id = $2 RETURNING {CHAT_COLUMNS}"
        );
        on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(chat_id).bind(user_id).bind(title).bind(is_archived).bind(at).fetch_optional(pool).await
        })
    }

    /// Sets the title while it is still the default one; returns the chat's title afterwards.
    pub async fn title_untitled_chat(&self, chat_id: Uuid, title: &str) -> Result<Option<String>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE chats SET title = $2 WHERE id = $1 AND title = $3")
                .bind(chat_id)
                .bind(title)
                .bind(DEFAULT_CHAT_TITLE)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT title FROM chats WHERE id = $1").bind(chat_id).fetch_optional(pool).await.map(Option::flatten)
        })
    }

    /// Deletes one chat of `user_id` and its messages. False when there was no such chat.
    pub async fn delete_chat(&self, user_id: Uuid, chat_id: Uuid) -> Result<bool, sqlx::Error> {
        in_transaction!(self, tx => {
            // Lock the chat row first: a message being added concurrently (which updates the
            // same row first) then waits, and finds the chat gone, instead of slipping a row
            // in between our two deletes.
            let locked = sqlx::query(LOCK_USER_CHAT).bind(chat_id).bind(user_id).execute(&mut *tx).await?;
            if locked.rows_affected() == 0 {
                return Ok(TxEnd::Rollback(false));
            }
            sqlx::query("DELETE FROM messages WHERE chat_id = $1").bind(chat_id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM chats WHERE id = $1").bind(chat_id).execute(&mut *tx).await?;
            Ok(TxEnd::Commit(true))
        })
    }

    /// Deletes all chats of `user_id` and their messages; returns the ids of the deleted chats.
    pub async fn delete_all_chats(&self, user_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
        // Lock the user's chats in one order (by id), so two of these, or one and a delete of a
        // single chat, wait for each other instead of deadlocking. SQLite serialises writers.
        let lock = if self.is_postgres() {
            "SELECT id FROM chats WHERE user_id = $1 ORDER BY id FOR UPDATE"
        } else {
            "UPDATE chats SET updated_at = updated_at WHERE user_id = $1"
        };
        in_transaction!(self, tx => {
            sqlx::query(lock).bind(user_id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM messages WHERE chat_id IN (SELECT id FROM chats WHERE user_id = $1)")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let ids: Vec<Uuid> = sqlx::query_scalar("DELETE FROM chats WHERE user_id = $1 RETURNING id")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
            Ok(TxEnd::Commit(ids))
        })
    }
}

impl Store {
    /// How many chats and messages are stored, of everyone.
    pub async fn chat_and_message_counts(&self) -> Result<(i64, i64), sqlx::Error> {
        let sql = "SELECT (SELECT COUNT(*) FROM chats), (SELECT COUNT(*) FROM messages)";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_one(pool).await)
    }
}
