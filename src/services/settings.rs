//! User settings: read with auto-creation, partial updates.

use uuid::Uuid;

use super::{ServiceError, ServiceResult};
use crate::schemas::settings::SettingsUpdate;
use crate::store::settings::UserSettings;
use crate::store::users::User;
use crate::store::Store;

/// The user's settings, created with defaults (display name = username) when missing.
pub async fn settings_of(store: &Store, user: &User) -> ServiceResult<UserSettings> {
    store.settings_or_default(user.id, &user.username).await?.ok_or(ServiceError::NotFound("User not found"))
}

/// Changes only the fields sent; a missing row is first created with the defaults.
pub async fn update_settings(store: &Store, user: &User, update: SettingsUpdate) -> ServiceResult<UserSettings> {
    let changes = update.into();
    if let Some(updated) = store.update_settings(user.id, &changes).await? {
        return Ok(updated);
    }
    settings_of(store, user).await?;
    store.update_settings(user.id, &changes).await?.ok_or(ServiceError::NotFound("User not found"))
}

/// An admin reads another user's settings (no auto-creation).
pub async fn settings_for_admin(store: &Store, user_id: Uuid) -> ServiceResult<UserSettings> {
    store.settings(user_id).await?.ok_or(ServiceError::NotFound("Settings not found"))
}

pub async fn update_settings_for_admin(
    store: &Store,
    admin: &User,
    user_id: Uuid,
    update: SettingsUpdate,
) -> ServiceResult<UserSettings> {
    let user = store.user_by_id(user_id).await?.ok_or(ServiceError::NotFound("User not found"))?;
    let settings = update_settings(store, &user, update).await?;
    tracing::info!(admin_id = %admin.id, target_id = %user_id, "admin updated settings");
    Ok(settings)
}

pub async fn delete_settings_for_admin(store: &Store, admin: &User, user_id: Uuid) -> ServiceResult<()> {
    if !store.delete_settings(user_id).await? {
        return Err(ServiceError::NotFound("Settings not found"));
    }
    tracing::info!(admin_id = %admin.id, target_id = %user_id, "admin deleted settings");
    Ok(())
}
