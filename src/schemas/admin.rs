//! The admin area's request and response types (`/admin/*`).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::serialize_utc;
use crate::store::audit::{AuditAction, AuditEvent, AuditFilter};
use crate::validation::{any_string, uuid_any, Fields, FromFields, Problem, QueryInt, Skip};

/// `?limit=` of the audit log.
pub type AuditPageLimit = QueryInt<1, 1000, 100>;

/// `GET /admin/audit?actor_id=&action=&from=&to=&skip=&limit=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only what this user did (also through their API keys).
    pub actor_id: Option<Uuid>,
    /// Only this action.
    #[param(schema_with = action_schema)]
    pub action: Option<AuditAction>,
    /// From this time on (inclusive): RFC 3339 (`2026-12-05T10:00:00Z`), or a date (UTC midnight).
    #[param(schema_with = time_schema)]
    pub from: Option<NaiveDateTime>,
    /// Before this time (exclusive), written as `from`.
    #[param(schema_with = time_schema)]
    pub to: Option<NaiveDateTime>,
    #[param(inline, value_type = Skip)]
    pub skip: i64,
    #[param(inline, value_type = AuditPageLimit)]
    pub limit: i64,
}

fn action_schema() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(AuditAction::NAMES.iter().copied())).into()
}

fn time_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("RFC 3339 date-time, or a date"))
        .examples([json!("2026-12-05T10:00:00Z")])
        .into()
}

/// A point in time in UTC: RFC 3339 with an offset, a date-time without one (UTC), or a date
/// (its midnight, UTC), in the years 1 to 9999 (what both databases store). A `+` decoded from a
/// query string as a space is read as `+`.
fn utc_time(value: &Value) -> Result<NaiveDateTime, Problem> {
    let text = any_string(value)?.trim().replace(' ', "+");
    let time = DateTime::parse_from_rfc3339(&text)
        .map(|time| time.naive_utc())
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .or_else(|| NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok().and_then(|date| date.and_hms_opt(0, 0, 0)));
    match time {
        Some(time) if (1..=9999).contains(&time.year()) => Ok(time),
        _ => Err(Problem::new(
            "datetime_parsing",
            "Input should be a valid datetime or date (RFC 3339, e.g. 2026-12-05T10:00:00Z)",
        )),
    }
}

impl From<AuditQuery> for AuditFilter {
    fn from(query: AuditQuery) -> Self {
        AuditFilter {
            actor_id: query.actor_id,
            action: query.action,
            from: query.from,
            to: query.to,
            skip: query.skip,
            limit: query.limit,
        }
    }
}

impl FromFields for AuditQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let actor_id = f.optional("actor_id", uuid_any);
        let action = f.optional("action", AuditAction::from_value);
        let from = f.optional("from", utc_time);
        let to = f.optional("to", utc_time);
        Some(AuditQuery { actor_id, action, from, to, skip: Skip::read(f, "skip"), limit: AuditPageLimit::read(f, "limit") })
    }
}

/// Who acted.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditActor {
    /// `anonymous`, `user`, `api_key` or `cli`.
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
}

/// What an event is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTargetResponse {
    /// `user`, `model`, ...
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    /// An id, or a name (models).
    pub id: Option<String>,
}

/// One event of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventResponse {
    pub id: Uuid,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Option<NaiveDateTime>,
    pub actor: AuditActor,
    /// The client's address (as the rate limits see it); none from the command line.
    pub client_address: Option<String>,
    #[schema(example = "auth.login")]
    pub action: String,
    pub target: Option<AuditTargetResponse>,
    /// Depends on the action; never a secret.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<AuditEvent> for AuditEventResponse {
    fn from(event: AuditEvent) -> Self {
        AuditEventResponse {
            id: event.id,
            occurred_at: Some(event.occurred_at),
            actor: AuditActor { kind: event.actor_kind, user_id: event.actor_user_id, api_key_id: event.actor_api_key_id },
            client_address: event.client_address,
            action: event.action,
            target: event.target_type.map(|kind| AuditTargetResponse { kind, id: event.target_id }),
            details: event.details.0,
        }
    }
}

/// One page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// How many events the filters select in all.
    pub total: i64,
    pub events: Vec<AuditEventResponse>,
    pub skip: i64,
    pub limit: i64,
}
