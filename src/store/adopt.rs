//! Adopting a PostgreSQL database made by the original Python backend.
//!
//! The original created its tables with SQLAlchemy `create_all` and kept no migration history.
//! Our first migration (`0001_original_schema.sql`) is exactly that schema. When a database has
//! the original's tables but no `_sqlx_migrations`, we check that the tables are exactly the
//! original's, then, in one transaction, record 0001 as applied (the baseline) and apply our
//! later migrations. Any other state (some tables missing, unknown or missing columns) stops
//! startup with a clear message and changes nothing. User data is never rewritten.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context};
use sqlx::{PgPool, Row};

use super::POSTGRES_MIGRATIONS;

/// Every column of the original schema: (table, column, PostgreSQL type name, nullable).
const ORIGINAL_COLUMNS: &[(&str, &str, &str, bool)] = &[
    ("users", "id", "uuid", false),
    ("users", "username", "varchar", false),
    ("users", "email", "varchar", false),
    ("users", "password_hash", "varchar", false),
    ("users", "role", "user_role_enum", true),
    ("users", "created_at", "timestamp", true),
    ("users", "last_login", "timestamp", true),
    ("users", "is_active", "bool", true),
    ("users", "token_version", "int4", false),
    ("user_settings", "user_id", "uuid", false),
    ("user_settings", "default_model_id", "uuid", true),
    ("user_settings", "display_name", "varchar", true),
    ("user_settings", "avatar_url", "varchar", true),
    ("user_settings", "preferences", "json", true),
    ("chats", "id", "uuid", false),
    ("chats", "user_id", "uuid", true),
    ("chats", "title", "varchar", true),
    ("chats", "created_at", "timestamp", true),
    ("chats", "updated_at", "timestamp", true),
    ("chats", "is_archived", "bool", true),
    ("model_providers", "id", "uuid", false),
    ("model_providers", "name", "varchar", false),
    ("model_providers", "api_url", "varchar", false),
    ("model_providers", "auth_type", "varchar", true),
    ("model_providers", "created_by", "uuid", true),
    ("model_providers", "created_at", "timestamp", true),
    ("model_providers", "is_active", "bool", true),
    ("models", "id", "uuid", false),
    ("models", "provider_id", "uuid", true),
    ("models", "name", "varchar", false),
    ("models", "display_name", "varchar", true),
    ("models", "description", "text", true),
    ("models", "config", "json", true),
    ("models", "created_at", "timestamp", true),
    ("models", "updated_at", "timestamp", true),
    ("models", "is_active", "bool", true),
    ("messages", "id", "uuid", false),
    ("messages", "chat_id", "uuid", true),
    ("messages", "role", "varchar", false),
    ("messages", "content", "text", false),
    ("messages", "thinking", "text", true),
    ("messages", "tool_calls", "json", true),
    ("messages", "images", "json", true),
    ("messages", "model_id", "uuid", true),
    ("messages", "created_at", "timestamp", true),
    ("messages", "tokens_used", "int4", true),
    ("messages", "extended_metadata", "json", true),
    ("user_model_access", "id", "uuid", false),
    ("user_model_access", "user_id", "uuid", true),
    ("user_model_access", "model_id", "uuid", true),
    ("user_model_access", "granted_by", "uuid", true),
    ("user_model_access", "granted_at", "timestamp", true),
    ("user_model_access", "is_active", "bool", true),
];

/// Serialises adoption between instances starting at once (an arbitrary, fixed key).
const ADOPTION_LOCK_KEY: i64 = 0x726f_7665_7274; // "rovert"

/// The migration table exactly as sqlx creates it, so sqlx takes over from here.
const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// What the database holds before any migration.
#[derive(Debug, PartialEq, Eq)]
pub enum DatabaseState {
    /// Managed by rovertchat already (`_sqlx_migrations` exists).
    Managed,
    Empty,
    /// Exactly the original backend's schema, without migration history.
    Original,
}

/// Adopts an original database if that is what this is; refuses anything unexpected.
pub async fn adopt_original_schema(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await.context("cannot open a transaction to inspect the database")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ADOPTION_LOCK_KEY).execute(&mut *tx).await?;
    if inspect(&mut tx).await? != DatabaseState::Original {
        return Ok(());
    }
    tracing::warn!("found the original rovertChat schema without migration history: adopting it");
    sqlx::query(CREATE_MIGRATIONS_TABLE).execute(&mut *tx).await?;
    for migration in POSTGRES_MIGRATIONS.iter() {
        let started = Instant::now();
        if migration.version > 1 {
            sqlx::raw_sql(&migration.sql).execute(&mut *tx).await.with_context(|| {
                format!(
                    "adopting the original database: migration {} ({}) failed; nothing was changed",
                    migration.version, migration.description
                )
            })?;
        }
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, $4)",
        )
        .bind(migration.version)
        .bind(&*migration.description)
        .bind(&*migration.checksum)
        .bind(started.elapsed().as_nanos() as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await.context("committing the adoption of the original database")?;
    tracing::info!("original database adopted: baseline recorded, rovertchat's additions applied");
    Ok(())
}

/// Tells a fresh, a managed and an original database apart; anything else is an error that
/// names what is wrong.
pub async fn inspect(conn: &mut sqlx::PgConnection) -> anyhow::Result<DatabaseState> {
    let managed: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    if managed {
        return Ok(DatabaseState::Managed);
    }
    let rows = sqlx::query(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, c.udt_name::text AS udt_name, \
                c.is_nullable = 'YES' AS nullable \
         FROM information_schema.columns c \
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut found: BTreeMap<String, BTreeMap<String, (String, bool)>> = BTreeMap::new();
    for row in rows {
        found
            .entry(row.get("table_name"))
            .or_default()
            .insert(row.get("column_name"), (row.get("udt_name"), row.get("nullable")));
    }
    let mut expected: BTreeMap<&str, BTreeMap<&str, (&str, bool)>> = BTreeMap::new();
    for (table, column, udt, nullable) in ORIGINAL_COLUMNS {
        expected.entry(*table).or_default().insert(*column, (*udt, *nullable));
    }
    let ours: Vec<&str> = expected.keys().copied().filter(|t| found.contains_key(*t)).collect();
    if ours.is_empty() {
        return Ok(DatabaseState::Empty);
    }
    let mut problems = Vec::new();
    for (table, columns) in &expected {
        let Some(actual) = found.get(*table) else {
            problems.push(format!("table {table} is missing"));
            continue;
        };
        for (column, (udt, nullable)) in columns {
            match actual.get(*column) {
                None => problems.push(format!("column {table}.{column} is missing")),
                Some((found_udt, found_nullable)) if found_udt != udt || found_nullable != nullable => problems.push(format!(
                    "column {table}.{column} is {found_udt}{} (expected {udt}{})",
                    if *found_nullable { "" } else { " NOT NULL" },
                    if *nullable { "" } else { " NOT NULL" }
                )),
                Some(_) => {}
            }
        }
        for column in actual.keys() {
            if !columns.contains_key(column.as_str()) {
                problems.push(format!("unknown column {table}.{column}"));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the database has some of rovertchat's tables but not in a shape it knows, so it was left untouched: {}. \
             Point DATABASE_URL at an empty database, or at one made by the original rovertChat backend.",
            problems.join("; ")
        );
    }
    Ok(DatabaseState::Original)
}
