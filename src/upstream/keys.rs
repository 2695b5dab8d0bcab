//! Providers' API keys at rest: ChaCha20-Poly1305 under a key derived from
//! `PROVIDER_KEYS_SECRET` (by default the access-token secret) with HKDF-SHA256. The provider's
//! id is the associated data, so a ciphertext copied onto another provider does not open.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

/// Marks the format, so that another one can follow.
const VERSION: &str = "v1:";
const NONCE_BYTES: usize = 12;

/// Encrypts and decrypts providers' API keys. Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct KeyCipher(ChaCha20Poly1305);

impl std::fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCipher([redacted])")
    }
}

/// A stored key that does not open: the secret changed, or the value was altered.
#[derive(Debug, thiserror::Error)]
#[error("the stored API key cannot be decrypted (was PROVIDER_KEYS_SECRET changed?)")]
pub struct Unreadable;

impl KeyCipher {
    pub fn new(secret: &str) -> Self {
        let derived = Hkdf::<Sha256>::new(Some(b"rovertchat provider keys"), secret.as_bytes());
        let mut key = [0u8; 32];
        derived.expand(b"model_providers.api_key_encrypted v1", &mut key).expect("32 bytes is a valid HKDF-SHA256 length");
        KeyCipher(ChaCha20Poly1305::new(Key::from_slice(&key)))
    }

    /// `v1:` + base64(nonce ‖ ciphertext), bound to the provider's id.
    pub fn seal(&self, provider_id: Uuid, api_key: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: api_key.as_bytes(), aad: provider_id.as_bytes() };
        let sealed = self.0.encrypt(Nonce::from_slice(&nonce), payload).expect("encrypting in memory does not fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{VERSION}{}", BASE64.encode(bytes))
    }

    pub fn open(&self, provider_id: Uuid, stored: &str) -> Result<String, Unreadable> {
        let encoded = stored.strip_prefix(VERSION).ok_or(Unreadable)?;
        let bytes = BASE64.decode(encoded).map_err(|_| Unreadable)?;
        if bytes.len() < NONCE_BYTES {
            return Err(Unreadable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let payload = Payload { msg: sealed, aad: provider_id.as_bytes() };
        let plain = self.0.decrypt(Nonce::from_slice(nonce), payload).map_err(|_| Unreadable)?;
        String::from_utf8(plain).map_err(|_| Unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_secret_and_its_provider() {
        let cipher = KeyCipher::new("a secret of enough length for the test 0123");
        let provider = Uuid::new_v4();
        let sealed = cipher.seal(provider, "sk-live-123");
        assert!(sealed.starts_with("v1:") && !sealed.contains("sk-live"));
        assert_ne!(sealed, cipher.seal(provider, "sk-live-123"), "a fresh nonce each time");
        assert_eq!(cipher.open(provider, &sealed).unwrap(), "sk-live-123");
        assert!(cipher.open(Uuid::new_v4(), &sealed).is_err(), "bound to its provider");
        assert!(KeyCipher::new("another secret").open(provider, &sealed).is_err());
        assert!(cipher.open(provider, "v1:AAAA").is_err() && cipher.open(provider, "plain").is_err());
    }
}
