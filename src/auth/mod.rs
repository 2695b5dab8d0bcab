//! Tokens, passwords, cookies, and the extractors that say who is calling.

pub mod cookies;
pub mod extract;
pub mod passwords;
pub mod tokens;

pub use extract::{AdminUser, CurrentUser, KeyHolder, MaybeUser};
