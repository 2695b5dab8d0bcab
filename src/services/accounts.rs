//! Registration, login, token refresh and logout.

use crate::auth::passwords::{hash_password, verify_password, Verification};
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::audit::ActionContext;
use super::{ServiceError, ServiceResult};
use crate::auth::tokens::{IssuedTokens, TokenKeys, TokenType};
use crate::background::BackgroundTasks;
use crate::config::{RateSpec, RegistrationPolicy};
use crate::schemas::users::{RegisterRequest, LOGIN_NAME_MAX_CHARS};
use crate::store::audit::{AuditAction, AuditTarget};
use crate::store::refresh_tokens::RefreshTokenRecord;
use crate::store::users::{NewUser, User};
use crate::store::{self, Store, UniqueRule};

pub fn username_taken() -> ServiceError {
    ServiceError::Refused("Username already registered".into())
}

pub fn email_taken() -> ServiceError {
    ServiceError::Refused("Email already registered".into())
}

/// Maps a unique-constraint failure (two requests racing for one name) to the contract's 400s.
pub fn duplicate_or(err: sqlx::Error) -> ServiceError {
    match store::unique_violation(&err) {
        Some(UniqueRule::Username) => username_taken(),
        Some(UniqueRule::Email) => email_taken(),
        _ => err.into(),
    }
}

/// Fails with the contract's 400 when the username or e-mail is used by another account.
pub async fn ensure_available(
    store: &Store,
    username: Option<&str>,
    email: Option<&str>,
    except: Option<uuid::Uuid>,
) -> ServiceResult<()> {
    if username.is_none() && email.is_none() {
        return Ok(());
    }
    let (name_taken, mail_taken) = store.taken_username_or_email(username, email, except).await?;
    if name_taken {
        return Err(username_taken());
    }
    if mail_taken {
        return Err(email_taken());
    }
    Ok(())
}

/// The first account becomes admin. `role` and `is_active` are honoured only when an admin
/// (or the command line) creates the account; with `REGISTRATION=closed` only they may.
pub async fn register(
    store: &Store,
    policy: &RegistrationPolicy,
    context: &ActionContext,
    request: RegisterRequest,
    by_admin: bool,
) -> ServiceResult<User> {
    // The very first account may always be made: it is the admin who opens the server.
    if !policy.open && !by_admin && store.has_users().await? {
        return Err(ServiceError::Forbidden("Registration is closed: ask an admin for an account"));
    }
    ensure_available(store, Some(&request.username), Some(&request.email), None).await?;
    let password_hash = hash_password(request.password).await?;
    let new = NewUser {
        username: request.username,
        email: request.email,
        password_hash,
        role: if by_admin { request.role } else { None },
        default_role: policy.default_role,
        is_active: if by_admin { request.is_active.unwrap_or(true) } else { true },
        created_at: store::now(),
    };
    let audit = |user: &User| {
        let details = json!({ "role": user.role().as_str(), "is_active": user.is_active(), "by_admin": by_admin });
        context.event(AuditAction::Register, Some(AuditTarget::user(user.id)), details)
    };
    let user = store.create_user(new, audit).await.map_err(duplicate_or)?;
    tracing::info!(user_id = %user.id, role = user.role().as_str(), by_admin, "account registered");
    Ok(user)
}

/// The account a login name refers to, if any (see [`Store::user_by_login_name`]).
pub async fn find_login_account(store: &Store, name: &str) -> ServiceResult<Option<User>> {
    Ok(store.user_by_login_name(name).await?)
}

/// Checks the password of `account` (`None`: no account has that name; a legacy bcrypt hash is
/// replaced by argon2id on success) and records the login, or the failure, in the audit log. A
/// wrong password is answered before the active flag is looked at, and only after the dummy work
/// that makes every failed login cost the same (see [`padding`]).
/// Whose password a login tries: an account (by whichever of its names), or a name no
/// account has (limited alike, so that a 429 does not tell whether an account exists).
#[derive(Clone, Copy, Debug)]
pub enum LoginTarget<'a> {
    Account(Uuid),
    UnknownName(&'a str),
}

impl LoginTarget<'_> {
    /// Its key in `login_attempts`: the account's id, or the name's key (see [`crate::names`]).
    fn subject(&self) -> String {
        match self {
            LoginTarget::Account(id) => format!("account:{id}"),
            LoginTarget::UnknownName(name) => {
                let key: String = crate::names::name_key(name).chars().take(LOGIN_NAME_MAX_CHARS).collect();
                format!("name:{key}")
            }
        }
    }
}

/// Counts a login attempt against the account or unknown name, refused beyond `limit` per
/// window. Counted in the database, so that every replica shares the budget.
pub async fn count_login_attempt(store: &Store, limit: RateSpec, target: LoginTarget<'_>) -> ServiceResult<()> {
    let now = store::now();
    let window = chrono::Duration::from_std(limit.per).unwrap_or(chrono::Duration::MAX);
    let counted = store.count_login_attempt(&target.subject(), now, now - window).await?;
    if u32::try_from(counted.attempts).unwrap_or(u32::MAX) <= limit.count {
        return Ok(());
    }
    crate::metrics::rate_limited("login_per_account");
    let ends_in = (counted.window_started_at + window - now).num_seconds().max(0);
    Err(ServiceError::Limited { limit: limit.describe(), retry_after_secs: u64::try_from(ends_in).unwrap_or(0) + 1 })
}

/// Forgets ended login windows every minute, so unknown names tried by an attacker do not pile up.
pub fn spawn_login_attempt_pruning(background: &BackgroundTasks, store: Store, limit: RateSpec) {
    background.every_awaiting(Duration::from_secs(60), move || {
        let store = store.clone();
        async move {
            let window = chrono::Duration::from_std(limit.per).unwrap_or(chrono::Duration::MAX);
            if let Err(err) = store.prune_login_attempts(store::now() - window).await {
                tracing::warn!(error = %err, "pruning ended login windows failed");
            }
        }
    });
}

pub async fn login(store: &Store, context: &ActionContext, account: Option<User>, password: String) -> ServiceResult<User> {
    let stored_hash = account.as_ref().map(|u| u.password_hash.clone());
    let checked = CheckedHash::of(stored_hash.as_deref());
    let account_id = account.as_ref().map(|user| user.id);
    let verification = verify_password(password.clone(), stored_hash).await?;
    let (Some(mut user), Verification::Match | Verification::MatchRehashed(_)) = (account, &verification) else {
        pad_failed_login(store, checked, password).await?;
        // The name tried is not kept when no account has it: people type passwords there.
        let (target, reason) = match account_id {
            Some(id) => (Some(AuditTarget::user(id)), "wrong_password"),
            None => (None, "unknown_name"),
        };
        store.record_audit(&context.event(AuditAction::LoginFailed, target, json!({ "reason": reason }))).await?;
        return Err(ServiceError::IncorrectLogin);
    };
    if !user.is_active() {
        let event = context.event(AuditAction::LoginFailed, Some(AuditTarget::user(user.id)), json!({ "reason": "inactive" }));
        store.record_audit(&event).await?;
        return Err(ServiceError::InactiveUser);
    }
    let rehashed = match verification {
        Verification::MatchRehashed(hash) => Some(hash),
        _ => None,
    };
    let at = store::now();
    let event = context.as_user(user.id).event(
        AuditAction::Login,
        Some(AuditTarget::user(user.id)),
        json!({ "password_hash_upgraded": rehashed.is_some() }),
    );
    store.record_login(user.id, at, rehashed.as_deref(), &event).await?;
    if rehashed.is_some() {
        tracing::info!(user_id = %user.id, "password hash upgraded to argon2id");
    }
    user.last_login = Some(at);
    Ok(user)
}

/// The kind of hash a login's check computed: the account's, or argon2 (the dummy hash an
/// unknown name is checked against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckedHash {
    Argon2,
    Bcrypt,
}

impl CheckedHash {
    fn of(stored: Option<&str>) -> CheckedHash {
        match stored {
            Some(hash) if hash.starts_with("$2") => CheckedHash::Bcrypt,
            _ => CheckedHash::Argon2,
        }
    }
}

/// Dummy checks added to a failed login.
#[derive(Debug, Default, PartialEq, Eq)]
struct Padding {
    argon2: bool,
    bcrypt: bool,
}

/// What a failed login adds to the check it made so that it costs the same for an unknown name,
/// an argon2 account and an account with one of the original's bcrypt hashes (230 ms at cost 12
/// against argon2's ~20 ms): one argon2 and, while any bcrypt hash remains, one bcrypt check.
/// Otherwise the slow answers would point out the accounts that have not logged in since the
/// migration.
fn padding(checked: CheckedHash, bcrypt_hashes_remain: bool) -> Padding {
    match checked {
        CheckedHash::Bcrypt => Padding { argon2: true, bcrypt: false },
        CheckedHash::Argon2 => Padding { argon2: false, bcrypt: bcrypt_hashes_remain },
    }
}

/// A bcrypt hash at the original's cost (12) of a password nobody knows: failed logins check it
/// while any of the original's bcrypt hashes remain.
const DUMMY_BCRYPT_HASH: &str = "$2b$12$JCn/LnvODOL3eR41EFhGr.kNjQVjxgu/ndNEMnjGGWRBgtyltlVTu";

async fn pad_failed_login(store: &Store, checked: CheckedHash, password: String) -> ServiceResult<()> {
    let bcrypt_hashes_remain = checked == CheckedHash::Bcrypt || store.bcrypt_hashes_remain().await?;
    let padding = padding(checked, bcrypt_hashes_remain);
    if padding.argon2 {
        verify_password(password.clone(), None).await?;
    }
    if padding.bcrypt {
        verify_password(password, Some(DUMMY_BCRYPT_HASH.to_owned())).await?;
    }
    Ok(())
}

/// Starts a login's chain of refresh tokens and issues the first tokens.
pub async fn start_session(store: &Store, keys: &TokenKeys, user: &User) -> ServiceResult<IssuedTokens> {
    issue_in_family(store, keys, user, Uuid::new_v4()).await
}

async fn issue_in_family(store: &Store, keys: &TokenKeys, user: &User, family_id: Uuid) -> ServiceResult<IssuedTokens> {
    let issued_at = store::now();
    let record = RefreshTokenRecord {
        id: Uuid::new_v4(),
        user_id: user.id,
        family_id,
        issued_at,
        expires_at: issued_at + chrono::Duration::from_std(keys.refresh_ttl).unwrap_or(chrono::Duration::days(7)),
        used_at: None,
        revoked_at: None,
    };
    store.record_refresh_token(&record).await?;
    Ok(keys.issue(user, record.id))
}

/// Exchanges a refresh token for new tokens, retiring it. A retired token presented again
/// revokes its whole chain (someone else has a copy), except within a short grace window,
/// when the SPA's tabs refresh at the same moment.
pub async fn refresh(
    store: &Store,
    context: &ActionContext,
    keys: &TokenKeys,
    refresh_token: Option<&str>,
    grace: Duration,
) -> ServiceResult<(User, IssuedTokens)> {
    let token = refresh_token.ok_or(ServiceError::InvalidCredentials)?;
    let verified = keys.verify(token, TokenType::Refresh).map_err(|_| ServiceError::InvalidCredentials)?;
    let token_id = verified.token_id.ok_or(ServiceError::InvalidCredentials)?;
    let user = store.user_by_id(verified.user_id).await?.ok_or(ServiceError::InvalidCredentials)?;
    if !user.is_active() || user.token_version != verified.token_version {
        return Err(ServiceError::InvalidCredentials);
    }
    let record = store.refresh_token(token_id).await?.ok_or(ServiceError::InvalidCredentials)?;
    if record.user_id != user.id || record.revoked_at.is_some() {
        return Err(ServiceError::InvalidCredentials);
    }
    let now = store::now();
    if !store.use_refresh_token(token_id, now).await? {
        let used_at = store.refresh_token(token_id).await?.and_then(|r| r.used_at);
        let within_grace = used_at.is_some_and(|at| (now - at).to_std().unwrap_or_default() <= grace);
        if !within_grace {
            // The presenter holds a token of the user's; who they are is not known.
            let event = context.event(
                AuditAction::RefreshReuse,
                Some(AuditTarget::user(user.id)),
                json!({ "family_id": record.family_id }),
            );
            store.revoke_refresh_family(record.family_id, now, &event).await?;
            tracing::warn!(user_id = %user.id, family_id = %record.family_id, "retired refresh token reused: login chain revoked");
            return Err(ServiceError::InvalidCredentials);
        }
    }
    let tokens = issue_in_family(store, keys, &user, record.family_id).await?;
    Ok((user, tokens))
}

/// Ends every session of the user: every token issued so far is refused.
pub async fn logout(store: &Store, context: &ActionContext, user: &User) -> ServiceResult<()> {
    store.end_sessions(user.id, &context.event(AuditAction::Logout, Some(AuditTarget::user(user.id)), json!({}))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_check_a_dummy_bcrypt_hash_while_bcrypt_hashes_remain() {
        let argon2 = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let bcrypt = "$2b$12$TgOvks7N0atqYr9mtSgN6Oo4PPOw8CNteOTpEs4u4w3/aYBnBsOxu";
        for (stored, remain, expected) in [
            // An unknown name: the dummy argon2 check, plus a bcrypt one while any remain.
            (None, true, Padding { argon2: false, bcrypt: true }),
            (None, false, Padding::default()),
            // An account migrated to (or created with) argon2: the same.
            (Some(argon2), true, Padding { argon2: false, bcrypt: true }),
            (Some(argon2), false, Padding::default()),
            // An account with the original's bcrypt hash: an argon2 check on top of its own.
            (Some(bcrypt), true, Padding { argon2: true, bcrypt: false }),
        ] {
            assert_eq!(padding(CheckedHash::of(stored), remain), expected, "{stored:?}, bcrypt hashes remain: {remain}");
        }
    }

    #[test]
    fn the_dummy_bcrypt_hash_costs_what_the_originals_do() {
        assert!(DUMMY_BCRYPT_HASH.starts_with("$2b$12$"), "{DUMMY_BCRYPT_HASH}");
        assert_eq!(bcrypt::verify("Correct-horse-1", DUMMY_BCRYPT_HASH).ok(), Some(false));
    }
}
