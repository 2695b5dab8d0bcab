use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validation::{uuid_any, Fields, FromFields, Problem};

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` (UTC days, both included; default: the last 30 days).
pub struct UsageQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Admins only: one user's usage.
    pub user_id: Option<Uuid>,
}

fn day(value: &Value) -> Result<NaiveDate, Problem> {
    value
        .as_str()
        .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .ok_or_else(|| Problem::new("date_from_datetime_parsing", "Input should be a valid date in the format YYYY-MM-DD"))
}

impl FromFields for UsageQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(UsageQuery { from: f.optional("from", day), to: f.optional("to", day), user_id: f.optional("user_id", uuid_any) })
    }
}

/// Requests and tokens.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct Counters {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl Counters {
    pub fn add(&mut self, other: Counters) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelUsage {
    pub model: String,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserUsage {
    pub user_id: Uuid,
    pub username: Option<String>,
    #[serde(flatten)]
    pub counters: Counters,
}

/// What was used in a period: in total, per day (every day of the period), per model, and (for
/// admins) per user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub total: Counters,
    pub by_day: Vec<DayUsage>,
    pub by_model: Vec<ModelUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_user: Option<Vec<UserUsage>>,
}
