//! Profile changes by users themselves and account management by admins (and the command line).

use serde_json::json;
use uuid::Uuid;

use super::accounts::{duplicate_or, ensure_available};
use super::audit::ActionContext;
use super::{ServiceError, ServiceResult};
use crate::auth::passwords::hash_password;
use crate::schemas::users::UserUpdate;
use crate::store::audit::{AuditAction, AuditTarget, NewAuditEvent};
use crate::store::users::{AdminGuarded, User, UserChanges};
use crate::store::Store;

const OWN_ACTIVE_STATUS: &str = "You cannot change your own active status";
const OWN_ROLE: &str = "You cannot change your own role";
const LAST_ADMIN: &str = "The last active admin cannot be deactivated or demoted";

/// A user edits their own profile. `role` is ignored (as the original); changing one's own
/// active flag is refused. A new password ends every session of the user (the caller starts a
/// new one for the session that changed it).
pub async fn update_own_profile(store: &Store, context: &ActionContext, user: &User, update: UserUpdate) -> ServiceResult<User> {
    if update.is_active.is_some_and(|active| active != user.is_active()) {
        return Err(ServiceError::Forbidden(OWN_ACTIVE_STATUS));
    }
    let changes = UserUpdate { role: None, is_active: None, ..update };
    apply(store, context, user, changes).await
}

/// An admin (or the command line) edits an account, including its role and active flag (never
/// an admin's own). A new password or a changed active flag ends every session of the account.
pub async fn update_by_admin(store: &Store, context: &ActionContext, target: Uuid, update: UserUpdate) -> ServiceResult<User> {
    let current = existing(store, target).await?;
    if context.user_id() == Some(target) {
        if update.role.is_some_and(|role| role != current.role()) {
            return Err(ServiceError::Forbidden(OWN_ROLE));
        }
        if update.is_active.is_some_and(|active| !active) {
            return Err(ServiceError::Forbidden(OWN_ACTIVE_STATUS));
        }
    }
    let user = apply(store, context, &current, update).await?;
    tracing::info!(actor = context.actor.kind(), admin_id = ?context.user_id(), target_id = %target, role = user.role().as_str(), is_active = user.is_active(), "admin updated account");
    Ok(user)
}

/// An admin (or the command line) (de)activates an account; a change ends every session of it.
pub async fn set_active_by_admin(store: &Store, context: &ActionContext, target: Uuid, active: bool) -> ServiceResult<User> {
    if context.user_id() == Some(target) && !active {
        return Err(ServiceError::Forbidden(OWN_ACTIVE_STATUS));
    }
    let current = existing(store, target).await?;
    let user = apply(store, context, &current, UserUpdate { is_active: Some(active), ..UserUpdate::default() }).await?;
    tracing::info!(actor = context.actor.kind(), admin_id = ?context.user_id(), target_id = %target, is_active = active, "admin changed account status");
    Ok(user)
}

async fn existing(store: &Store, id: Uuid) -> ServiceResult<User> {
    store.user_by_id(id).await?.ok_or(ServiceError::NotFound("User not found"))
}

/// Applies the update to the account `current`. A username or e-mail address sent unchanged is
/// no change (an adopted name that breaks today's rules may be sent back as it is).
async fn apply(store: &Store, context: &ActionContext, current: &User, update: UserUpdate) -> ServiceResult<User> {
    let username = match update.username {
        Some(sent) => sent.change_from(&current.username).map_err(ServiceError::Invalid)?,
        None => None,
    };
    let email = update.email.filter(|email| *email != current.email);
    ensure_available(store, username.as_deref(), email.as_deref(), Some(current.id)).await?;
    let password_hash = match update.password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let password_changed = password_hash.is_some();
    let changes = UserChanges { username, email, password_hash, role: update.role, is_active: update.is_active };
    let audit = |updated: &User| change_events(context, current, updated, password_changed);
    match store.update_user(current.id, changes, audit).await.map_err(duplicate_or)? {
        AdminGuarded::Done(user) => Ok(user),
        AdminGuarded::NotFound => Err(ServiceError::NotFound("User not found")),
        AdminGuarded::LastAdmin => Err(ServiceError::Forbidden(LAST_ADMIN)),
    }
}

/// The audited parts of a change of an account: its role, its active flag, its password.
fn change_events(context: &ActionContext, before: &User, after: &User, password_changed: bool) -> Vec<NewAuditEvent> {
    let target = || Some(AuditTarget::user(after.id));
    let mut events = Vec::new();
    if before.role() != after.role() {
        let details = json!({ "from": before.role().as_str(), "to": after.role().as_str() });
        events.push(context.event(AuditAction::RoleChanged, target(), details));
    }
    if before.is_active() != after.is_active() {
        let action = if after.is_active() { AuditAction::Activated } else { AuditAction::Deactivated };
        events.push(context.event(action, target(), json!({})));
    }
    if password_changed {
        events.push(context.event(AuditAction::PasswordChanged, target(), json!({})));
    }
    events
}
