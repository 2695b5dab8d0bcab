use std::collections::HashSet;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{in_transaction, on_pool, TxEnd};
use crate::names::{is_email_like, name_key};

use super::audit::{self, NewAuditEvent};
use super::refresh_tokens::REVOKE_USERS_TOKENS;
use super::Store;

crate::text_enum! {
    /// `users.role`, the PostgreSQL enum `user_role_enum` of the original (TEXT on SQLite).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, sqlx::Type, Serialize, Deserialize, utoipa::ToSchema)]
    #[sqlx(type_name = "user_role_enum", rename_all = "lowercase")]
    #[serde(rename_all = "lowercase")]
    pub enum Role {
        Guest = "guest",
        User = "user",
        Admin = "admin",
    }
}

/// A row of `users`. Columns the original left nullable stay `Option` so adopted rows decode.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub role: Option<Role>,
    pub created_at: Option<NaiveDateTime>,
    pub last_login: Option<NaiveDateTime>,
    pub is_active: Option<bool>,
    pub token_version: i32,
}

impl User {
    /// The original treats a NULL role as a plain user.
    pub fn role(&self) -> Role {
        self.role.unwrap_or(Role::User)
    }
    /// The original's column default is `True`; NULL only appears in hand-made rows.
    pub fn is_active(&self) -> bool {
        self.is_active.unwrap_or(true)
    }
    pub fn is_admin(&self) -> bool {
        self.role() == Role::Admin
    }
}

pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password_hash: String,
    /// `None`: admin when this is the first user, otherwise `default_role`.
    pub role: Option<Role>,
    pub default_role: Role,
    pub is_active: bool,
    pub created_at: NaiveDateTime,
}

/// Columns to change; `None` leaves a column as it is.
#[derive(Default)]
pub struct UserChanges {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

const USER_COLUMNS: &str = "id, username, email, password_hash, role, created_at, last_login, is_active, token_version";

impl Store {
    /// Inserts the user, their default settings (display name = username) and the audit event
    /// `audit` makes of the new account, in one transaction. Without an explicit role the first
    /// account becomes admin.
    pub async fn create_user(&self, new: NewUser, audit: impl Fn(&User) -> NewAuditEvent) -> Result<User, sqlx::Error> {
        let id = Uuid::new_v4();
        // The role is decided inside the INSERT, which is the transaction's first statement:
        // SQLite then takes the write lock at once instead of failing to upgrade a read.
        let (role_if_others, role_if_first) = match new.role {
            Some(role) => (role, role),
            None => (new.default_role, Role::Admin),
        };
        let insert = format!(
            "INSERT INTO users (id, username, email, password_hash, role, created_at, last_login, is_active, token_version) \
             SELECT $1, $2, $3, $4, CASE WHEN EXISTS (SELECT 1 FROM users) THEN $5 ELSE $6 END, $7, NULL, $8, 1 \
             RETURNING {USER_COLUMNS}"
        );
        in_transaction!(self, tx => {
            let user: User = sqlx::query_as(&insert)
                .bind(id)
                .bind(&new.username)
                .bind(&new.email)
                .bind(&new.password_hash)
                .bind(role_if_others)
                .bind(role_if_first)
                .bind(new.created_at)
                .bind(new.is_active)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO user_settings (user_id, display_name) VALUES ($1, $2)")
                .bind(id)
                .bind(&new.username)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO name_keys (user_id, username_key, email_key) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(name_key(&new.username))
                .bind(name_key(&new.email))
                .execute(&mut *tx)
                .await?;
            audit::record(&mut *tx, &audit(&user)).await?;
            Ok(TxEnd::Commit(user))
        })
    }

    /// The user, from the user cache when it holds a fresh copy.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, sqlx::Error> {
        let ticket = match self.users.get(&id) {
            Ok(user) => return Ok(Some(user)),
            Err(ticket) => ticket,
        };
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let user: Option<User> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        if let Some(user) = &user {
            self.users.put(ticket, id, user);
        }
        Ok(user)
    }

    /// Runs a write to the user's row, then forgets the cached copy, whatever the outcome (a
    /// failed commit may still have committed).
    async fn changing_user<T>(&self, id: Uuid, write: impl std::future::Future<Output = T>) -> T {
        let result = write.await;
        self.users.forget(&id);
        self.announce(super::Change::User { id });
        result
    }

    /// The account a login name refers to. A name with an `@` is an e-mail address: exactly as
    /// stored, then by key (see [`crate::names`]), then ASCII case-insensitively; only when no
    /// address matches may a username with an `@` (adopted from the original) match. Otherwise
    /// the name is a username: exactly as stored, then by key. Exact spellings come first so
    /// that accounts whose names collide with an older account's (and so have no key) still
    /// find their own.
    pub async fn user_by_login_name(&self, name: &str) -> Result<Option<User>, sqlx::Error> {
        let by_username = format!(
            "SELECT {USER_COLUMNS}, 3 AS priority FROM users WHERE username = $1 \
             UNION ALL SELECT {USER_COLUMNS}, 4 AS priority FROM users \
               WHERE id = (SELECT user_id FROM name_keys WHERE username_key = $2)"
        );
        let sql = if is_email_like(name) {
            format!(
                "SELECT {USER_COLUMNS}, 0 AS priority FROM users WHERE email = $1 \
                 UNION ALL SELECT {USER_COLUMNS}, 1 AS priority FROM users \
                   WHERE id = (SELECT user_id FROM name_keys WHERE email_key = $2) \
                 UNION ALL SELECT {USER_COLUMNS}, 2 AS priority FROM users WHERE lower(email) = lower($1) \
                 UNION ALL {by_username} ORDER BY priority LIMIT 1"
            )
        } else {
            format!("{by_username} ORDER BY priority LIMIT 1")
        };
        let key = name_key(name);
        on_pool!(self, pool => sqlx::query_as(&sql).bind(name).bind(&key).fetch_optional(pool).await)
    }

    /// Whether another account already uses this username or e-mail address: the same key, or
    /// (for accounts without keys) the same username or the same address ignoring ASCII case.
    pub async fn taken_username_or_email(
        &self,
        username: Option<&str>,
        email: Option<&str>,
        except: Option<Uuid>,
    ) -> Result<(bool, bool), sqlx::Error> {
        let sql = "SELECT \
                     (SELECT COUNT(*) FROM users WHERE username = $1 AND id <> $5) \
                       + (SELECT COUNT(*) FROM name_keys WHERE username_key = $2 AND user_id <> $5) AS username_taken, \
                     (SELECT COUNT(*) FROM users WHERE lower(email) = lower($3) AND id <> $5) \
                       + (SELECT COUNT(*) FROM name_keys WHERE email_key = $4 AND user_id <> $5) AS email_taken";
        let except = except.unwrap_or(Uuid::nil());
        let (username_taken, email_taken): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(username)
                .bind(username.map(name_key))
                .bind(email)
                .bind(email.map(name_key))
                .bind(except)
                .fetch_one(pool)
                .await
        })?;
        Ok((username_taken > 0, email_taken > 0))
    }

    /// Users ordered by creation, then id (stable pages).
    pub async fn list_users(&self, skip: i64, limit: i64) -> Result<Vec<User>, sqlx::Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(limit).bind(skip).fetch_all(pool).await)
    }

    /// Applies `changes` unless they would leave no active admin, with the audit events `audit`
    /// makes of the changed row. A new password or a changed active flag ends every session of
    /// the user in the same transaction: `token_version` moves (every token issued so far is
    /// refused) and every refresh token is revoked.
    pub async fn update_user(
        &self,
        id: Uuid,
        changes: UserChanges,
        audit: impl Fn(&User) -> Vec<NewAuditEvent>,
    ) -> Result<AdminGuarded<User>, sqlx::Error> {
        let revoke =
            format!("{REVOKE_USERS_TOKENS} AND EXISTS (SELECT 1 FROM users WHERE id = $1 AND {})", ends_sessions("$3", "$4"));
        let update = format!(
            "UPDATE users SET username = COALESCE($2, username), email = COALESCE($3, email), \
               password_hash = COALESCE($4, password_hash), role = COALESCE($5, role), \
               is_active = COALESCE($6, is_active), \
               token_version = token_version + CASE WHEN {} THEN 1 ELSE 0 END \
             WHERE id = $1 RETURNING {USER_COLUMNS}",
            ends_sessions("$4", "$6")
        );
        let username_key = changes.username.as_deref().map(name_key);
        let email_key = changes.email.as_deref().map(name_key);
        // Two admins demoting each other at once must leave one: on PostgreSQL each change that
        // may remove an admin first locks every active admin (in one order), so the second waits
        // for the first and then counts what it left. SQLite runs one writer at a time.
        let may_remove_an_admin = changes.role.is_some() || changes.is_active == Some(false);
        // Only a new password or an active flag can end sessions (the SQL checks the flag changed).
        let may_end_sessions = changes.password_hash.is_some() || changes.is_active.is_some();
        let lock_admins = (may_remove_an_admin && self.is_postgres())
            .then_some("SELECT id FROM users WHERE role = 'admin' AND COALESCE(is_active, TRUE) ORDER BY id FOR UPDATE");
        self.changing_user(id, async {
            in_transaction!(self, tx => {
                if let Some(lock) = lock_admins {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                // Writes first, then checks: a write first keeps SQLite from failing to upgrade a
                // read. The revocation reads the row as it is before the update, so it comes first.
                if may_end_sessions {
                    sqlx::query(&revoke)
                        .bind(id)
                        .bind(super::now())
                        .bind(&changes.password_hash)
                        .bind(changes.is_active)
                        .execute(&mut *tx)
                        .await?;
                }
                let updated: Option<User> = sqlx::query_as(&update)
                    .bind(id)
                    .bind(&changes.username)
                    .bind(&changes.email)
                    .bind(&changes.password_hash)
                    .bind(changes.role)
                    .bind(changes.is_active)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(updated) = updated else { return Ok(TxEnd::Rollback(AdminGuarded::NotFound)) };
                if username_key.is_some() || email_key.is_some() {
                    sqlx::query(
                        "INSERT INTO name_keys (user_id, username_key, email_key) VALUES ($1, $2, $3) \
                         ON CONFLICT (user_id) DO UPDATE SET \
                           username_key = COALESCE(excluded.username_key, name_keys.username_key), \
                           email_key = COALESCE(excluded.email_key, name_keys.email_key)",
                    )
                    .bind(id)
                    .bind(&username_key)
                    .bind(&email_key)
                    .execute(&mut *tx)
                    .await?;
                }
                // Before the last-admin check: a refused change takes its events back with it.
                for event in audit(&updated) {
                    audit::record(&mut *tx, &event).await?;
                }
                if may_remove_an_admin {
                    let admins: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND COALESCE(is_active, TRUE)",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    if admins == 0 {
                        return Ok(TxEnd::Rollback(AdminGuarded::LastAdmin));
                    }
                }
                Ok(TxEnd::Commit(AdminGuarded::Done(updated)))
            })
        })
        .await
    }

    /// Records a successful login (and the password hash that replaces a legacy one) with its
    /// audit event.
    pub async fn record_login(
        &self,
        id: Uuid,
        at: NaiveDateTime,
        new_password_hash: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<(), sqlx::Error> {
        self.changing_user(id, async {
            in_transaction!(self, tx => {
                sqlx::query("UPDATE users SET last_login = $2, password_hash = COALESCE($3, password_hash) WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .bind(new_password_hash)
                    .execute(&mut *tx)
                    .await?;
                audit::record(&mut *tx, event).await?;
                Ok(TxEnd::Commit(()))
            })
        })
        .await
    }

    /// Ends every session of the user (logout): every token issued so far is refused.
    pub async fn end_sessions(&self, id: Uuid, event: &NewAuditEvent) -> Result<(), sqlx::Error> {
        self.changing_user(id, async {
            in_transaction!(self, tx => {
                sqlx::query(REVOKE_USERS_TOKENS).bind(id).bind(super::now()).execute(&mut *tx).await?;
                sqlx::query("UPDATE users SET token_version = token_version + 1 WHERE id = $1").bind(id).execute(&mut *tx).await?;
                audit::record(&mut *tx, event).await?;
                Ok(TxEnd::Commit(()))
            })
        })
        .await
    }

    /// Whether any account still has one of the original's bcrypt hashes (each is replaced at
    /// its account's next successful login).
    /// Whether any account exists.
    pub async fn has_users(&self) -> Result<bool, sqlx::Error> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)").fetch_one(pool).await)
    }

    pub async fn bcrypt_hashes_remain(&self) -> Result<bool, sqlx::Error> {
        // Served by the partial index `users_bcrypt_hash_idx`.
        let sql = "SELECT COUNT(*) FROM (SELECT 1 FROM users WHERE password_hash LIKE '$2%' LIMIT 1) AS legacy";
        let found: i64 = on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)?;
        Ok(found > 0)
    }

    /// Gives every account the keys of its current names (startup): accounts written by the
    /// original backend (or while it ran again after a rollback) have none, or stale ones. An
    /// account whose name has the key of an older account's name gets no key for it: it keeps
    /// its name and logs in with its exact spelling. Returns how many accounts changed.
    pub async fn fill_name_keys(&self) -> Result<usize, sqlx::Error> {
        let postgres = self.is_postgres();
        in_transaction!(self, tx => {
            if postgres {
                // Replicas starting at once take turns.
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(NAME_KEYS_LOCK).execute(&mut *tx).await?;
            }
            let accounts: Vec<KeyedAccount> = sqlx::query_as(
                "SELECT u.id, u.username, u.email, k.user_id AS keyed, k.username_key, k.email_key \
                 FROM users u LEFT JOIN name_keys k ON k.user_id = u.id \
                 ORDER BY (u.created_at IS NULL), u.created_at, u.id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let changes = plan_name_keys(&accounts);
            for change in changes.iter().filter(|c| c.keyed) {
                sqlx::query("DELETE FROM name_keys WHERE user_id = $1").bind(change.user_id).execute(&mut *tx).await?;
            }
            for change in changes.iter().filter(|c| c.username_key.is_some() || c.email_key.is_some()) {
                sqlx::query("INSERT INTO name_keys (user_id, username_key, email_key) VALUES ($1, $2, $3)")
                    .bind(change.user_id)
                    .bind(&change.username_key)
                    .bind(&change.email_key)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(TxEnd::Commit(changes.len()))
        })
    }
}

/// Whether a change ends the account's sessions: a new password hash, or an active flag other
/// than the current one. Evaluated over the row before the change; `hash` and `active` are the
/// placeholders of the new values.
fn ends_sessions(hash: &str, active: &str) -> String {
    format!("({hash} IS NOT NULL OR ({active} IS NOT NULL AND {active} <> COALESCE(is_active, TRUE)))")
}

/// Serialises [`Store::fill_name_keys`] between instances starting at once (an arbitrary key).
const NAME_KEYS_LOCK: i64 = 0x6e61_6d65_6b65; // "nameke"

/// An account's names and the keys stored for them.
#[derive(Debug, Clone, sqlx::FromRow)]
struct KeyedAccount {
    id: Uuid,
    username: String,
    email: String,
    /// Whether the account has a row in `name_keys`.
    keyed: Option<Uuid>,
    username_key: Option<String>,
    email_key: Option<String>,
}

/// The keys an account gets at startup.
#[derive(Debug, PartialEq, Eq)]
struct NameKeysChange {
    user_id: Uuid,
    /// It had a row in `name_keys` (replaced).
    keyed: bool,
    username_key: Option<String>,
    email_key: Option<String>,
}

/// Which accounts get which keys, `accounts` being ordered oldest first. Keys that match their
/// account's names stay; a missing or stale key becomes the name's key unless another account
/// holds it or an older one claims it first.
fn plan_name_keys(accounts: &[KeyedAccount]) -> Vec<NameKeysChange> {
    let wanted: Vec<(String, String)> = accounts.iter().map(|a| (name_key(&a.username), name_key(&a.email))).collect();
    let mut usernames: HashSet<&str> = HashSet::new();
    let mut emails: HashSet<&str> = HashSet::new();
    for (account, (username_key, email_key)) in accounts.iter().zip(&wanted) {
        if account.username_key.as_deref() == Some(username_key) {
            usernames.insert(username_key);
        }
        if account.email_key.as_deref() == Some(email_key) {
            emails.insert(email_key);
        }
    }
    let mut changes = Vec::new();
    for (account, (username_key, email_key)) in accounts.iter().zip(&wanted) {
        let username = claim(&account.username_key, username_key, &mut usernames);
        let email = claim(&account.email_key, email_key, &mut emails);
        let unchanged = if account.keyed.is_some() {
            account.username_key == username && account.email_key == email
        } else {
            username.is_none() && email.is_none()
        };
        if !unchanged {
            changes.push(NameKeysChange {
                user_id: account.id,
                keyed: account.keyed.is_some(),
                username_key: username,
                email_key: email,
            });
        }
    }
    changes
}

/// The key an account gets: the one it holds when that is right, else `wanted` if nobody holds it.
fn claim<'a>(current: &Option<String>, wanted: &'a str, held: &mut HashSet<&'a str>) -> Option<String> {
    (current.as_deref() == Some(wanted) || held.insert(wanted)).then(|| wanted.to_owned())
}

/// Outcome of a change that must leave at least one active admin.
pub enum AdminGuarded<T> {
    Done(T),
    NotFound,
    LastAdmin,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u128, username: &str, email: &str, keys: Option<(Option<&str>, Option<&str>)>) -> KeyedAccount {
        KeyedAccount {
            id: Uuid::from_u128(n),
            username: username.into(),
            email: email.into(),
            keyed: keys.map(|_| Uuid::from_u128(n)),
            username_key: keys.and_then(|k| k.0.map(str::to_owned)),
            email_key: keys.and_then(|k| k.1.map(str::to_owned)),
        }
    }

    fn change(n: u128, keyed: bool, username_key: Option<&str>, email_key: Option<&str>) -> NameKeysChange {
        NameKeysChange {
            user_id: Uuid::from_u128(n),
            keyed,
            username_key: username_key.map(str::to_owned),
            email_key: email_key.map(str::to_owned),
        }
    }

    #[test]
    fn the_oldest_account_gets_a_contested_key_and_the_others_keep_their_names_without_it() {
        let accounts = [
            account(1, "Bob", "bob@x.example", None),
            account(2, "bob", "Bob@X.example", None),
            account(3, "ann", "ann@x.example", Some((Some("ann"), Some("ann@x.example")))),
        ];
        assert_eq!(
            plan_name_keys(&accounts),
            [change(1, false, Some("bob"), Some("bob@x.example"))],
            "the second bob gets no row at all; ann is already right"
        );
    }

    #[test]
    fn held_keys_stay_with_their_holders_and_stale_keys_are_replaced() {
        let accounts = [
            // Older, but renamed to a name whose key a newer account holds.
            account(1, "CAROL", "c1@x.example", Some((Some("old_name"), Some("c1@x.example")))),
            account(2, "carol", "c2@x.example", Some((Some("carol"), Some("c2@x.example")))),
            account(3, "old_name", "c3@x.example", None),
        ];
        assert_eq!(
            plan_name_keys(&accounts),
            [change(1, true, None, Some("c1@x.example")), change(3, false, Some("old_name"), Some("c3@x.example"))]
        );
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let accounts = [
            account(1, "Bob", "bob@x.example", Some((Some("bob"), Some("bob@x.example")))),
            account(2, "bob", "bob2@x.example", Some((None, Some("bob2@x.example")))),
        ];
        assert!(plan_name_keys(&accounts).is_empty());
    }
}

/// How many accounts have a role and an active flag.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountCount {
    pub role: Option<Role>,
    pub active: bool,
    pub count: i64,
}

impl Store {
    pub async fn account_counts(&self) -> Result<Vec<AccountCount>, sqlx::Error> {
        let sql = "SELECT role, COALESCE(is_active, TRUE) AS active, COUNT(*) AS count FROM users GROUP BY role, COALESCE(is_active, TRUE)";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
    }
}
