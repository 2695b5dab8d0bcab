//! Black-box tests of the HTTP API: a real server on a random port, a database of its own
//! per test (SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set).

#[path = "../support/mod.rs"]
mod support;

mod account_security;
mod accounts;
mod adoption;
mod chats;
mod docs;
mod health;
mod ollama;
mod process;
mod security;
mod settings;
mod streaming;
mod users;
