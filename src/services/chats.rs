//! Chats and messages.
