//! Behaviour, independent of HTTP: what happens when someone registers, sends a message, ...

pub mod accounts;
pub mod chats;
pub mod generation;
pub mod settings;
pub mod users;
