//! What goes over the wire: request types (validated with [`crate::validation`]) and
//! response types in the exact JSON shapes of the contract.

pub mod admin;
pub mod api_keys;
pub mod chats;
pub mod models;
pub mod openai;
pub mod providers;
pub mod search;
pub mod settings;
pub mod usage;
pub mod users;

use chrono::NaiveDateTime;
use serde::Serialize;

/// Database timestamps are UTC; they go out as RFC 3339 with microseconds and `Z`.
pub fn utc_time(time: &NaiveDateTime) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn serialize_utc<S: serde::Serializer>(time: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => s.serialize_str(&utc_time(t)),
        None => s.serialize_none(),
    }
}

/// `{"detail": "..."}` success messages (logout).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DetailMessage {
    pub detail: &'static str,
}

/// `{"message": "..."}` success messages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: &'static str,
}
