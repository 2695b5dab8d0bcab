use chrono::NaiveDateTime;
use uuid::Uuid;

use super::messages::{append_message, Message, NewMessage};
use super::{in_transaction, on_pool, Store, TxEnd};

/// A generation as it starts: its row says `running`, owned by this process.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    pub id: Uuid,
    pub user_id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub chat_id: Option<Uuid>,
    pub model: String,
    pub owner_instance: Uuid,
    pub user_message_id: Option<Uuid>,
    pub started_at: NaiveDateTime,
}

/// Why a generation could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefusal {
    /// The chat has a running generation (on any replica).
    ChatBusy,
    /// The user has this many generations running already (on all replicas together).
    TooManyAtOnce(usize),
}

/// How a generation ended, for its row.
#[derive(Debug, Clone)]
pub struct GenerationEnd {
    pub id: Uuid,
    pub status: String,
    pub provider: Option<String>,
    pub ended_at: NaiveDateTime,
    pub first_token_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub detail: Option<String>,
    pub by: EndedBy,
}

/// Who ends a generation.
#[derive(Debug, Clone)]
pub enum EndedBy {
    /// The process that ran it. Its start was committed without waiting for the disk (see
    /// [`Store::start_generation`]): when a database crash lost the row, it is written again,
    /// ended, so the answer is still kept.
    Owner(NewGeneration),
    /// A process that takes the owner for dead: only while the row's heartbeat is still this one.
    Recovery { unchanged_heartbeat: Option<NaiveDateTime> },
}

/// What ending a generation wrote.
#[derive(Debug, Clone)]
pub enum EndWritten {
    /// Ended now, with its answer when one was given and the chat still exists.
    Ended(Option<Box<Message>>),
    /// It was not running any more (ended elsewhere, or recovered as interrupted meanwhile).
    NotRunning,
}

/// A row of `generations`, as replicas read each other's.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenerationRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub chat_id: Option<Uuid>,
    pub model: String,
    pub status: String,
    pub owner_instance: Option<Uuid>,
    pub started_at: NaiveDateTime,
    pub heartbeat_at: Option<NaiveDateTime>,
    pub first_token_ms: Option<i64>,
    pub user_message_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub detail: Option<String>,
    pub checkpoint: Option<String>,
    pub checkpoint_pieces: i64,
}

const GENERATION_COLUMNS: &str = "id, user_id, chat_id, model, status, owner_instance, started_at, heartbeat_at, \
    first_token_ms, user_message_id, message_id, detail, checkpoint, checkpoint_pieces";

/// The row of a generation whose start was lost, written as it ended: the start's columns
/// ([`bind_start!`]) then the end's ([`bind_end!`]).
const RESTORE_ENDED: &str = "INSERT INTO generations (id, user_id, api_key_id, chat_id, model, owner_instance, started_at, \
    heartbeat_at, user_message_id, status, provider, ended_at, first_token_ms, duration_ms, prompt_tokens, \
    completion_tokens, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
    ON CONFLICT (id) DO NOTHING";

/// Binds a generation's start to the next eight parameters.
macro_rules! bind_start {
    ($query:expr, $new:expr) => {
        $query
            .bind($new.id)
            .bind($new.user_id)
            .bind($new.api_key_id)
            .bind($new.chat_id)
            .bind(&$new.model)
            .bind($new.owner_instance)
            .bind($new.started_at)
            .bind($new.user_message_id)
    };
}

/// Binds a generation's end to the next eight parameters.
macro_rules! bind_end {
    ($query:expr, $end:expr) => {
        $query
            .bind(&$end.status)
            .bind(&$end.provider)
            .bind($end.ended_at)
            .bind($end.first_token_ms)
            .bind($end.duration_ms)
            .bind($end.prompt_tokens)
            .bind($end.completion_tokens)
            .bind(&$end.detail)
    };
}

const END_RUNNING: &str = "UPDATE generations SET status = $2, provider = COALESCE($3, provider), ended_at = $4, \
    first_token_ms = $5, duration_ms = $6, prompt_tokens = $7, completion_tokens = $8, detail = $9, checkpoint = NULL \
    WHERE id = $1 AND status = 'running'";

impl Store {
    /// Writes the generation's `running` row. Refused when its chat has a running generation,
    /// or when the user would have more than `max_running` running, counted across every
    /// replica (a dead replica's count until it is recovered).
    pub async fn start_generation(
        &self,
        new: &NewGeneration,
        max_running: Option<usize>,
    ) -> Result<Result<(), StartRefusal>, sqlx::Error> {
        let insert = "INSERT INTO generations (id, user_id, api_key_id, chat_id, model, status, owner_instance, started_at, \
                      heartbeat_at, user_message_id) VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $7, $8)";
        let count = "SELECT COUNT(*) FROM generations WHERE user_id = $1 AND status = 'running'";
        // The commit does not wait for the disk (its flush was ~0.35 ms of the ~1 ms a /v1 stream
        // adds to the time to first token): the generation's first heartbeat, or any later commit, makes the row
        // durable, and an owner whose row a crash lost writes it again when the answer ends
        // (`EndedBy::Owner`). Two replicas starting for the same user at once count one after
        // the other (the advisory lock).
        let postgres_setup = match (self.is_postgres(), max_running.is_some()) {
            (false, _) => None,
            (true, false) => Some("SELECT set_config('synchronous_commit', 'off', true)"),
            (true, true) => {
                Some("SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(hashtextextended($1, 0))")
            }
        };
        in_transaction!(self, tx => {
            if let Some(setup) = postgres_setup {
                let mut query = sqlx::query(setup);
                if max_running.is_some() {
                    query = query.bind(new.user_id.to_string());
                }
                query.execute(&mut *tx).await?;
            }
            let inserted = bind_start!(sqlx::query(insert), new).execute(&mut *tx).await;
            match inserted {
                Err(err) if super::unique_violation(&err).is_some() => return Ok(TxEnd::Rollback(Err(StartRefusal::ChatBusy))),
                other => other?,
            };
            if let Some(limit) = max_running {
                let running: i64 = sqlx::query_scalar(count).bind(new.user_id).fetch_one(&mut *tx).await?;
                if usize::try_from(running).unwrap_or(usize::MAX) > limit {
                    return Ok(TxEnd::Rollback(Err(StartRefusal::TooManyAtOnce(limit))));
                }
            }
            Ok(TxEnd::Commit(Ok(())))
        })
    }

    /// Ends a running generation and stores its answer (`chat`, `message`) in the same
    /// transaction, so an answer is stored once even when two replicas race to end it.
    pub async fn end_generation(
        &self,
        end: &GenerationEnd,
        answer: Option<(Uuid, Uuid, &NewMessage)>,
    ) -> Result<EndWritten, sqlx::Error> {
        let unchanged_heartbeat = match &end.by {
            EndedBy::Recovery { unchanged_heartbeat } => *unchanged_heartbeat,
            EndedBy::Owner(_) => None,
        };
        let sql = match unchanged_heartbeat {
            Some(_) => format!("{END_RUNNING} AND heartbeat_at = $10"),
            None => END_RUNNING.to_owned(),
        };
        in_transaction!(self, tx => {
            let ended = bind_end!(sqlx::query(&sql).bind(end.id), end).bind(unchanged_heartbeat).execute(&mut *tx).await?;
            if ended.rows_affected() == 0 {
                let EndedBy::Owner(started) = &end.by else { return Ok(TxEnd::Rollback(EndWritten::NotRunning)) };
                let restored = bind_end!(bind_start!(sqlx::query(RESTORE_ENDED), started), end).execute(&mut *tx).await?;
                if restored.rows_affected() == 0 {
                    return Ok(TxEnd::Rollback(EndWritten::NotRunning));
                }
                tracing::warn!(generation_id = %end.id, "the generation's row was missing (lost by the database); written again as it ended");
            }
            let Some((user_id, chat_id, new)) = answer else { return Ok(TxEnd::Commit(EndWritten::Ended(None))) };
            let message = append_message!(tx, Uuid::new_v4(), user_id, chat_id, new, end.ended_at);
            if let Some(message) = &message {
                sqlx::query("UPDATE generations SET message_id = $2 WHERE id = $1").bind(end.id).bind(message.id).execute(&mut *tx).await?;
            }
            Ok(TxEnd::Commit(EndWritten::Ended(message.map(Box::new))))
        })
    }

    /// Marks this process's running generations alive.
    pub async fn beat_heart(&self, owner_instance: Uuid, at: NaiveDateTime) -> Result<u64, sqlx::Error> {
        let sql = "UPDATE generations SET heartbeat_at = $2 WHERE owner_instance = $1 AND status = 'running'";
        on_pool!(self, pool => sqlx::query(sql).bind(owner_instance).bind(at).execute(pool).await.map(|r| r.rows_affected()))
    }

    /// Keeps the answer so far, unless a later one (more pieces) is kept already.
    pub async fn save_checkpoint(&self, id: Uuid, checkpoint: &str, pieces: i64) -> Result<(), sqlx::Error> {
        let sql = "UPDATE generations SET checkpoint = $2, checkpoint_pieces = $3 \
                   WHERE id = $1 AND status = 'running' AND checkpoint_pieces < $3";
        on_pool!(self, pool => sqlx::query(sql).bind(id).bind(checkpoint).bind(pieces).execute(pool).await.map(|_| ()))
    }

    pub async fn generation(&self, id: Uuid) -> Result<Option<GenerationRow>, sqlx::Error> {
        let sql = format!("SELECT {GENERATION_COLUMNS} FROM generations WHERE id = $1");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)
    }

    /// The chat's running generation, on whichever replica.
    pub async fn running_generation(&self, chat_id: Uuid) -> Result<Option<GenerationRow>, sqlx::Error> {
        let sql = format!("SELECT {GENERATION_COLUMNS} FROM generations WHERE chat_id = $1 AND status = 'running'");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(chat_id).fetch_optional(pool).await)
    }

    /// The user's running generations, on every replica.
    pub async fn running_generations_of(&self, user_id: Uuid) -> Result<Vec<GenerationRow>, sqlx::Error> {
        let sql = format!("SELECT {GENERATION_COLUMNS} FROM generations WHERE user_id = $1 AND status = 'running'");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await)
    }

    /// Running generations of other processes than `instance`.
    pub async fn others_running_generations(&self, instance: Uuid) -> Result<Vec<GenerationRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE status = 'running' \
             AND (owner_instance IS NULL OR owner_instance <> $1)"
        );
        on_pool!(self, pool => sqlx::query_as(&sql).bind(instance).fetch_all(pool).await)
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
