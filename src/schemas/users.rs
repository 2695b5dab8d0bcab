use chrono::NaiveDateTime;
use serde::Serialize;
use uuid::Uuid;

use super::serialize_utc;
use crate::store::users::{Role, User};
use serde_json::{json, Value};

use crate::validation::{any_string, boolean, email, literal, query_int, string, Fields, FromFields, Problem};

const ROLES: &[&str] = &["guest", "user", "admin"];

fn valid_username(value: &Value) -> Result<String, Problem> {
    string(4, 100)(value)
}

fn valid_password(value: &Value) -> Result<String, Problem> {
    string(8, 100)(value)
}

fn valid_role(value: &Value) -> Result<Role, Problem> {
    literal(ROLES)(value).map(|r| Role::parse(&r).expect("literal checked"))
}

/// `POST /auth/register`. `role` and `is_active` are honoured only for an admin caller.
pub struct RegisterRequest {
    pub username: String,
    pub email: String,
    pub password: String,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

impl FromFields for RegisterRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let username = f.required("username", valid_username);
        let email = f.required("email", email);
        let password = f.required("password", valid_password);
        let role = f.optional("role", valid_role);
        let is_active = f.optional("is_active", boolean);
        Some(RegisterRequest { username: username?, email: email?, password: password?, role, is_active })
    }
}

/// The OAuth2 password form of `POST /auth/login`.
pub struct LoginForm {
    pub username: String,
    pub password: String,
}

impl FromFields for LoginForm {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let username = f.required("username", any_string);
        let password = f.required("password", any_string);
        f.optional("grant_type", |v| {
            let s = any_string(v)?;
            if s == "password" {
                Ok(s)
            } else {
                Err(Problem::new("string_pattern_mismatch", "String should match pattern '^password$'")
                    .with_ctx(json!({ "pattern": "^password$" })))
            }
        });
        Some(LoginForm { username: username?, password: password? })
    }
}

/// `PUT /users/me` and an admin's `PUT /users/{id}`: only what was sent changes.
/// `role` is read only for admins' updates of others (see the route).
#[derive(Default)]
pub struct UserUpdate {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub is_active: Option<bool>,
    pub role: Option<Role>,
}

impl FromFields for UserUpdate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(UserUpdate {
            username: f.optional("username", valid_username),
            email: f.optional("email", email),
            password: f.optional("password", valid_password),
            is_active: f.optional("is_active", boolean),
            role: f.optional("role", valid_role),
        })
    }
}

/// `?skip=&limit=` of the admin's user list.
pub struct UserListQuery {
    pub skip: i64,
    pub limit: i64,
}

impl FromFields for UserListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let skip = f.optional("skip", query_int(0, None)).unwrap_or(0);
        let limit = f.optional("limit", query_int(1, Some(1000))).unwrap_or(100);
        Some(UserListQuery { skip, limit })
    }
}

/// A user as the API shows it (key order as the original).
#[derive(Debug, Serialize)]
pub struct UserResponse {
    pub username: String,
    pub email: String,
    pub id: Uuid,
    pub is_active: bool,
    #[serde(serialize_with = "serialize_utc")]
    pub created_at: Option<NaiveDateTime>,
    pub role: Role,
    #[serde(serialize_with = "serialize_utc")]
    pub last_login: Option<NaiveDateTime>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        UserResponse {
            is_active: user.is_active(),
            role: user.role(),
            username: user.username,
            email: user.email,
            id: user.id,
            created_at: user.created_at,
            last_login: user.last_login,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
}
