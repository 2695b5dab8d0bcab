//! Password hashing: argon2id for everything we write; bcrypt only to verify hashes the
//! original backend wrote, which are replaced at the next successful login.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    Mismatch,
    Match,
    /// Correct, but the stored hash is legacy (bcrypt) or weaker than today's parameters:
    /// this new hash should replace it.
    MatchRehashed(String),
}

/// At most one hash per core at a time: each takes 19 MiB and a core for tens of
/// milliseconds, so a login flood queues here instead of growing memory and starving the
/// rest of the server.
fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

/// Runs a hashing job on the blocking pool, within the hashing slots.
async fn on_hashing_slot<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let _slot = hashing_slots().acquire().await?;
    Ok(tokio::task::spawn_blocking(job).await?)
}

/// Hashes on the blocking pool so the async runtime keeps serving.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    on_hashing_slot(move || hash_now(&password)).await?
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

/// Verifies on the blocking pool. With no stored hash (unknown user) a dummy hash is checked
/// anyway, so the answer takes as long as for a real account.
pub async fn verify_password(password: String, stored: Option<String>) -> anyhow::Result<Verification> {
    on_hashing_slot(move || verify_now(&password, stored.as_deref())).await?
}

fn verify_now(password: &str, stored: Option<&str>) -> anyhow::Result<Verification> {
    let Some(stored) = stored else {
        let _ = hasher().verify_password(password.as_bytes(), &dummy_hash());
        return Ok(Verification::Mismatch);
    };
    if stored.starts_with("$2") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Ok(Verification::MatchRehashed(hash_now(password)?)),
            _ => Ok(Verification::Mismatch),
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Ok(Verification::Mismatch);
    };
    if Argon2::default().verify_password(password.as_bytes(), &parsed).is_err() {
        return Ok(Verification::Mismatch);
    }
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed).is_ok_and(|p| p.m_cost() >= 19 * 1024 && p.t_cost() >= 2);
    Ok(if current { Verification::Match } else { Verification::MatchRehashed(hash_now(password)?) })
}

fn dummy_hash() -> PasswordHash<'static> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_now("dummy password for timing").expect("hashing a constant works"));
    PasswordHash::new(hash).expect("our own hash parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_with_owasp_parameters() {
        let hash = hash_now("Ann-pass-2024!").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert_eq!(verify_now("Ann-pass-2024!", Some(&hash)).unwrap(), Verification::Match);
        assert_eq!(verify_now("wrong", Some(&hash)).unwrap(), Verification::Mismatch);
    }

    #[test]
    fn bcrypt_hashes_verify_and_are_replaced() {
        let legacy = bcrypt::hash("Bob-pass-2024!", 4).unwrap();
        let legacy_2a = legacy.replacen("$2b$", "$2a$", 1);
        for stored in [legacy, legacy_2a] {
            match verify_now("Bob-pass-2024!", Some(&stored)).unwrap() {
                Verification::MatchRehashed(new) => assert!(new.starts_with("$argon2id$")),
                other => panic!("expected a rehash, got {other:?}"),
            }
            assert_eq!(verify_now("nope", Some(&stored)).unwrap(), Verification::Mismatch);
        }
    }

    #[test]
    fn unknown_users_and_garbage_hashes_never_match() {
        assert_eq!(verify_now("x", None).unwrap(), Verification::Mismatch);
        assert_eq!(verify_now("x", Some("not a hash")).unwrap(), Verification::Mismatch);
    }
}
