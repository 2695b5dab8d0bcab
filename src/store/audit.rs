//! The audit log (`audit_events`): who did what, from where, to what.
//!
//! An event is written in the transaction of the change it records: a store function that makes
//! an audited change takes the event (or a function that makes it from the changed row) and
//! calls [`record`] on its transaction's connection next to the change, so both are committed or
//! neither is. An event with no change behind it (a failed login, a model pulled in Ollama) is
//! written on its own with [`Store::record_audit`]. Events are built by
//! `services::audit::ActionContext::event`. Details never hold secrets.

use std::net::IpAddr;

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{on_pool, Store};

crate::text_enum! {
    /// What happened. Short and bounded; the first part names the area.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum AuditAction {
        Login = "auth.login",
        LoginFailed = "auth.login_failed",
        Logout = "auth.logout",
        RefreshReuse = "auth.refresh_reuse",
        Register = "auth.register",
        RoleChanged = "user.role_changed",
        Activated = "user.activated",
        Deactivated = "user.deactivated",
        PasswordChanged = "user.password_changed",
        SettingsUpdated = "settings.updated",
        SettingsDeleted = "settings.deleted",
        ModelPulled = "model.pulled",
        ModelDeleted = "model.deleted",
        ApiKeyCreated = "api_key.created",
        ApiKeyRevoked = "api_key.revoked",
        ModelPolicyChanged = "model.policy_changed",
        QuotasChanged = "quotas.changed",
        ChatsImported = "chats.imported",
        ProviderCreated = "provider.created",
        ProviderUpdated = "provider.updated",
        ProviderDeleted = "provider.deleted",
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// Nobody signed in (a failed login, a self-registration).
    Anonymous,
    /// A signed-in user.
    User(Uuid),
    /// A user through one of their API keys.
    ApiKey { user_id: Uuid, key_id: Uuid },
    /// The command line (`rovertchat user ...`), run by whoever has the server's configuration.
    Cli,
}

impl Actor {
    /// `audit_events.actor_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Anonymous => "anonymous",
            Actor::User(_) => "user",
            Actor::ApiKey { .. } => "api_key",
            Actor::Cli => "cli",
        }
    }

    /// The acting user, if any.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Actor::User(id) | Actor::ApiKey { user_id: id, .. } => Some(*id),
            Actor::Anonymous | Actor::Cli => None,
        }
    }

    fn api_key_id(&self) -> Option<Uuid> {
        match self {
            Actor::ApiKey { key_id, .. } => Some(*key_id),
            _ => None,
        }
    }
}

/// What an event is about: a kind (`user`, `model`, ...) and its id or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTarget {
    pub kind: &'static str,
    pub id: String,
}

impl AuditTarget {
    pub fn user(id: Uuid) -> Self {
        AuditTarget { kind: "user", id: id.to_string() }
    }

    pub fn model(name: &str) -> Self {
        AuditTarget { kind: "model", id: name.to_owned() }
    }

    pub fn api_key(id: Uuid) -> Self {
        AuditTarget { kind: "api_key", id: id.to_string() }
    }

    pub fn provider(id: Uuid) -> Self {
        AuditTarget { kind: "provider", id: id.to_string() }
    }
}

/// An event to write.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub id: Uuid,
    pub occurred_at: NaiveDateTime,
    pub actor: Actor,
    pub client_address: Option<IpAddr>,
    pub action: AuditAction,
    pub target: Option<AuditTarget>,
    /// A JSON object; never a password, token, key or other secret.
    pub details: Value,
}

/// A row of `audit_events`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: Uuid,
    pub occurred_at: NaiveDateTime,
    pub actor_kind: String,
    pub actor_user_id: Option<Uuid>,
    pub actor_api_key_id: Option<Uuid>,
    pub client_address: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub details: Json<Value>,
}

/// Which events to list, newest first.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor_id: Option<Uuid>,
    pub action: Option<AuditAction>,
    /// From this time on (inclusive).
    pub from: Option<NaiveDateTime>,
    /// Before this time (exclusive).
    pub to: Option<NaiveDateTime>,
    pub skip: i64,
    pub limit: i64,
}

const INSERT_EVENT: &str = "INSERT INTO audit_events \
     (id, occurred_at, actor_kind, actor_user_id, actor_api_key_id, client_address, action, target_type, target_id, details) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Writes `event` on `connection`: inside `in_transaction!`, `audit::record(&mut *tx, &event)`
/// next to the change the event records.
pub async fn record<'c, E, DB>(connection: E, event: &NewAuditEvent) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> Uuid: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<Uuid>: sqlx::Encode<'q, DB>,
    for<'q> NaiveDateTime: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB>,
    for<'q> Json<Value>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(INSERT_EVENT)
        .bind(event.id)
        .bind(event.occurred_at)
        .bind(event.actor.kind().to_owned())
        .bind(event.actor.user_id())
        .bind(event.actor.api_key_id())
        .bind(event.client_address.map(|address| address.to_string()))
        .bind(event.action.as_str().to_owned())
        .bind(event.target.as_ref().map(|target| target.kind.to_owned()))
        .bind(event.target.as_ref().map(|target| target.id.clone()))
        .bind(Json(event.details.clone()))
        .execute(connection)
        .await?;
    Ok(())
}

impl Store {
    /// Writes an event that has no change of ours behind it (a failed login, a change made in
    /// Ollama).
    pub async fn record_audit(&self, event: &NewAuditEvent) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => record(pool, event).await)
    }

    /// The events `filter` selects (newest first, one page) and how many it selects in all.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<(Vec<AuditEvent>, i64), sqlx::Error> {
        let mut conditions = Vec::new();
        let mut condition = |sql: &str, given: bool| {
            if given {
                conditions.push(sql.replace('?', &format!("${}", conditions.len() + 1)));
            }
        };
        condition("actor_user_id = ?", filter.actor_id.is_some());
        condition("action = ?", filter.action.is_some());
        condition("occurred_at >= ?", filter.from.is_some());
        condition("occurred_at < ?", filter.to.is_some());
        let filters = conditions.len();
        let clause = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let count = format!("SELECT COUNT(*) FROM audit_events {clause}");
        let page = format!(
            "SELECT id, occurred_at, actor_kind, actor_user_id, actor_api_key_id, client_address, action, target_type, \
               target_id, details \
             FROM audit_events {clause} ORDER BY occurred_at DESC, id LIMIT ${} OFFSET ${}",
            filters + 1,
            filters + 2
        );
        // Binds the filters that were given, in the order of their placeholders.
        macro_rules! bind_filters {
            ($query:expr) => {{
                let mut query = $query;
                if let Some(actor_id) = filter.actor_id {
                    query = query.bind(actor_id);
                }
                if let Some(action) = filter.action {
                    query = query.bind(action.as_str());
                }
                if let Some(from) = filter.from {
                    query = query.bind(from);
                }
                if let Some(to) = filter.to {
                    query = query.bind(to);
                }
                query
            }};
        }
        on_pool!(self, pool => {
            let total: i64 = bind_filters!(sqlx::query_scalar(&count)).fetch_one(pool).await?;
            let events: Vec<AuditEvent> =
                bind_filters!(sqlx::query_as(&page)).bind(filter.limit).bind(filter.skip).fetch_all(pool).await?;
            Ok((events, total))
        })
    }

    /// Deletes the events that occurred before `before`; how many.
    pub async fn prune_audit_events(&self, before: NaiveDateTime) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM audit_events WHERE occurred_at < $1").bind(before).execute(pool).await.map(|r| r.rows_affected())
        })
    }
}
