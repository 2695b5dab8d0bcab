//! Profile changes by users themselves and account management by admins.

use uuid::Uuid;

use super::accounts::{duplicate_or, ensure_available};
use crate::auth::passwords::hash_password;
use crate::error::{ApiError, ApiResult};
use crate::schemas::users::UserUpdate;
use crate::store::users::{AdminGuarded, User, UserChanges};
use crate::store::Store;

const OWN_ACTIVE_STATUS: &str = "You cannot change your own active status";
const OWN_ROLE: &str = "You cannot change your own role";
const LAST_ADMIN: &str = "The last active admin cannot be deactivated or demoted";

/// A user edits their own profile. `role` is ignored (as the original); changing one's own
/// active flag is refused.
pub async fn update_own_profile(store: &Store, user: &User, update: UserUpdate) -> ApiResult<User> {
    if update.is_active.is_some_and(|active| active != user.is_active()) {
        return Err(ApiError::Forbidden(OWN_ACTIVE_STATUS));
    }
    let changes = UserUpdate { role: None, is_active: None, ..update };
    apply(store, user.id, changes).await
}

/// An admin edits an account, including its role and active flag (never their own).
pub async fn update_by_admin(store: &Store, admin: &User, target: Uuid, update: UserUpdate) -> ApiResult<User> {
    if target == admin.id {
        if update.role.is_some_and(|role| role != admin.role()) {
            return Err(ApiError::Forbidden(OWN_ROLE));
        }
        if update.is_active.is_some_and(|active| !active) {
            return Err(ApiError::Forbidden(OWN_ACTIVE_STATUS));
        }
    }
    let user = apply(store, target, update).await?;
    tracing::info!(admin_id = %admin.id, target_id = %target, role = user.role().as_str(), is_active = user.is_active(), "admin updated account");
    Ok(user)
}

/// An admin (de)activates an account.
pub async fn set_active_by_admin(store: &Store, admin: &User, target: Uuid, active: bool) -> ApiResult<User> {
    if target == admin.id && !active {
        return Err(ApiError::Forbidden(OWN_ACTIVE_STATUS));
    }
    let user = apply(store, target, UserUpdate { is_active: Some(active), ..UserUpdate::default() }).await?;
    tracing::info!(admin_id = %admin.id, target_id = %target, is_active = active, "admin changed account status");
    Ok(user)
}

async fn apply(store: &Store, id: Uuid, update: UserUpdate) -> ApiResult<User> {
    ensure_available(store, update.username.as_deref(), update.email.as_deref(), Some(id)).await?;
    let password_hash = match update.password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let changes = UserChanges {
        username: update.username,
        email: update.email,
        password_hash,
        role: update.role,
        is_active: update.is_active,
    };
    match store.update_user(id, changes).await.map_err(duplicate_or)? {
        AdminGuarded::Done(user) => Ok(user),
        AdminGuarded::NotFound => Err(ApiError::NotFound("User not found")),
        AdminGuarded::LastAdmin => Err(ApiError::Forbidden(LAST_ADMIN)),
    }
}
