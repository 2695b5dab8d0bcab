use chrono::NaiveDateTime;
use serde::Serialize;
use uuid::Uuid;

use super::serialize_utc;
use crate::store::users::{Role, User};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

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
#[derive(ToSchema)]
pub struct RegisterRequest {
    #[schema(min_length = 4, max_length = 100, example = "ann_admin")]
    pub username: String,
    #[schema(format = Email, example = "ann@example.com")]
    pub email: String,
    #[schema(min_length = 8, max_length = 100, example = "Ann-pass-2024!")]
    pub password: String,
    /// Applied only when an admin creates the account.
    pub role: Option<Role>,
    /// Applied only when an admin creates the account.
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
#[derive(ToSchema)]
pub struct LoginForm {
    /// A username or an e-mail address.
    #[schema(example = "ann_admin")]
    pub username: String,
    #[schema(example = "Ann-pass-2024!")]
    pub password: String,
    /// Optional; must be `password` when given.
    #[schema(pattern = "^password$")]
    pub grant_type: Option<String>,
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
        Some(LoginForm { username: username?, password: password?, grant_type: None })
    }
}

/// `PUT /users/me` and an admin's `PUT /users/{id}`: only what was sent changes.
/// `role` is read only for admins' updates of others (see the route).
#[derive(Default, ToSchema)]
pub struct UserUpdate {
    #[schema(min_length = 4, max_length = 100)]
    pub username: Option<String>,
    #[schema(format = Email)]
    pub email: Option<String>,
    #[schema(min_length = 8, max_length = 100)]
    pub password: Option<String>,
    /// Admins only, never for oneself; `PUT /users/me` refuses a change with 403.
    pub is_active: Option<bool>,
    /// Admins only (`PUT /users/{user_id}`); ignored on `PUT /users/me`.
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
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    #[param(minimum = 0, default = 0)]
    pub skip: i64,
    #[param(minimum = 1, maximum = 1000, default = 100)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub username: String,
    pub email: String,
    pub id: Uuid,
    pub is_active: bool,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<NaiveDateTime>,
    pub role: Role,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
}
