//! Black-box tests of the HTTP API: a real server on a random port, a database of its own
//! per test (SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set).

#[path = "../support/mod.rs"]
mod support;

mod account_security;
mod accounts;
mod adoption;
mod api_keys;
mod audit;
mod body_limits;
mod chats;
mod cli;
mod configuration;
mod connections;
mod docs;
mod frontend;
mod generation_limits;
mod health;
mod login_flood;
mod model_access;
mod observability;
mod ollama;
mod openai;
mod process;
mod providers;
mod quotas;
mod registration;
mod replicas;
mod search;
mod security;
mod settings;
mod streaming;
mod transfer;
mod usage;
mod users;
