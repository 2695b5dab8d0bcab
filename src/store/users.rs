use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{in_transaction, on_pool};

use super::Store;

/// `users.role`, the PostgreSQL enum `user_role_enum` of the original (TEXT on SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize, Deserialize, utoipa::ToSchema)]
#[sqlx(type_name = "user_role_enum", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Guest,
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "guest" => Some(Role::Guest),
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
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
    /// `None`: admin when this is the first user, otherwise `user`.
    pub role: Option<Role>,
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
    /// Inserts the user and their default settings (display name = username) in one
    /// transaction. Without an explicit role the first account becomes admin.
    pub async fn create_user(&self, new: NewUser) -> Result<User, sqlx::Error> {
        let id = Uuid::new_v4();
        // The role is decided inside the INSERT, which is the transaction's first statement:
        // SQLite then takes the write lock at once instead of failing to upgrade a read.
        let (role_if_others, role_if_first) = match new.role {
            Some(role) => (role, role),
            None => (Role::User, Role::Admin),
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
            Ok::<_, sqlx::Error>(user)
        })
    }

    /// The user, from the user cache when it holds a fresh copy.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, sqlx::Error> {
        let ticket = match self.users.get(id) {
            Ok(user) => return Ok(Some(user)),
            Err(ticket) => ticket,
        };
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let user: Option<User> = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        if let Some(user) = &user {
            self.users.put(ticket, user);
        }
        Ok(user)
    }

    /// Runs a write to the user's row, then forgets the cached copy, whatever the outcome (a
    /// failed commit may still have committed).
    async fn changing_user<T>(&self, id: Uuid, write: impl std::future::Future<Output = T>) -> T {
        let result = write.await;
        self.users.forget(id);
        result
    }

    /// The account a login name refers to: a username (exact) first, else an e-mail address
    /// (case-insensitive).
    pub async fn user_by_login_name(&self, name: &str) -> Result<Option<User>, sqlx::Error> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1 OR lower(email) = lower($1) \
             ORDER BY CASE WHEN username = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        on_pool!(self, pool => sqlx::query_as(&sql).bind(name).fetch_optional(pool).await)
    }

    /// Whether another account already uses this username or e-mail address (case-insensitive).
    pub async fn taken_username_or_email(
        &self,
        username: Option<&str>,
        email: Option<&str>,
        except: Option<Uuid>,
    ) -> Result<(bool, bool), sqlx::Error> {
        let sql = "SELECT \
                     COALESCE(SUM(CASE WHEN username = $1 THEN 1 ELSE 0 END), 0) AS username_taken, \
                     COALESCE(SUM(CASE WHEN lower(email) = lower($2) THEN 1 ELSE 0 END), 0) AS email_taken \
                   FROM users WHERE (username = $1 OR lower(email) = lower($2)) AND id <> $3";
        let except = except.unwrap_or(Uuid::nil());
        let (username_taken, email_taken): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(username).bind(email).bind(except).fetch_one(pool).await
        })?;
        Ok((username_taken > 0, email_taken > 0))
    }

    /// Users ordered by creation, then id (stable pages).
    pub async fn list_users(&self, skip: i64, limit: i64) -> Result<Vec<User>, sqlx::Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2");
        on_pool!(self, pool => sqlx::query_as(&sql).bind(limit).bind(skip).fetch_all(pool).await)
    }

    /// Applies `changes` unless they would leave no active admin.
    pub async fn update_user(&self, id: Uuid, changes: UserChanges) -> Result<AdminGuarded<User>, sqlx::Error> {
        let update = format!(
            "UPDATE users SET username = COALESCE($2, username), email = COALESCE($3, email), \
               password_hash = COALESCE($4, password_hash), role = COALESCE($5, role), \
               is_active = COALESCE($6, is_active) \
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        self.changing_user(id, async {
            in_transaction!(self, tx => {
                // Update first, then check: a write first keeps SQLite from failing to upgrade a read.
                let updated: Option<User> = sqlx::query_as(&update)
                    .bind(id)
                    .bind(&changes.username)
                    .bind(&changes.email)
                    .bind(&changes.password_hash)
                    .bind(changes.role)
                    .bind(changes.is_active)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(updated) = updated else { return Ok(AdminGuarded::NotFound) };
                if changes.role.is_some() || changes.is_active == Some(false) {
                    let admins: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND COALESCE(is_active, TRUE)",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    if admins == 0 {
                        return Ok(AdminGuarded::LastAdmin);
                    }
                }
                Ok::<_, sqlx::Error>(AdminGuarded::Done(updated))
            })
        })
        .await
    }

    pub async fn record_login(&self, id: Uuid, at: NaiveDateTime, new_password_hash: Option<&str>) -> Result<(), sqlx::Error> {
        self.changing_user(id, async {
            on_pool!(self, pool => {
                sqlx::query("UPDATE users SET last_login = $2, password_hash = COALESCE($3, password_hash) WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .bind(new_password_hash)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })
        })
        .await?;
        Ok(())
    }

    /// Invalidates every token issued so far to the user.
    pub async fn bump_token_version(&self, id: Uuid) -> Result<(), sqlx::Error> {
        self.changing_user(id, async { on_pool!(self, pool => {
            sqlx::query("UPDATE users SET token_version = token_version + 1 WHERE id = $1").bind(id).execute(pool).await.map(|r| r.rows_affected())
        }) })
        .await?;
        Ok(())
    }
}

/// Outcome of a change that must leave at least one active admin.
pub enum AdminGuarded<T> {
    Done(T),
    NotFound,
    LastAdmin,
}
