//! Who acts and from where ([`ActionContext`], what services are given instead of a request),
//! and reading the audit log.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::ServiceResult;
use crate::background::BackgroundTasks;
use crate::store::audit::{Actor, AuditAction, AuditEvent, AuditFilter, AuditTarget, NewAuditEvent};
use crate::store::{self, Store};

/// Who asks for a change and from which address (none from the command line): what a service
/// needs to describe the change for the audit log.
#[derive(Debug, Clone)]
pub struct ActionContext {
    pub actor: Actor,
    pub client_address: Option<IpAddr>,
}

impl ActionContext {
    pub fn anonymous(client_address: Option<IpAddr>) -> Self {
        ActionContext { actor: Actor::Anonymous, client_address }
    }

    pub fn user(id: Uuid, client_address: Option<IpAddr>) -> Self {
        ActionContext { actor: Actor::User(id), client_address }
    }

    /// The command line (`rovertchat user ...`).
    pub fn cli() -> Self {
        ActionContext { actor: Actor::Cli, client_address: None }
    }

    /// The same caller, now known to be this user (a login that just succeeded).
    pub fn as_user(&self, id: Uuid) -> Self {
        ActionContext { actor: Actor::User(id), ..self.clone() }
    }

    /// The acting user, if any.
    pub fn user_id(&self) -> Option<Uuid> {
        self.actor.user_id()
    }

    /// The audit event of `action` by this caller, now. `details` is a JSON object that never
    /// holds a secret. Hand it to the store function that makes the change (it is written in the
    /// change's transaction), or to `Store::record_audit` when nothing of ours changes.
    pub fn event(&self, action: AuditAction, target: Option<AuditTarget>, details: Value) -> NewAuditEvent {
        NewAuditEvent {
            id: Uuid::new_v4(),
            occurred_at: store::now(),
            actor: self.actor,
            client_address: self.client_address,
            action,
            target,
            details,
        }
    }
}

/// One page of the audit log (newest first) and the number of events the filter selects.
pub async fn events(store: &Store, filter: &AuditFilter) -> ServiceResult<(Vec<AuditEvent>, i64)> {
    Ok(store.audit_events(filter).await?)
}

/// How often events past their retention are deleted.
const PRUNING_PERIOD: Duration = Duration::from_secs(3600);

/// Deletes the events older than `retention`, every hour, while the server runs.
pub fn spawn_pruning(tasks: &BackgroundTasks, store: Store, retention: Duration) {
    tasks.every_awaiting(PRUNING_PERIOD, move || {
        let store = store.clone();
        async move {
            match prune(&store, retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "audit events past their retention deleted"),
                Err(err) => tracing::error!(error = %err, "deleting audit events past their retention failed"),
            }
        }
    });
}

/// Deletes the events older than `retention`; how many.
pub async fn prune(store: &Store, retention: Duration) -> ServiceResult<u64> {
    let retention = chrono::Duration::from_std(retention).map_err(anyhow::Error::new)?;
    Ok(store.prune_audit_events(store::now() - retention).await?)
}
