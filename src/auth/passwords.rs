//! Password hashing: argon2id for everything we write; bcrypt only to verify hashes the
//! original backend wrote, which are replaced at the next successful login.
//!
//! Hashing runs on its own threads, one per core, at a lower CPU priority. Their 19 MiB argon2
//! workspaces are reused from job to job (mapping and faulting in a fresh block per login
//! halved the login rate) and given back to the system after two quiet seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

/// OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
fn owasp_params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid")
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

/// Hashes a new password (registration, password change).
pub async fn hash_password(password: String) -> Result<String, HashingError> {
    Ok(on_hashing_thread(move |workspace| hash_now(&password, workspace)).await??)
}

/// Verifies a password. With no stored hash (unknown user) a dummy hash is checked anyway, so
/// the answer takes as long as for a real account.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<Verification, HashingError> {
    Ok(on_hashing_thread(move |workspace| verify_now(&password, stored.as_deref(), workspace)).await??)
}

/// Memory an argon2 computation works in; grows to the largest cost seen, then is reused.
#[derive(Default)]
struct Workspace(Vec<Block>);

impl Workspace {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }
}

type Job = Box<dyn FnOnce(&mut Workspace) + Send>;

/// How long workspaces are kept once no more hashing work comes.
const KEEP_WORKSPACES: Duration = Duration::from_secs(2);

struct HashingPool {
    jobs: Mutex<mpsc::Receiver<Job>>,
    /// Workspaces not in use; at most one per thread exists.
    spare: Mutex<Vec<Workspace>>,
}

fn hashing_queue() -> &'static mpsc::SyncSender<Job> {
    static QUEUE: OnceLock<mpsc::SyncSender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (sender, receiver) = mpsc::sync_channel::<Job>(threads * QUEUED_JOBS_PER_THREAD);
        let pool = Arc::new(HashingPool { jobs: Mutex::new(receiver), spare: Mutex::default() });
        for index in 0..threads {
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("password-hashing-{index}"))
                .spawn(move || hashing_thread(&pool))
                .expect("cannot start a password hashing thread");
        }
        sender
    })
}

fn hashing_thread(pool: &HashingPool) {
    lower_this_threads_priority();
    loop {
        // One thread waits for the next job (the others wait for the lock); when none comes
        // in time, it frees every spare workspace.
        let next = match pool.jobs.lock() {
            Ok(receiver) => receiver.recv_timeout(KEEP_WORKSPACES),
            Err(_) => return,
        };
        match next {
            Ok(job) => {
                let mut workspace = spare(pool).pop().unwrap_or_default();
                job(&mut workspace);
                spare(pool).push(workspace);
            }
            Err(RecvTimeoutError::Timeout) => {
                spare(pool).clear();
                let skipped = SKIPPED_JOBS.swap(0, Ordering::Relaxed);
                if skipped > 0 {
                    tracing::info!(skipped, "password checks skipped: nobody was waiting for them any more");
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn spare(pool: &HashingPool) -> std::sync::MutexGuard<'_, Vec<Workspace>> {
    pool.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hashing runs below the request path's priority (nice 10), so a login flood slows logins more
/// than other requests. Not `SCHED_IDLE`: that starves logins while other programs on the machine
/// (Ollama on CPU) keep every core busy, and measured no better here (BENCHMARKS.md).
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // SAFETY: a plain syscall on this thread's own id; a failure only leaves the priority as is.
    let lowered = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if lowered != 0 {
        tracing::debug!("could not lower the password hashing threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// Every hashing thread is busy and [`QUEUED_JOBS_PER_THREAD`] jobs each are waiting.
    #[error("too many password checks are waiting")]
    Busy,
    /// The request was abandoned while its job waited, so the job was skipped.
    #[error("the request was abandoned")]
    Abandoned,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Jobs skipped since the hashing threads were last idle (reported then).
static SKIPPED_JOBS: AtomicU64 = AtomicU64::new(0);

/// Jobs that may wait per hashing thread (about 30 ms of work each). Beyond it a login is
/// refused at once, so a flood cannot build a backlog that real logins wait minutes behind.
pub const QUEUED_JOBS_PER_THREAD: usize = 32;

/// Runs `job` on a hashing thread. A job whose request was abandoned (the client hung up or the
/// time limit passed; see [`crate::lifetime`]) or whose caller is gone is skipped, so a flood of
/// abandoned logins does not keep the cores busy.
async fn on_hashing_thread<T: Send + 'static>(job: impl FnOnce(&mut Workspace) -> T + Send + 'static) -> Result<T, HashingError> {
    let abandoned = crate::lifetime::abandoned();
    let (reply, result) = oneshot::channel();
    let job: Job = Box::new(move |workspace| {
        if !reply.is_closed() && !abandoned.as_ref().is_some_and(|a| a.is_cancelled()) {
            let _ = reply.send(job(workspace));
        } else {
            SKIPPED_JOBS.fetch_add(1, Ordering::Relaxed);
        }
    });
    hashing_queue().try_send(job).map_err(|err| match err {
        mpsc::TrySendError::Full(_) => HashingError::Busy,
        mpsc::TrySendError::Disconnected(_) => HashingError::Failed(anyhow::anyhow!("the password hashing threads have stopped")),
    })?;
    result.await.map_err(|_| HashingError::Abandoned)
}

/// The raw argon2 output for `password` with these parameters and salt.
fn argon2_output(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &str,
    salt: &[u8],
    output_len: usize,
    workspace: &mut Workspace,
) -> anyhow::Result<Output> {
    let argon2 = Argon2::new(algorithm, version, params);
    let blocks = workspace.blocks(argon2.params().block_count());
    Output::init_with(output_len, |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut *blocks)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

fn hash_now(password: &str, workspace: &mut Workspace) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let params = owasp_params();
    let output = argon2_output(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password,
        &salt,
        Params::DEFAULT_OUTPUT_LEN,
        workspace,
    )?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("argon2 salt: {e}"))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Recomputes the stored argon2 hash for `password`; `None` when the stored text is not a
/// usable argon2 hash.
fn argon2_matches(password: &str, stored: &PasswordHash<'_>, workspace: &mut Workspace) -> Option<bool> {
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else { return None };
    let algorithm = Algorithm::try_from(stored.algorithm).ok()?;
    let version = stored.version.map_or(Ok(Version::default()), Version::try_from).ok()?;
    let params = Params::try_from(stored).ok()?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).ok()?;
    let computed = argon2_output(algorithm, version, params, password, salt, expected.len(), workspace).ok()?;
    // `Output`'s equality is constant-time.
    Some(computed == expected)
}

fn verify_now(password: &str, stored: Option<&str>, workspace: &mut Workspace) -> anyhow::Result<Verification> {
    let Some(stored) = stored else {
        let _ = argon2_matches(password, &dummy_hash(), workspace);
        return Ok(Verification::Mismatch);
    };
    if stored.starts_with("$2") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Ok(Verification::MatchRehashed(hash_now(password, workspace)?)),
            _ => Ok(Verification::Mismatch),
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Ok(Verification::Mismatch);
    };
    if argon2_matches(password, &parsed, workspace) != Some(true) {
        return Ok(Verification::Mismatch);
    }
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed).is_ok_and(|p| p.m_cost() >= 19 * 1024 && p.t_cost() >= 2);
    Ok(if current { Verification::Match } else { Verification::MatchRehashed(hash_now(password, workspace)?) })
}

fn dummy_hash() -> PasswordHash<'static> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let hash =
        DUMMY.get_or_init(|| hash_now("dummy password for timing", &mut Workspace::default()).expect("hashing a constant works"));
    PasswordHash::new(hash).expect("our own hash parses")
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn verify(password: &str, stored: Option<&str>) -> Verification {
        verify_now(password, stored, &mut Workspace::default()).unwrap()
    }

    #[test]
    fn argon2id_round_trip_with_owasp_parameters() {
        let mut workspace = Workspace::default();
        let hash = hash_now("Ann-pass-2024!", &mut workspace).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        // The same workspace, reused, gives the same answers.
        assert_eq!(verify_now("Ann-pass-2024!", Some(&hash), &mut workspace).unwrap(), Verification::Match);
        assert_eq!(verify_now("wrong", Some(&hash), &mut workspace).unwrap(), Verification::Mismatch);
        assert_eq!(verify_now("Ann-pass-2024!", Some(&hash), &mut workspace).unwrap(), Verification::Match);
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_encoder() {
        let ours = hash_now("Cid-pass-2024!", &mut Workspace::default()).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"Cid-pass-2024!", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"nope", &parsed).is_err());

        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, owasp_params())
            .hash_password(b"Cid-pass-2024!", &salt)
            .unwrap()
            .to_string();
        assert_eq!(verify("Cid-pass-2024!", Some(&theirs)), Verification::Match);
        assert_eq!(verify("nope", Some(&theirs)), Verification::Mismatch);
    }

    #[test]
    fn weaker_argon2_hashes_verify_and_are_replaced() {
        let salt = SaltString::generate(&mut OsRng);
        for (algorithm, params, replaced) in [
            (Algorithm::Argon2id, Params::new(4096, 3, 1, None).unwrap(), true),
            (Algorithm::Argon2i, owasp_params(), true),
            (Algorithm::Argon2id, Params::new(19 * 1024, 2, 2, Some(64)).unwrap(), false),
        ] {
            let stored =
                Argon2::new(algorithm, Version::V0x13, params).hash_password(b"Dee-pass-2024!", &salt).unwrap().to_string();
            match verify("Dee-pass-2024!", Some(&stored)) {
                Verification::MatchRehashed(new) if replaced => assert!(new.starts_with("$argon2id$v=19$m=19456,t=2,p=1$")),
                Verification::Match if !replaced => {}
                other => panic!("{stored}: {other:?}"),
            }
            assert_eq!(verify("nope", Some(&stored)), Verification::Mismatch, "{stored}");
        }
    }

    #[test]
    fn bcrypt_hashes_verify_and_are_replaced() {
        let legacy = bcrypt::hash("Bob-pass-2024!", 4).unwrap();
        let legacy_2a = legacy.replacen("$2b$", "$2a$", 1);
        for stored in [legacy, legacy_2a] {
            match verify("Bob-pass-2024!", Some(&stored)) {
                Verification::MatchRehashed(new) => assert!(new.starts_with("$argon2id$")),
                other => panic!("expected a rehash, got {other:?}"),
            }
            assert_eq!(verify("nope", Some(&stored)), Verification::Mismatch);
        }
    }

    #[test]
    fn unknown_users_and_garbage_hashes_never_match() {
        assert_eq!(verify("x", None), Verification::Mismatch);
        assert_eq!(verify("x", Some("not a hash")), Verification::Mismatch);
        assert_eq!(verify("x", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ")), Verification::Mismatch);
    }

    #[tokio::test]
    async fn concurrent_jobs_on_the_hashing_threads_get_their_own_answers() {
        let hashes = futures_util::future::join_all((0..6).map(|i| hash_password(format!("pass-{i}")))).await;
        let checks = hashes
            .into_iter()
            .enumerate()
            .map(|(i, hash)| verify_password(format!("pass-{}", if i % 2 == 0 { i } else { i + 1 }), Some(hash.unwrap())));
        for (i, verification) in futures_util::future::join_all(checks).await.into_iter().enumerate() {
            let expected = if i % 2 == 0 { Verification::Match } else { Verification::Mismatch };
            assert_eq!(verification.unwrap(), expected, "job {i}");
        }
    }
}
