//! Personal API keys: made here, shown once, kept only as a SHA-256; they open the
//! OpenAI-compatible API (`/v1`) for their owner, with the owner's current role and state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::ActionContext;
use super::{ServiceError, ServiceResult};
use crate::schemas::api_keys::ApiKeyCreate;
use crate::store::api_keys::{ApiKeyRecord, KeyCreation};
use crate::store::audit::{AuditAction, AuditTarget};
use crate::store::users::User;
use crate::store::{self, Store};

/// Live (neither revoked nor expired) keys one user may hold.
pub const MAX_KEYS_PER_USER: i64 = 50;
/// What every key starts with, so that scanners and people recognise it.
pub const KEY_MARK: &str = "rc-";
/// Random base62 characters after the mark: about 285 bits.
const KEY_RANDOM_CHARS: usize = 48;
/// How much of a key is kept for display (the mark and a few characters).
const SHOWN_PREFIX_CHARS: usize = KEY_MARK.len() + 6;
/// `last_used_at` is written at most this often per key.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

const KEY_NOT_FOUND: ServiceError = ServiceError::NotFound("API key not found");

/// A new key: its row and the key itself, which is never available again.
pub struct CreatedKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

/// The hex SHA-256 of a presented key: what is stored and looked up.
fn key_hash(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(key.as_bytes()) {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

pub async fn create(store: &Store, context: &ActionContext, user: &User, request: ApiKeyCreate) -> ServiceResult<CreatedKey> {
    let key = format!("{KEY_MARK}{}", Alphanumeric.sample_string(&mut rand::rngs::OsRng, KEY_RANDOM_CHARS));
    let created_at = store::now();
    let record = ApiKeyRecord {
        id: Uuid::new_v4(),
        user_id: user.id,
        name: request.name,
        key_hash: key_hash(&key),
        prefix: key[..SHOWN_PREFIX_CHARS].to_owned(),
        models: request.models.map(Value::from),
        tokens_per_day: request.tokens_per_day,
        created_at,
        expires_at: request.expires_in_days.map(|days| created_at + chrono::Duration::days(days)),
        last_used_at: None,
        revoked_at: None,
    };
    let details = serde_json::json!({
        "name": record.name, "prefix": record.prefix, "models": record.models,
        "expires_at": record.expires_at.map(|t| t.to_string()), "tokens_per_day": record.tokens_per_day,
    });
    let event = context.event(AuditAction::ApiKeyCreated, Some(AuditTarget::api_key(record.id)), details);
    match store.create_api_key(&record, MAX_KEYS_PER_USER, &event).await? {
        KeyCreation::Created => Ok(CreatedKey { record, key }),
        KeyCreation::TooMany => {
            Err(ServiceError::Refused(format!("At most {MAX_KEYS_PER_USER} API keys per user; revoke one first")))
        }
    }
}

/// The caller's keys, or (for an admin) anyone's, newest first.
pub async fn list(store: &Store, owner: Option<Uuid>) -> ServiceResult<Vec<ApiKeyRecord>> {
    Ok(store.api_keys(owner).await?)
}

/// Revokes a key of `owner` (any key when `None`, for admins); an unknown or foreign key is 404.
pub async fn revoke(store: &Store, context: &ActionContext, owner: Option<Uuid>, id: Uuid) -> ServiceResult<()> {
    let event = context.event(
        AuditAction::ApiKeyRevoked,
        Some(AuditTarget::api_key(id)),
        serde_json::json!({ "by_admin": owner.is_none() }),
    );
    if store.revoke_api_key(id, owner, &event).await? {
        Ok(())
    } else {
        Err(KEY_NOT_FOUND)
    }
}

/// The models a key may name: `None` for all its owner may use.
pub fn key_models(key: &ApiKeyRecord) -> Option<Vec<String>> {
    key.models.as_ref().and_then(|models| serde_json::from_value(models.clone()).ok())
}

/// Why a presented key opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Invalid,
    Expired,
    OwnerInactive,
}

impl KeyRefusal {
    pub fn message(self) -> &'static str {
        match self {
            KeyRefusal::Invalid => "Incorrect API key provided",
            KeyRefusal::Expired => "This API key has expired",
            KeyRefusal::OwnerInactive => "The owner of this API key is deactivated",
        }
    }
}

/// Checks presented keys, and records when each was last used (at most once a minute).
#[derive(Clone)]
pub struct ApiKeyCheck {
    store: Store,
    last_written: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

/// Beyond this many keys the write times are forgotten (costing one extra write each).
const MAX_TRACKED_KEYS: usize = 10_000;

impl ApiKeyCheck {
    pub fn new(store: Store) -> Self {
        Self { store, last_written: Arc::default() }
    }

    /// The owner and the key, when `presented` is a live key of an active user. Warm, this
    /// reads only the store's row caches.
    pub async fn authenticate(&self, presented: &str) -> Result<Result<(User, Arc<ApiKeyRecord>), KeyRefusal>, ServiceError> {
        if !presented.starts_with(KEY_MARK) {
            return Ok(Err(KeyRefusal::Invalid));
        }
        let Some(key) = self.store.api_key_by_hash(&key_hash(presented)).await? else {
            return Ok(Err(KeyRefusal::Invalid));
        };
        let now = store::now();
        if key.revoked_at.is_some() {
            return Ok(Err(KeyRefusal::Invalid));
        }
        if key.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return Ok(Err(KeyRefusal::Expired));
        }
        let Some(owner) = self.store.user_by_id(key.user_id).await? else {
            return Ok(Err(KeyRefusal::Invalid));
        };
        if !owner.is_active() {
            return Ok(Err(KeyRefusal::OwnerInactive));
        }
        self.note_use(key.id, now);
        Ok(Ok((owner, key)))
    }

    /// Writes `last_used_at` in the background when the last write is a minute old.
    fn note_use(&self, key_id: Uuid, at: NaiveDateTime) {
        {
            let mut written = self.last_written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if written.get(&key_id).is_some_and(|last| last.elapsed() < LAST_USED_EVERY) {
                return;
            }
            if written.len() >= MAX_TRACKED_KEYS {
                written.retain(|_, last| last.elapsed() < LAST_USED_EVERY);
            }
            written.insert(key_id, Instant::now());
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(err) = store.touch_api_key(key_id, at).await {
                tracing::warn!(error = %err, %key_id, "recording an API key's last use failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_is_the_hex_sha256_of_the_key() {
        assert_eq!(key_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
