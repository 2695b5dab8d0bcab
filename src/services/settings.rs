//! User settings: read with auto-creation, partial updates.

use serde_json::json;
use uuid::Uuid;

use super::audit::ActionContext;
use super::{ServiceError, ServiceResult};
use crate::schemas::settings::SettingsUpdate;
use crate::store::audit::{AuditAction, AuditTarget, NewAuditEvent};
use crate::store::settings::{SettingsChanges, UserSettings};
use crate::store::users::User;
use crate::store::Store;

/// The user's settings, created with defaults (display name = username) when missing.
pub async fn settings_of(store: &Store, user: &User) -> ServiceResult<UserSettings> {
    store.settings_or_default(user.id, &user.username).await?.ok_or(ServiceError::NotFound("User not found"))
}

/// Changes only the fields sent; a missing row is first created with the defaults.
pub async fn update_settings(store: &Store, user: &User, update: SettingsUpdate) -> ServiceResult<UserSettings> {
    apply(store, user, &update.into(), None).await
}

async fn apply(
    store: &Store,
    user: &User,
    changes: &SettingsChanges,
    event: Option<&NewAuditEvent>,
) -> ServiceResult<UserSettings> {
    if let Some(updated) = store.update_settings(user.id, changes, event).await? {
        return Ok(updated);
    }
    settings_of(store, user).await?;
    store.update_settings(user.id, changes, event).await?.ok_or(ServiceError::NotFound("User not found"))
}

/// An admin reads another user's settings (no auto-creation).
pub async fn settings_for_admin(store: &Store, user_id: Uuid) -> ServiceResult<UserSettings> {
    store.settings(user_id).await?.ok_or(ServiceError::NotFound("Settings not found"))
}

/// An admin changes a user's settings; the audit log names the fields changed, not their values.
pub async fn update_settings_for_admin(
    store: &Store,
    context: &ActionContext,
    user_id: Uuid,
    update: SettingsUpdate,
) -> ServiceResult<UserSettings> {
    let user = store.user_by_id(user_id).await?.ok_or(ServiceError::NotFound("User not found"))?;
    let changes: SettingsChanges = update.into();
    let fields: Vec<&str> = [
        ("default_model_id", changes.default_model_id.is_some()),
        ("display_name", changes.display_name.is_some()),
        ("avatar_url", changes.avatar_url.is_some()),
        ("preferences", changes.preferences.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    let event = context.event(AuditAction::SettingsUpdated, Some(AuditTarget::user(user_id)), json!({ "fields": fields }));
    let settings = apply(store, &user, &changes, Some(&event)).await?;
    tracing::info!(admin_id = ?context.user_id(), target_id = %user_id, "admin updated settings");
    Ok(settings)
}

pub async fn delete_settings_for_admin(store: &Store, context: &ActionContext, user_id: Uuid) -> ServiceResult<()> {
    let event = context.event(AuditAction::SettingsDeleted, Some(AuditTarget::user(user_id)), json!({}));
    if !store.delete_settings(user_id, &event).await? {
        return Err(ServiceError::NotFound("Settings not found"));
    }
    tracing::info!(admin_id = ?context.user_id(), target_id = %user_id, "admin deleted settings");
    Ok(())
}
