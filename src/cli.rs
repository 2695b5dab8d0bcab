//! `rovertchat user ...`: account administration from a shell. Each command goes through the
//! services the API uses (the same validation, last-admin protection and audit events, with the
//! actor `cli`); passwords come from a prompt without echo, or from the first line of standard
//! input when it is not a terminal, never from an argument.

use std::io::{BufRead, IsTerminal};

use anyhow::{anyhow, bail, Context};
use clap::builder::PossibleValuesParser;
use clap::Subcommand;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::{Config, RegistrationPolicy};
use crate::schemas::users::{RegisterRequest, UserUpdate};
use crate::schemas::utc_time;
use crate::services::audit::ActionContext;
use crate::services::{accounts, users, ServiceError};
use crate::store::users::{Role, User};
use crate::store::Store;
use crate::validation::{parse_fields, FromFields, ValidationIssue};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is asked for twice (not shown), or read from the first
    /// line of standard input when that is not a terminal.
    Create {
        /// 4 to 100 characters, no `@` (the API's rules).
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "user", value_parser = PossibleValuesParser::new(Role::NAMES.iter().copied()))]
        role: String,
    },
    /// Set a new password (asked for as by `create`); every session of the account ends.
    ResetPassword {
        /// Username, e-mail address or id.
        account: String,
    },
    /// Change an account's role; the last active admin cannot be demoted.
    SetRole {
        /// Username, e-mail address or id.
        account: String,
        #[arg(value_parser = PossibleValuesParser::new(Role::NAMES.iter().copied()))]
        role: String,
    },
    /// Deactivate an account: it cannot log in and every session of it ends.
    Deactivate {
        /// Username, e-mail address or id.
        account: String,
    },
    /// Activate an account again.
    Activate {
        /// Username, e-mail address or id.
        account: String,
    },
    /// List every account, oldest first.
    List,
}

/// Runs `command` on the configured database (migrated first, as `serve` would).
pub async fn run_user_command(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let store = Store::connect(&config.database, 2).await?;
    store.migrate().await?;
    let result = run(&store, &config.registration, command).await;
    store.close().await;
    result
}

async fn run(store: &Store, registration: &RegistrationPolicy, command: UserCommand) -> anyhow::Result<()> {
    let cli = ActionContext::cli();
    match command {
        UserCommand::Create { username, email, role } => {
            let password = new_password()?;
            let request: RegisterRequest =
                read_input(json!({ "username": username, "email": email, "password": password, "role": role }))?;
            let user = accounts::register(store, registration, &cli, request, true).await.map_err(refusal)?;
            println!("created {} ({}) with the role {}", user.username, user.id, user.role().as_str());
        }
        UserCommand::ResetPassword { account } => {
            let user = find_account(store, &account).await?;
            let update: UserUpdate = read_input(json!({ "password": new_password()? }))?;
            users::update_by_admin(store, &cli, user.id, update).await.map_err(refusal)?;
            println!("password of {} changed; every session of the account has ended", user.username);
        }
        UserCommand::SetRole { account, role } => {
            let user = find_account(store, &account).await?;
            let update: UserUpdate = read_input(json!({ "role": role }))?;
            let user = users::update_by_admin(store, &cli, user.id, update).await.map_err(refusal)?;
            println!("{} is now {}", user.username, user.role().as_str());
        }
        UserCommand::Deactivate { account } => {
            let user = find_account(store, &account).await?;
            users::set_active_by_admin(store, &cli, user.id, false).await.map_err(refusal)?;
            println!("{} deactivated; every session of the account has ended", user.username);
        }
        UserCommand::Activate { account } => {
            let user = find_account(store, &account).await?;
            users::set_active_by_admin(store, &cli, user.id, true).await.map_err(refusal)?;
            println!("{} activated", user.username);
        }
        UserCommand::List => list(store).await?,
    }
    Ok(())
}

/// The account named by its id, username or e-mail address (as a login name is looked up).
async fn find_account(store: &Store, account: &str) -> anyhow::Result<User> {
    let found = match Uuid::parse_str(account) {
        Ok(id) => store.user_by_id(id).await?,
        Err(_) => accounts::find_login_account(store, account).await.map_err(refusal)?,
    };
    found.ok_or_else(|| anyhow!("no account has the name or id {account:?}"))
}

/// A new password: asked for twice without echo on a terminal, else the first line of stdin.
fn new_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let repeated = rpassword::prompt_password("Repeat password: ").context("cannot read the password")?;
        if password != repeated {
            bail!("the passwords do not match");
        }
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads the command's input as the API reads a request body: the same rules, the same
/// messages (without the values, which may hold a password).
fn read_input<T: FromFields>(input: Value) -> anyhow::Result<T> {
    parse_fields(vec![], &input).map_err(|issues| match issues {
        Some(issues) => anyhow!(describe(&issues)),
        None => anyhow!("invalid input"),
    })
}

fn describe(issues: &[ValidationIssue]) -> String {
    let described: Vec<String> = issues
        .iter()
        .map(|issue| {
            let field = issue.loc.iter().filter_map(Value::as_str).filter(|part| *part != "body").collect::<Vec<_>>().join(".");
            format!("{field}: {}", issue.msg)
        })
        .collect();
    described.join("; ")
}

/// A service's refusal in words (what the API would answer as its `detail`).
fn refusal(err: ServiceError) -> anyhow::Error {
    match err {
        ServiceError::Invalid(issues) => anyhow!(describe(&issues)),
        ServiceError::Refused(detail) => anyhow!(detail),
        ServiceError::Forbidden(detail)
        | ServiceError::NotFound(detail)
        | ServiceError::Conflict(detail)
        | ServiceError::Unavailable(detail) => anyhow!(detail),
        err => anyhow::Error::new(err),
    }
}

/// Every account, oldest first, one line each.
async fn list(store: &Store) -> anyhow::Result<()> {
    const PAGE: i64 = 1000;
    let mut rows = vec![["ID", "USERNAME", "EMAIL", "ROLE", "ACTIVE", "CREATED", "LAST LOGIN"].map(str::to_owned)];
    for page in 0.. {
        let users = store.list_users(page * PAGE, PAGE).await?;
        let last_page = (users.len() as i64) < PAGE;
        rows.extend(users.into_iter().map(|user| {
            let time = |at: Option<chrono::NaiveDateTime>| at.as_ref().map_or_else(|| "-".to_owned(), utc_time);
            [
                user.id.to_string(),
                user.username.clone(),
                user.email.clone(),
                user.role().as_str().to_owned(),
                if user.is_active() { "yes" } else { "no" }.to_owned(),
                time(user.created_at),
                time(user.last_login),
            ]
        }));
        if last_page {
            break;
        }
    }
    let widths: Vec<usize> = (0..7).map(|column| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}
