use chrono::NaiveDateTime;
use serde::Serialize;
use uuid::Uuid;

use super::serialize_utc;
use crate::names::{is_email_like, is_invisible, nfkc};
use crate::store::users::{Role, User};
use serde_json::{json, Value};
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};

use crate::validation::{any_string, boolean, email, string, Fields, FromFields, Problem, QueryInt, Skip, ValidationIssue};

/// Length of a username, counted after NFKC normalisation.
pub const USERNAME_MIN_CHARS: usize = 4;
pub const USERNAME_MAX_CHARS: usize = 100;
/// What the documented pattern says of a username: no `@`, no whitespace at either end. The
/// parser checks that, and no control or invisible characters, on the NFKC form.
const USERNAME_PATTERN: &str = r"^[^@\s]([^@]*[^@\s])?$";
const USERNAME_RULES: &str = "Stored in its NFKC form (fullwidth letters become plain ones); 4 to 100 characters; no `@` \
    (a login name with `@` is an e-mail address), no whitespace at either end, no control or invisible (zero-width, \
    bidirectional) characters. Unique ignoring case and compatibility forms.";
/// Length of a new password.
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 100;
/// The longest login name: an e-mail address (usernames have at most 100 characters).
pub const LOGIN_NAME_MAX_CHARS: usize = 255;
/// The longest password a login may send. No stored password is longer than
/// [`PASSWORD_MAX_CHARS`]; the bound keeps hashing work per request small.
pub const LOGIN_PASSWORD_MAX_CHARS: usize = 1024;

/// A string of `min..=max` characters; `null` allowed when `nullable` (partial updates).
fn string_schema(min: usize, max: usize, nullable: bool) -> ObjectBuilder {
    let schema_type: SchemaType =
        if nullable { [Type::String, Type::Null].into_iter().collect() } else { SchemaType::Type(Type::String) };
    ObjectBuilder::new().schema_type(schema_type).min_length((min > 0).then_some(min)).max_length(Some(max))
}

fn username_schema() -> Object {
    string_schema(USERNAME_MIN_CHARS, USERNAME_MAX_CHARS, false)
        .pattern(Some(USERNAME_PATTERN))
        .description(Some(USERNAME_RULES))
        .examples(["ann_admin"])
        .build()
}

fn optional_username_schema() -> Object {
    string_schema(USERNAME_MIN_CHARS, USERNAME_MAX_CHARS, true)
        .pattern(Some(USERNAME_PATTERN))
        .description(Some(format!(
            "{USERNAME_RULES} An account's current name is accepted unchanged even when it breaks these rules \
             (names adopted from the original backend)."
        )))
        .build()
}

fn new_password_schema() -> Object {
    string_schema(PASSWORD_MIN_CHARS, PASSWORD_MAX_CHARS, false).examples(["Ann-pass-2024!"]).build()
}

fn optional_new_password_schema() -> Object {
    string_schema(PASSWORD_MIN_CHARS, PASSWORD_MAX_CHARS, true)
        .description(Some(
            "A new password ends every session of the account; on `PUT /users/me` the session that changed it \
             continues with new `access_token` and `refresh_token` cookies.",
        ))
        .build()
}

fn login_name_schema() -> Object {
    string_schema(0, LOGIN_NAME_MAX_CHARS, false)
        .description(Some("A username, or an e-mail address (a name with `@` is looked up as one)."))
        .examples(["ann_admin"])
        .build()
}

fn login_password_schema() -> Object {
    string_schema(0, LOGIN_PASSWORD_MAX_CHARS, false).examples(["Ann-pass-2024!"]).build()
}

fn value_error(reason: &str) -> Problem {
    Problem::new("value_error", format!("Value error, {reason}")).with_ctx(json!({ "error": reason }))
}

/// A username under today's rules, in its NFKC form.
fn valid_username(value: &Value) -> Result<String, Problem> {
    let name = nfkc(&any_string(value)?);
    string(USERNAME_MIN_CHARS, USERNAME_MAX_CHARS)(&Value::String(name.clone()))?;
    if is_email_like(&name) {
        return Err(value_error("Username must not contain '@' (a login name with '@' is an e-mail address)"));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(value_error("Username must not start or end with whitespace"));
    }
    // Line and paragraph separators break a line like control characters do.
    if name.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
        return Err(value_error("Username must not contain control characters"));
    }
    if name.chars().any(is_invisible) {
        return Err(value_error("Username must not contain invisible (zero-width or bidirectional) characters"));
    }
    Ok(name)
}

/// A username sent in an update. One that breaks today's rules is accepted only as the
/// account's current name: adopted accounts keep theirs when a form sends it back unchanged.
#[derive(Debug)]
pub enum SentUsername {
    Valid(String),
    Invalid { sent: String, problem: Problem },
}

impl SentUsername {
    fn parse(value: &Value) -> Result<SentUsername, Problem> {
        let sent = any_string(value)?;
        Ok(match valid_username(value) {
            Ok(name) => SentUsername::Valid(name),
            Err(problem) => SentUsername::Invalid { sent, problem },
        })
    }

    /// The new username (`None` when it is the current one), or the 422 of the rule it breaks.
    pub fn change_from(self, current: &str) -> Result<Option<String>, Vec<ValidationIssue>> {
        match self {
            SentUsername::Valid(name) => Ok((name != current).then_some(name)),
            SentUsername::Invalid { sent, .. } if sent == current => Ok(None),
            SentUsername::Invalid { sent, problem } => {
                Err(vec![problem.at(vec![json!("body"), json!("username")], &json!(sent))])
            }
        }
    }
}

fn valid_password(value: &Value) -> Result<String, Problem> {
    string(PASSWORD_MIN_CHARS, PASSWORD_MAX_CHARS)(value)
}

/// `POST /auth/register`. `role` and `is_active` are honoured only for an admin caller.
#[derive(ToSchema)]
pub struct RegisterRequest {
    #[schema(schema_with = username_schema)]
    pub username: String,
    #[schema(format = Email, example = "ann@example.com")]
    pub email: String,
    #[schema(schema_with = new_password_schema)]
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
        let role = f.optional("role", Role::from_value);
        let is_active = f.optional("is_active", boolean);
        Some(RegisterRequest { username: username?, email: email?, password: password?, role, is_active })
    }
}

/// The OAuth2 password form of `POST /auth/login`.
#[derive(ToSchema)]
pub struct LoginForm {
    #[schema(schema_with = login_name_schema)]
    pub username: String,
    #[schema(schema_with = login_password_schema)]
    pub password: String,
    /// Optional; must be `password` when given.
    #[schema(pattern = "^password$")]
    pub grant_type: Option<String>,
}

impl FromFields for LoginForm {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let username = f.required("username", string(0, LOGIN_NAME_MAX_CHARS));
        let password = f.required("password", string(0, LOGIN_PASSWORD_MAX_CHARS));
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
    #[schema(schema_with = optional_username_schema)]
    pub username: Option<SentUsername>,
    #[schema(format = Email)]
    pub email: Option<String>,
    #[schema(schema_with = optional_new_password_schema)]
    pub password: Option<String>,
    /// Admins only, never for oneself; `PUT /users/me` refuses a change with 403.
    pub is_active: Option<bool>,
    /// Admins only (`PUT /users/{user_id}`); ignored on `PUT /users/me`.
    pub role: Option<Role>,
}

impl FromFields for UserUpdate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(UserUpdate {
            username: f.optional("username", SentUsername::parse),
            email: f.optional("email", email),
            password: f.optional("password", valid_password),
            is_active: f.optional("is_active", boolean),
            role: f.optional("role", Role::from_value),
        })
    }
}

/// `?skip=&limit=` of the admin's user list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    #[param(inline, value_type = Skip)]
    pub skip: i64,
    #[param(inline, value_type = UserPageLimit)]
    pub limit: i64,
}

/// `?limit=` of the admin's user list.
pub type UserPageLimit = QueryInt<1, 1000, 100>;

impl FromFields for UserListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let skip = Skip::read(f, "skip");
        let limit = UserPageLimit::read(f, "limit");
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
