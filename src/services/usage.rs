//! What each user spent: generations and tokens per day, model and user, from the
//! `generations` rows the engine writes.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{ServiceError, ServiceResult};
use crate::schemas::usage::{Counters, DayUsage, ModelUsage, UsageQuery, UsageReport, UserUsage};
use crate::store::Store;
use crate::validation::{Problem, ValidationIssue};

/// Days covered when the query names none.
const DEFAULT_DAYS: u64 = 30;
/// The longest period one report covers.
pub const MAX_DAYS: u64 = 366;

fn invalid_period(message: &str, input: &NaiveDate) -> ServiceError {
    let issue: ValidationIssue =
        Problem::new("value_error", message).at(vec![json!("query"), json!("from")], &json!(input.to_string()));
    ServiceError::Invalid(vec![issue])
}

/// The report for `user_id` (or everyone when `None`); per user only when `by_user`.
pub async fn report(store: &Store, query: &UsageQuery, user_id: Option<Uuid>, by_user: bool) -> ServiceResult<UsageReport> {
    let to = query.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = query.from.unwrap_or_else(|| to - Days::new(DEFAULT_DAYS - 1));
    if from > to {
        return Err(invalid_period("from must not be after to", &from));
    }
    let days = u64::try_from((to - from).num_days()).unwrap_or(u64::MAX) + 1;
    if days > MAX_DAYS {
        return Err(invalid_period(&format!("A report covers at most {MAX_DAYS} days"), &from));
    }
    let until = (to + Days::new(1)).and_hms_opt(0, 0, 0).unwrap_or_default();
    let rows = store.usage(from.and_hms_opt(0, 0, 0).unwrap_or_default(), until, user_id).await?;

    let mut total = Counters::default();
    let mut by_day: BTreeMap<String, Counters> =
        from.iter_days().take(days as usize).map(|d| (d.format("%Y-%m-%d").to_string(), Counters::default())).collect();
    let mut by_model: BTreeMap<String, Counters> = BTreeMap::new();
    let mut by_user_map: BTreeMap<Uuid, (Option<String>, Counters)> = BTreeMap::new();
    for row in rows {
        let counters =
            Counters { requests: row.requests, prompt_tokens: row.prompt_tokens, completion_tokens: row.completion_tokens };
        total.add(counters);
        by_day.entry(row.day).or_default().add(counters);
        by_model.entry(row.model).or_default().add(counters);
        let user = by_user_map.entry(row.user_id).or_insert_with(|| (row.username.clone(), Counters::default()));
        user.1.add(counters);
    }
    let mut by_model: Vec<ModelUsage> = by_model.into_iter().map(|(model, counters)| ModelUsage { model, counters }).collect();
    by_model.sort_by_key(|m| std::cmp::Reverse(m.counters.prompt_tokens + m.counters.completion_tokens));
    let by_user = by_user.then(|| {
        let mut users: Vec<UserUsage> =
            by_user_map.into_iter().map(|(user_id, (username, counters))| UserUsage { user_id, username, counters }).collect();
        users.sort_by_key(|u| std::cmp::Reverse(u.counters.prompt_tokens + u.counters.completion_tokens));
        users
    });
    Ok(UsageReport {
        total,
        by_day: by_day.into_iter().map(|(day, counters)| DayUsage { day, counters }).collect(),
        by_model,
        by_user,
    })
}
