//! All SQL, grouped by table. One `Store` over two backends: PostgreSQL and embedded SQLite.
//!
//! Queries are written once: sqlx binds `$1` on both, every row type derives `FromRow` for both,
//! and ids and timestamps are bound from Rust (no `now()` or `gen_random_uuid()` in SQL). The
//! [`on_pool!`] macro expands one query body for each backend.

pub mod adopt;
pub mod api_keys;
pub mod audit;
pub mod chat_imports;
pub mod chats;
pub mod generations;
pub mod login_attempts;
pub mod messages;
pub mod models;
pub mod providers;
pub mod quotas;
pub mod refresh_tokens;
pub mod row_cache;
pub mod search;
pub mod settings;
pub mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDateTime, Timelike, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use self::row_cache::{ApiKeyCache, UserCache};
use crate::config::DatabaseConfig;

pub static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
pub static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    users: Arc<UserCache>,
    api_keys: Arc<ApiKeyCache>,
    changes: tokio::sync::broadcast::Sender<Change>,
}

/// A change to rows that processes keep in memory: this process forgets its copy at once and
/// announces the change, so that other replicas forget theirs (see [`crate::cluster`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Change {
    User { id: uuid::Uuid },
    ApiKey { key_hash: String },
    ModelPolicies,
    Quotas,
    Providers,
}

/// How many announced changes may wait for the bus before the oldest are dropped (the bus then
/// tells the other replicas to drop everything they cached).
const ANNOUNCED_CHANGES: usize = 1_024;

/// Runs `$body` with `$pool` bound to the backend's pool (or any expression derived from it).
/// The body is compiled once per backend, so it must be valid for both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            $crate::store::Pool::Postgres($pool) => $body,
            $crate::store::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// How a transaction's body ends: every body says which, even when it returns early.
#[derive(Debug)]
pub enum TxEnd<T> {
    Commit(T),
    /// Undo what the body wrote, and answer `T` (e.g. "not found", "would leave no admin").
    Rollback(T),
}

/// Runs `$body` inside one transaction, with `$tx` a `&mut` connection of that transaction.
/// `$body` evaluates to `Result<TxEnd<T>, sqlx::Error>` (an early `return` gives one too):
/// `Commit` commits, `Rollback` rolls back, an error rolls back and is returned. A transaction
/// that lost a deadlock or a serialization conflict is run again from the start, up to
/// [`CONFLICT_ATTEMPTS`] times, so `$body` must only touch the database.
macro_rules! in_transaction {
    ($store:expr, $tx:ident => $body:expr) => {
        $crate::store::on_pool!($store, pool => async {
            let mut attempt = 1;
            loop {
                let result: Result<_, sqlx::Error> = async {
                    let mut transaction = pool.begin().await?;
                    let end: Result<$crate::store::TxEnd<_>, sqlx::Error> = async {
                        let $tx = &mut *transaction;
                        $body
                    }
                    .await;
                    match end? {
                        $crate::store::TxEnd::Commit(value) => {
                            transaction.commit().await?;
                            Ok(value)
                        }
                        $crate::store::TxEnd::Rollback(value) => {
                            transaction.rollback().await?;
                            Ok(value)
                        }
                    }
                }
                .await;
                match result {
                    Err(err) if attempt < $crate::store::CONFLICT_ATTEMPTS && $crate::store::is_transient_conflict(&err) => {
                        tracing::debug!(error = %err, attempt, "transaction conflict; running it again");
                        tokio::time::sleep($crate::store::conflict_backoff(attempt)).await;
                        attempt += 1;
                    }
                    result => break result,
                }
            }
        }
        .await)
    };
}
pub(crate) use in_transaction;

/// How many times a transaction is run when it keeps losing conflicts.
pub const CONFLICT_ATTEMPTS: u32 = 4;

/// True for a deadlock or serialization failure (PostgreSQL `40P01`, `40001`) or a busy
/// SQLite database: the transaction was rolled back and may succeed when run again.
pub fn is_transient_conflict(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else { return false };
    matches!(db.code().as_deref(), Some("40P01" | "40001" | "5" | "6" | "261" | "262" | "517" | "773"))
}

/// A short random pause, growing with the attempt, so the conflicting transactions part ways.
pub fn conflict_backoff(attempt: u32) -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::thread_rng().gen_range(5..=25) * u64::from(attempt))
}

impl Store {
    /// Connects, and creates the SQLite file (and its directory) when missing.
    pub async fn connect(config: &DatabaseConfig, max_connections: u32) -> anyhow::Result<Self> {
        let pool = match config {
            DatabaseConfig::Postgres { url } => {
                let options = PgConnectOptions::from_str(url.expose())
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?
                    // No JIT compilation of plans with a high estimated cost: for ours (a search
                    // of a common word in a long history, which stops early) it takes longer
                    // (30-40 ms) than running them.
                    .options([("jit", "off")]);
                // No ping before each use: it costs a round trip per query (a quarter of a
                // /users/me request). A connection that died is noticed by its next query,
                // which answers 503 and drops it; the pool reconnects.
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .min_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                    .context("cannot connect to PostgreSQL")?;
                Pool::Postgres(pool)
            }
            DatabaseConfig::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
                Pool::Sqlite(pool)
            }
        };
        Ok(Store::from_pool(pool))
    }

    /// A store without a user cache.
    pub fn from_pool(pool: Pool) -> Self {
        Store {
            pool,
            users: Arc::new(UserCache::new(Duration::ZERO)),
            api_keys: Arc::new(ApiKeyCache::new(Duration::ZERO)),
            changes: tokio::sync::broadcast::channel(ANNOUNCED_CHANGES).0,
        }
    }

    /// Keeps user and API key rows for `ttl` (see [`row_cache`]); zero keeps none.
    pub fn with_row_cache(self, ttl: Duration) -> Self {
        Store { users: Arc::new(UserCache::new(ttl)), api_keys: Arc::new(ApiKeyCache::new(ttl)), ..self }
    }

    /// Tells the other replicas that `change` happened (the caller forgot its own copy).
    pub fn announce(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// The changes this process announces, for the bus.
    pub fn announced(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Forgets the rows another replica changed (`None`: everything, as after missed notices).
    pub fn forget_changed(&self, change: Option<&Change>) {
        match change {
            Some(Change::User { id }) => self.users.forget(id),
            Some(Change::ApiKey { key_hash }) => self.api_keys.forget(key_hash),
            Some(Change::ModelPolicies | Change::Quotas | Change::Providers) => {}
            None => {
                self.users.forget_all();
                self.api_keys.forget_all();
            }
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// Brings the schema up to date under sqlx's migration lock. A PostgreSQL database made by
    /// the original backend is adopted first (see [`adopt`]). Then accounts written outside
    /// rovertchat get the keys of their names (see [`Store::fill_name_keys`]).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => {
                adopt::adopt_original_schema(pool).await?;
                POSTGRES_MIGRATIONS.run(pool).await.context("PostgreSQL migrations failed")?;
            }
            Pool::Sqlite(pool) => {
                SQLITE_MIGRATIONS.run(pool).await.context("SQLite migrations failed")?;
            }
        }
        let keyed = self.fill_name_keys().await.context("writing the keys of account names failed")?;
        if keyed > 0 {
            tracing::info!(accounts = keyed, "keys of account names written");
        }
        Ok(())
    }

    /// How many migrations `migrate` would apply (all of them to a database it never touched).
    pub async fn pending_migrations(&self) -> usize {
        let migrator = match self.pool {
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
        };
        let applied: Vec<i64> = on_pool!(self, pool => sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await)
        .unwrap_or_default();
        migrator.iter().filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version)).count()
    }

    /// Round-trip time of a trivial query.
    pub async fn ping(&self) -> Result<Duration, sqlx::Error> {
        let started = Instant::now();
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(started.elapsed())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// The current UTC time at the databases' precision (microseconds), so what is written and
/// what is read back are equal on both backends.
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap_or(now)
}

/// True when the database could not be reached (as opposed to a query that failed).
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            // A connection cut mid-message (or mid-handshake) surfaces as a protocol error.
            | sqlx::Error::Protocol(_)
    )
}

/// Which unique rule a failed insert or update broke, on either backend.
pub fn unique_violation(err: &sqlx::Error) -> Option<UniqueRule> {
    let sqlx::Error::Database(db) = err else { return None };
    if !db.is_unique_violation() {
        return None;
    }
    // PostgreSQL names the constraint; SQLite names the columns or the index in its message.
    let name = db.constraint().map(str::to_owned).unwrap_or_else(|| db.message().to_owned());
    if name.contains("username") {
        Some(UniqueRule::Username)
    } else if name.contains("email") {
        Some(UniqueRule::Email)
    } else {
        Some(UniqueRule::Other)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueRule {
    Username,
    Email,
    Other,
}
