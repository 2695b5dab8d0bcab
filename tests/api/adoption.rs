//! Adopting a database made by the original Python backend (PostgreSQL only: the fixture is a
//! PostgreSQL dump made through the original's API, see tests/fixtures/README.md).

use std::path::Path;
use std::process::Command;

use rovertchat::config::Config;
use rovertchat::Application;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::support::{create_pg_database, PgDatabase, TestApp, ACCESS_SECRET, REFRESH_SECRET};

const ORIGINAL_TABLES: &[&str] =
    &["chats", "messages", "model_providers", "models", "user_model_access", "user_settings", "users"];
const FIXTURE: &str = "tests/fixtures/rovert-original-v0.1.sql";
const BOB: &str = "7ff0b7e5-84f3-40db-adaa-18947c3c308b";
const ANN: &str = "c3790851-8e20-4d55-9fb4-97b00415ca8b";

/// A fresh database holding the fixture, loaded with psql as its README says.
pub(crate) async fn fixture_database() -> PgDatabase {
    let database = create_pg_database().await;
    // psql older than 15.14 does not know \\restrict; the lines are not needed to load.
    let sql: String = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE))
        .expect("fixture")
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), sql).unwrap();
    let output = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-d", &database.url, "-f"])
        .arg(file.path())
        .output()
        .expect("psql is installed");
    assert!(output.status.success(), "loading the fixture failed: {}", String::from_utf8_lossy(&output.stderr));
    database
}

async fn execute(url: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
}

/// Schema (columns, indexes, constraints, types) and every row of every table, as text.
async fn snapshot(url: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let schema: String = sqlx::query_scalar(
        "SELECT concat_ws(E'\\n',
            (SELECT string_agg(table_name || '.' || column_name || ' ' || udt_name || ' ' || is_nullable || ' ' || coalesce(column_default, ''), E'\\n' ORDER BY table_name, column_name)
               FROM information_schema.columns WHERE table_schema = 'public'),
            (SELECT string_agg(indexdef, E'\\n' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'public'),
            (SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), E'\\n' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
            (SELECT string_agg(typname, ',' ORDER BY typname) FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typtype = 'e'))",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = schema;
    for table in tables {
        let rows: String =
            sqlx::query_scalar(&format!("SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM \"{table}\" t"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        out.push_str(&format!("\n== {table}\n{rows}"));
    }
    out
}

fn config_for(url: &str) -> Config {
    let data = tempfile::tempdir().unwrap().keep();
    Config::from_vars([
        ("DATABASE_URL".to_string(), url.to_string()),
        ("PORT".to_string(), "0".to_string()),
        ("DATA_DIR".to_string(), data.display().to_string()),
        ("LOG_DIR".to_string(), data.join("logs").display().to_string()),
        ("JWT_SECRET_KEY".to_string(), ACCESS_SECRET.to_string()),
        ("JWT_REFRESH_SECRET_KEY".to_string(), REFRESH_SECRET.to_string()),
    ])
    .unwrap()
}

/// The rows of the original's tables (what the original reads back).
async fn original_rows(url: &str) -> String {
    let full = snapshot(url).await;
    full.split("\n== ")
        .skip(1)
        .filter(|section| ORIGINAL_TABLES.iter().any(|t| section.starts_with(&format!("{t}\n"))))
        .collect::<Vec<_>>()
        .join("\n== ")
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_keeps_every_row_and_adds_only_indexes() {
    let database = fixture_database().await;
    let rows_before = original_rows(&database.url).await;
    let app = Application::build(config_for(&database.url)).await.expect("the original database is adopted");
    drop(app);
    // The one row added: the provider of OLLAMA_BASE_URL (its default address).
    let rows_after: String = original_rows(&database.url)
        .await
        .lines()
        .filter(|row| !row.is_empty() && !row.contains(",default,http://127.0.0.1:11434,"))
        .map(|row| format!("{row}\n"))
        .collect();
    let rows_before: String = rows_before.lines().filter(|row| !row.is_empty()).map(|row| format!("{row}\n")).collect();
    assert_eq!(rows_after, rows_before, "adoption rewrote no data");
    let after = snapshot(&database.url).await;
    assert!(after.contains("users_email_lower_key"), "our indexes were added");
    assert!(after.contains("message_words_idx"), "the search index is built");
    assert!(after.contains("== _sqlx_migrations"), "the baseline is recorded");
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_users_log_in_and_find_everything_as_it_was() {
    let database = fixture_database().await;
    let app = TestApp::spawn_on_postgres(database).await;

    // A failed login changes nothing; a successful one upgrades the bcrypt hash.
    app.post("/auth/login")
        .form(&[("username", "bob_user"), ("password", "wrong")])
        .send()
        .await
        .assert_detail(401, "Incorrect username or password");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE password_hash LIKE '$2b$12$%'").await, 3);
    let ann = app.login("admin_ann", "Ann-pass-2024!").await;
    let bob = app.login("bob@example.com", "Bob-pass-2024!").await;
    app.post("/auth/login")
        .form(&[("username", "carol_guest"), ("password", "Carol-pass-2024!")])
        .send()
        .await
        .assert_detail(400, "Inactive user");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE password_hash LIKE '$argon2id$%'").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE username = 'carol_guest' AND password_hash LIKE '$2b$12$%'").await,
        1,
        "an inactive user's login is not a success: nothing changes"
    );
    // The upgraded hash works on the next login too.
    app.login("bob_user", "Bob-pass-2024!").await;

    let me = app.get("/users/me").session(&bob).send().await;
    assert_eq!(me.body["id"], BOB);
    assert_eq!(me.body["role"], "user");
    assert!(me.body["created_at"].as_str().unwrap().ends_with('Z'));
    let users = app.get("/users").session(&ann).send().await;
    let listed: Vec<(&str, &str, bool)> = users
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap(), u["role"].as_str().unwrap(), u["is_active"].as_bool().unwrap()))
        .collect();
    assert_eq!(listed, [("admin_ann", "admin", true), ("bob_user", "user", true), ("carol_guest", "user", false)]);

    let settings = app.get("/user-settings/me").session(&bob).send().await;
    assert_eq!(
        settings.body,
        json!({"default_model_id": null, "display_name": "Bob Builder", "avatar_url": null, "preferences": {"theme": "dark", "language": "en"}, "user_id": BOB})
    );
    let ann_settings = app.get("/user-settings/me").session(&ann).send().await;
    assert_eq!(ann_settings.body["display_name"], "admin_ann");
    assert_eq!(ann_settings.body["preferences"], Value::Null);

    let chats = app.get("/chats/my?include_archived=true").session(&bob).send().await;
    assert_eq!(chats.body["total"], 3);
    let titles: Vec<(&str, bool)> = chats.body["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["title"].as_str().unwrap(), c["is_archived"].as_bool().unwrap()))
        .collect();
    assert_eq!(titles, [("Cat names", true), ("Zürich weekend 🚆", false), ("What is the capital of Portuga...", false)]);
    let visible = app.get("/chats/my").session(&bob).send().await;
    assert_eq!(visible.body["total"], 2);

    let zurich = app.get("/chats/chat/df2a0ee4-dd45-4135-8bda-57671b014f79").session(&bob).send().await;
    let messages = zurich.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let question = "Plan a weekend in Zürich 🇨🇭 — budget €500\nWe prefer trains 🚆 over planes ✈️";
    assert_eq!(messages[0]["content"], question);
    assert_eq!(messages[0]["images"], Value::Null, "a JSON null reads as no images");
    assert_eq!(messages[0]["tokens_used"], 0);
    assert_eq!(messages[0]["extended_metadata"], Value::Null);
    assert_eq!(messages[1]["content"], format!("Echo: {question}"));
    assert_eq!(messages[1]["tokens_used"], 17);
    assert_eq!(messages[1]["extended_metadata"]["eval_count"], 17);
    assert_eq!(messages[0]["created_at"], "2026-11-24T11:40:22.362146Z");

    // The original's messages are found (the migration built their index).
    let found = app.get("/chats/search?q=trains&include_archived=true").session(&bob).send().await;
    assert_eq!(found.body["total"], 2, "{}", found.body);
    assert_eq!(found.body["results"][0]["chat_id"], "df2a0ee4-dd45-4135-8bda-57671b014f79");
    assert!(found.body["results"][0]["snippet"].as_str().unwrap().contains("We prefer <mark>trains</mark>"));
    assert_eq!(app.get("/chats/search?q=admin").session(&bob).send().await.body["total"], 0, "only bob's chats");

    let first = app.get("/chats/chat/45c654e7-0e86-45de-986c-72eab8232079").session(&bob).send().await;
    let roles: Vec<&str> = first.body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(
        first.body["messages"][1]["extended_metadata"],
        json!({"prompt_eval_count": 16, "eval_count": 7, "eval_duration": 35000000})
    );
    let ann_chats = app.get("/chats/my").session(&ann).send().await;
    assert_eq!(ann_chats.body["chats"][0]["title"], "Hello from the admin");
    assert_eq!(
        app.get(&format!("/chats/chat/{}", ann_chats.body["chats"][0]["id"].as_str().unwrap())).session(&ann).send().await.body
            ["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(app.get(&format!("/users/{ANN}")).session(&bob).send().await.status, 403);

    // New users, chats and messages can be added.
    let (_, dave) = app.signed_up("dave_new").await;
    let chat = app.new_chat(&dave, None).await;
    app.post_message(&dave, &chat, "user", "hello").await;
    let answer = app
        .post("/ollama/chat")
        .session(&dave)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 4);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 12);
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_changes_nothing() {
    let database = fixture_database().await;
    drop(Application::build(config_for(&database.url)).await.expect("first start adopts"));
    let after_first = snapshot(&database.url).await;
    drop(Application::build(config_for(&database.url)).await.expect("second start"));
    assert_eq!(snapshot(&database.url).await, after_first);
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_databases_are_refused_untouched() {
    for (damage, expected) in [
        ("DROP TABLE public.user_model_access", "table user_model_access is missing"),
        ("ALTER TABLE public.users ADD COLUMN nickname text", "unknown column users.nickname"),
        ("ALTER TABLE public.messages DROP COLUMN thinking", "column messages.thinking is missing"),
    ] {
        let database = fixture_database().await;
        execute(&database.url, damage).await;
        let before = snapshot(&database.url).await;
        let err = match Application::build(config_for(&database.url)).await {
            Ok(_) => panic!("{damage}: started on an inconsistent database"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains(expected), "{damage}: {err}");
        assert!(err.contains("left untouched"), "{err}");
        assert_eq!(snapshot(&database.url).await, before, "{damage}: nothing changed");
    }
}
