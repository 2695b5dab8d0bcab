//! The admin's providers: added, changed and removed in `model_providers` (each change audited
//! in its transaction), then the registry reads them again. API keys are sealed before they
//! are stored and never leave the server.

use serde_json::json;
use uuid::Uuid;

use super::audit::ActionContext;
use super::{ServiceError, ServiceResult};
use crate::ollama::without_credentials;
use crate::store::audit::{AuditAction, AuditTarget, NewAuditEvent};
use crate::store::providers::{ProviderChange, ProviderRow};
use crate::store::{self, Store};
use crate::upstream::{ProviderKind, ProviderStatus, Upstreams};

/// A new provider, as validated.
#[derive(Debug)]
pub struct ProviderDraft {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<String>,
    pub enabled: bool,
    pub priority: i32,
    pub model_prefix: Option<String>,
}

/// A change: `None` keeps a field, `Some(None)` clears a clearable one.
#[derive(Debug, Default)]
pub struct ProviderUpdate {
    pub name: Option<String>,
    pub kind: Option<ProviderKind>,
    pub base_url: Option<String>,
    pub api_key: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub priority: Option<i32>,
    pub model_prefix: Option<Option<String>>,
}

/// A provider as the admin sees it: its row (never its key) and its state here.
pub struct ProviderView {
    pub row: ProviderRow,
    pub status: ProviderStatus,
}

fn view(upstreams: &Upstreams, row: ProviderRow) -> ProviderView {
    let status = upstreams.status(row.id);
    ProviderView { row, status }
}

pub async fn list(store: &Store, upstreams: &Upstreams) -> ServiceResult<Vec<ProviderView>> {
    Ok(store.providers().await?.into_iter().map(|row| view(upstreams, row)).collect())
}

/// What the audit log keeps of a provider: its settings, its address without credentials,
/// whether it has a key (never the key).
fn event(context: &ActionContext, action: AuditAction, row: &ProviderRow, api_key_changed: bool) -> NewAuditEvent {
    let details = json!({
        "name": row.name, "kind": row.kind, "base_url": without_credentials(&row.api_url),
        "enabled": row.enabled(), "priority": row.priority, "model_prefix": row.model_prefix,
        "has_api_key": row.api_key_encrypted.is_some(), "api_key_changed": api_key_changed,
    });
    context.event(action, Some(AuditTarget::provider(row.id)), details)
}

fn outcome(change: ProviderChange) -> ServiceResult<()> {
    match change {
        ProviderChange::Done => Ok(()),
        ProviderChange::NameTaken => Err(ServiceError::Conflict("A provider with this name already exists")),
        ProviderChange::NotFound => Err(ServiceError::NotFound("Provider not found")),
    }
}

/// Reads the providers again after a change, and tells the other replicas to; the change is
/// made even if this fails (the periodic reload will see it).
async fn reload(store: &Store, upstreams: &Upstreams) {
    store.announce(crate::store::Change::Providers);
    if let Err(err) = upstreams.reload().await {
        tracing::warn!(error = %err, "reading the providers after a change failed");
    }
}

pub async fn create(
    store: &Store,
    upstreams: &Upstreams,
    context: &ActionContext,
    draft: ProviderDraft,
) -> ServiceResult<ProviderView> {
    let id = Uuid::new_v4();
    let at = store::now();
    let row = ProviderRow {
        id,
        name: draft.name,
        kind: draft.kind.as_str().to_owned(),
        api_url: draft.base_url,
        auth_type: draft.api_key.as_ref().map(|_| "bearer".to_owned()),
        created_by: context.user_id(),
        created_at: Some(at),
        updated_at: Some(at),
        is_active: Some(draft.enabled),
        priority: draft.priority,
        model_prefix: draft.model_prefix,
        api_key_encrypted: draft.api_key.map(|key| upstreams.cipher().seal(id, &key)),
    };
    let event = event(context, AuditAction::ProviderCreated, &row, row.api_key_encrypted.is_some());
    outcome(store.create_provider(&row, &event).await.or_else(name_taken)?)?;
    tracing::info!(provider = %row.name, kind = %row.kind, admin_id = ?context.user_id(), "provider added");
    reload(store, upstreams).await;
    Ok(view(upstreams, row))
}

pub async fn update(
    store: &Store,
    upstreams: &Upstreams,
    context: &ActionContext,
    id: Uuid,
    update: ProviderUpdate,
) -> ServiceResult<ProviderView> {
    let mut row = store.provider(id).await?.ok_or(ServiceError::NotFound("Provider not found"))?;
    if let Some(name) = update.name {
        row.name = name;
    }
    if let Some(kind) = update.kind {
        row.kind = kind.as_str().to_owned();
    }
    if let Some(base_url) = update.base_url {
        row.api_url = base_url;
    }
    if let Some(enabled) = update.enabled {
        row.is_active = Some(enabled);
    }
    if let Some(priority) = update.priority {
        row.priority = priority;
    }
    if let Some(prefix) = update.model_prefix {
        row.model_prefix = prefix;
    }
    let api_key_changed = update.api_key.is_some();
    if let Some(key) = update.api_key {
        row.auth_type = key.as_ref().map(|_| "bearer".to_owned());
        row.api_key_encrypted = key.map(|key| upstreams.cipher().seal(id, &key));
    }
    row.updated_at = Some(store::now());
    let event = event(context, AuditAction::ProviderUpdated, &row, api_key_changed);
    outcome(store.update_provider(&row, &event).await.or_else(name_taken)?)?;
    tracing::info!(provider = %row.name, admin_id = ?context.user_id(), "provider changed");
    reload(store, upstreams).await;
    Ok(view(upstreams, row))
}

pub async fn delete(store: &Store, upstreams: &Upstreams, context: &ActionContext, id: Uuid) -> ServiceResult<()> {
    let row = store.provider(id).await?.ok_or(ServiceError::NotFound("Provider not found"))?;
    let event = event(context, AuditAction::ProviderDeleted, &row, false);
    outcome(store.delete_provider(id, &event).await?)?;
    tracing::info!(provider = %row.name, admin_id = ?context.user_id(), "provider removed");
    reload(store, upstreams).await;
    Ok(())
}

/// Two admins naming two providers alike at once: the unique index decides.
fn name_taken(err: sqlx::Error) -> Result<ProviderChange, sqlx::Error> {
    match store::unique_violation(&err) {
        Some(_) => Ok(ProviderChange::NameTaken),
        None => Err(err),
    }
}
