//! Rows read on every authenticated request (the user behind a token, the API key behind a
//! `/v1` call), kept for a few seconds so the common case (the same caller's next request)
//! skips the database.
//!
//! Every write to those rows goes through [`Store`](super::Store), which forgets the row after
//! the write, so logout, deactivation, role changes and key revocation take effect at once in
//! this process. Other processes on the same database see them when their copy expires (the
//! TTL). A lookup that raced a write is not kept: writes move an epoch, and a row read under an
//! older epoch is returned but not stored.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::api_keys::ApiKeyRecord;
use super::users::User;

/// User rows by id.
pub type UserCache = RowCache<Uuid, User>;
/// API key rows by the key's hash (shared: a `/v1` request copies no part of its key's row).
pub type ApiKeyCache = RowCache<String, std::sync::Arc<ApiKeyRecord>>;

/// Beyond this many rows the cache is emptied rather than grown.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub struct RowCache<K, V> {
    ttl: Duration,
    state: RwLock<CacheState<K, V>>,
}

#[derive(Debug)]
struct CacheState<K, V> {
    entries: HashMap<K, (V, Instant)>,
    epoch: u64,
}

/// What a lookup needs to store its result later.
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

impl<K: Hash + Eq, V: Clone> RowCache<K, V> {
    /// A zero `ttl` disables the cache.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, state: RwLock::new(CacheState { entries: HashMap::new(), epoch: 0 }) }
    }

    /// The cached row, or a ticket to store the row about to be read.
    pub fn get(&self, key: &K) -> Result<V, Ticket> {
        let state = self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.entries.get(key) {
            Some((row, stored_at)) if stored_at.elapsed() < self.ttl => Ok(row.clone()),
            _ => Err(Ticket(state.epoch)),
        }
    }

    /// Keeps `row` unless a write happened since the ticket was taken.
    pub fn put(&self, ticket: Ticket, key: K, row: &V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.epoch != ticket.0 {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            state.entries.retain(|_, (_, stored_at)| stored_at.elapsed() < ttl);
            if state.entries.len() >= MAX_ENTRIES {
                state.entries.clear();
            }
        }
        state.entries.insert(key, (row.clone(), Instant::now()));
    }

    /// Drops the row; lookups in flight will not store what they read.
    pub fn forget(&self, key: &K) {
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.entries.remove(key);
        state.epoch += 1;
    }

    /// Drops every row; lookups in flight will not store what they read.
    pub fn forget_all(&self) {
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.entries.clear();
        state.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(token_version: i32) -> User {
        User {
            id: Uuid::from_u128(7),
            username: "ann".into(),
            email: "ann@example.com".into(),
            password_hash: String::new(),
            role: None,
            created_at: None,
            last_login: None,
            is_active: Some(true),
            token_version,
        }
    }

    #[test]
    fn a_stored_row_is_served_until_forgotten() {
        let cache = UserCache::new(Duration::from_secs(60));
        let ticket = cache.get(&user(1).id).unwrap_err();
        cache.put(ticket, user(1).id, &user(1));
        assert_eq!(cache.get(&user(1).id).unwrap().token_version, 1);
        cache.forget(&user(1).id);
        assert!(cache.get(&user(1).id).is_err());
    }

    #[test]
    fn a_row_read_before_a_write_is_not_stored() {
        let cache = UserCache::new(Duration::from_secs(60));
        let ticket = cache.get(&user(1).id).unwrap_err();
        // Logout commits and forgets while the lookup's query is in flight.
        cache.forget(&user(1).id);
        cache.put(ticket, user(1).id, &user(1));
        assert!(cache.get(&user(1).id).is_err());
    }

    #[test]
    fn rows_expire() {
        let cache = UserCache::new(Duration::from_millis(20));
        cache.put(cache.get(&user(1).id).unwrap_err(), user(1).id, &user(1));
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(&user(1).id).is_err());
    }
}
