//! Chats and messages on the wire.
