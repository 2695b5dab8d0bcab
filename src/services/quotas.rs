//! How much each user may spend: tokens and requests per UTC day and answers at once, per role
//! with per-user overrides, and an optional daily token cap per API key. Checked when an answer
//! starts (never half-way through one) with at most one indexed query.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::audit::ActionContext;
use super::snapshot::Snapshot;
use super::{ServiceError, ServiceResult};
use crate::store::api_keys::ApiKeyRecord;
use crate::store::audit::AuditAction;
use crate::store::quotas::QuotaRow;
use crate::store::users::{Role, User};
use crate::store::{Change, Store};

/// One set of limits; `null` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    pub tokens_per_day: Option<i64>,
    pub requests_per_day: Option<i64>,
    pub concurrent_generations: Option<i64>,
}

impl Limits {
    fn of(row: &QuotaRow) -> Self {
        Limits {
            tokens_per_day: row.tokens_per_day,
            requests_per_day: row.requests_per_day,
            concurrent_generations: row.concurrent_generations,
        }
    }

    fn row(&self, scope: &str, subject: String) -> QuotaRow {
        QuotaRow {
            scope: scope.into(),
            subject,
            tokens_per_day: self.tokens_per_day,
            requests_per_day: self.requests_per_day,
            concurrent_generations: self.concurrent_generations,
        }
    }
}

/// Every quota: each role's limits, and the users whose own limits replace their role's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaDocument {
    /// `guest`, `user` and `admin`.
    #[schema(value_type = BTreeMap<String, Limits>)]
    pub roles: BTreeMap<Role, Limits>,
    /// By user id.
    pub users: BTreeMap<Uuid, Limits>,
}

/// When a user at their limit of answers at once may try again (answers take seconds).
const RETRY_AFTER_BUSY_SECS: u64 = 5;

/// The quotas, cached for `USER_CACHE_SECS`. Cheap to clone.
#[derive(Clone)]
pub struct Quotas {
    store: Store,
    /// The user role's default number of answers at once (`GENERATIONS_PER_USER`).
    users_at_once: usize,
    cache: Snapshot<QuotaDocument>,
}

impl Quotas {
    pub fn new(store: Store, ttl: Duration, users_at_once: usize) -> Self {
        Self { store, users_at_once, cache: Snapshot::new(ttl) }
    }

    /// The built-in limits of a role without a row: guests 20,000 tokens and 100 requests a day
    /// and one answer at once; users `GENERATIONS_PER_USER` at once; admins unlimited.
    fn role_default(&self, role: Role) -> Limits {
        match role {
            Role::Guest => Limits { tokens_per_day: Some(20_000), requests_per_day: Some(100), concurrent_generations: Some(1) },
            Role::User => Limits { concurrent_generations: Some(self.users_at_once as i64), ..Limits::default() },
            Role::Admin => Limits::default(),
        }
    }

    pub async fn document(&self) -> ServiceResult<Arc<QuotaDocument>> {
        self.cache.get_or_load(|| self.load()).await
    }

    /// The stored quotas over the built-in ones.
    async fn load(&self) -> ServiceResult<QuotaDocument> {
        let rows = self.store.quotas().await?;
        let mut roles: BTreeMap<Role, Limits> =
            [Role::Guest, Role::User, Role::Admin].into_iter().map(|r| (r, self.role_default(r))).collect();
        let mut users = BTreeMap::new();
        for row in &rows {
            match row.scope.as_str() {
                "role" => {
                    if let Some(role) = Role::parse(&row.subject) {
                        roles.insert(role, Limits::of(row));
                    }
                }
                _ => {
                    if let Ok(id) = row.subject.parse::<Uuid>() {
                        users.insert(id, Limits::of(row));
                    }
                }
            }
        }
        Ok(QuotaDocument { roles, users })
    }

    /// Drops the kept copy (another replica changed the quotas).
    pub fn forget(&self) {
        self.cache.forget();
    }

    /// Replaces every quota; applies at once.
    pub async fn replace(&self, context: &ActionContext, document: &QuotaDocument) -> ServiceResult<Arc<QuotaDocument>> {
        let rows: Vec<QuotaRow> = document
            .roles
            .iter()
            .map(|(role, limits)| limits.row("role", role.as_str().to_owned()))
            .chain(document.users.iter().map(|(id, limits)| limits.row("user", id.to_string())))
            .collect();
        let event = context.event(AuditAction::QuotasChanged, None, serde_json::to_value(document).unwrap_or_default());
        let saved = self.store.replace_quotas(&rows, &event).await;
        self.cache.forget();
        self.store.announce(Change::Quotas);
        saved?;
        self.document().await
    }

    /// The limits that apply to `user`: their own entry, else their role's.
    pub async fn limits_for(&self, user: &User) -> ServiceResult<Limits> {
        let document = self.document().await?;
        Ok(document.users.get(&user.id).or_else(|| document.roles.get(&user.role())).copied().unwrap_or_default())
    }

    /// Refuses (429) an answer over a daily limit of the user or of the key; otherwise answers
    /// how many answers the user may have running at once (`None`: no limit).
    pub async fn admit(&self, user: &User, key: Option<&ApiKeyRecord>) -> ServiceResult<Option<usize>> {
        let limits = self.limits_for(user).await?;
        let key_tokens = key.and_then(|k| k.tokens_per_day);
        if limits.tokens_per_day.is_some() || limits.requests_per_day.is_some() || key_tokens.is_some() {
            let midnight = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
            let used = self.store.used_since(user.id, midnight, key.map(|k| k.id)).await?;
            let over = |limit: Option<i64>, used: i64, what: &str| {
                limit.filter(|limit| used >= *limit).map(|limit| daily_limit(&format!("{limit} {what}"), midnight))
            };
            if let Some(refusal) = over(limits.requests_per_day, used.requests, "requests per day")
                .or_else(|| over(limits.tokens_per_day, used.tokens, "tokens per day"))
                .or_else(|| over(key_tokens, used.key_tokens, "tokens per day for this API key"))
            {
                return Err(refusal);
            }
        }
        Ok(limits.concurrent_generations.map(|n| usize::try_from(n.max(0)).unwrap_or(usize::MAX)))
    }
}

/// 429 until the next UTC midnight.
fn daily_limit(limit: &str, midnight: NaiveDateTime) -> ServiceError {
    crate::metrics::rate_limited("daily_quota");
    let next = midnight + Days::new(1);
    let seconds = (next - Utc::now().naive_utc()).num_seconds().max(1) as u64;
    ServiceError::Limited { limit: format!("{limit}; it resets at 00:00 UTC"), retry_after_secs: seconds }
}

/// 429 for the number of answers running at once.
pub fn too_many_at_once(limit: usize) -> ServiceError {
    crate::metrics::rate_limited("concurrent_generations");
    ServiceError::Limited {
        limit: format!("{limit} replies generating at once per user"),
        retry_after_secs: RETRY_AFTER_BUSY_SECS,
    }
}
