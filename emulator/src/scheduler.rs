//! The emulated scheduler: generation slots with a queue (`Knobs::parallel`, `Knobs::max_queue`)
//! and model loading (cold vs warm, keep-alive, `/api/ps`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};

use crate::config::{Knobs, ModelSpec};
use crate::names;
use crate::params::KeepAlive;
use crate::state::Shared;
use crate::wire::{local_now, ApiError};

/// The queue-full message of Ollama (two spaces included).
const SERVER_BUSY: &str = "server busy, please try again.  maximum pending requests exceeded";

/// "Forever" as Ollama shows it: now plus the largest Go duration (about 292 years).
const FOREVER_SECS: i64 = i64::MAX / 1_000_000_000;

/// A model in memory.
#[derive(Clone, Debug)]
pub(crate) struct LoadedModel {
    pub key: String,
    pub spec: ModelSpec,
    /// When its (emulated) load finishes; requests arriving before wait for it.
    pub ready_at: Instant,
    /// When it unloads; `None` = never (negative keep-alive, or until the request ends).
    pub expires: Option<Instant>,
    /// Wall-clock `expires_at` shown by `/api/ps`.
    pub expires_at: DateTime<FixedOffset>,
    pub context_length: u64,
    load_id: u64,
}

impl LoadedModel {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

/// The loaded models for `/api/ps`, latest `expires_at` first.
pub(crate) fn loaded_models(shared: &Shared) -> Vec<LoadedModel> {
    let now = Instant::now();
    let mut models: Vec<LoadedModel> = shared.lock().loaded.iter().filter(|m| !m.expired(now)).cloned().collect();
    models.sort_by_key(|m| std::cmp::Reverse(m.expires_at));
    models
}

/// What loading a model cost a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadOutcome {
    /// The model was not ready when the request arrived.
    pub cold: bool,
    /// How long the request waited for the load.
    pub waited: Duration,
}

/// Makes sure the model is loaded, waiting `load_delay` when it is cold (or the rest of a load
/// another request started), and sets its keep-alive. If the caller is dropped while it loads,
/// the load is undone, so the next request finds the model cold again (as in Ollama, where a
/// client abort cancels the load).
pub(crate) async fn load(
    shared: &Shared,
    spec: &ModelSpec,
    load_delay: Duration,
    keep_alive: KeepAlive,
    num_ctx: Option<u64>,
) -> LoadOutcome {
    let key = names::key(&spec.name);
    let started = Instant::now();
    let (ready_at, new_load) = {
        let mut inner = shared.lock();
        inner.loaded.retain(|m| !m.expired(started));
        match inner.loaded.iter().find(|m| m.key == key) {
            Some(loaded) => (loaded.ready_at, None),
            None => {
                inner.next_load_id += 1;
                let load_id = inner.next_load_id;
                let ready_at = started + load_delay;
                inner.loaded.push(LoadedModel {
                    key: key.clone(),
                    spec: spec.clone(),
                    ready_at,
                    expires: None,
                    expires_at: local_now(),
                    context_length: num_ctx.unwrap_or(4096),
                    load_id,
                });
                (ready_at, Some(load_id))
            }
        }
    };
    let cold = ready_at > started || new_load.is_some();
    let pending = new_load.map(|load_id| PendingLoad { shared, key: key.clone(), load_id });
    tokio::time::sleep_until(ready_at.into()).await;
    // The load is complete, so dropping the guard no longer undoes anything.
    drop(pending);
    set_keep_alive(shared, &key, keep_alive, num_ctx);
    LoadOutcome { cold, waited: if cold { started.elapsed() } else { Duration::ZERO } }
}

/// Undoes a load whose request was dropped before the load finished (a no-op once it did).
struct PendingLoad<'a> {
    shared: &'a Shared,
    key: String,
    load_id: u64,
}

impl Drop for PendingLoad<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        self.shared.lock().loaded.retain(|m| !(m.key == self.key && m.load_id == self.load_id && m.ready_at > now));
    }
}

fn set_keep_alive(shared: &Shared, key: &str, keep_alive: KeepAlive, num_ctx: Option<u64>) {
    let mut inner = shared.lock();
    let Some(model) = inner.loaded.iter_mut().find(|m| m.key == key) else {
        return;
    };
    if let Some(ctx) = num_ctx {
        model.context_length = ctx;
    }
    // keep_alive 0 keeps the model until the request ends; the request then unloads it.
    if keep_alive.unloads() {
        model.expires = None;
        model.expires_at = local_now();
        return;
    }
    let duration = keep_alive.duration();
    model.expires = duration.and_then(|d| Instant::now().checked_add(d));
    let wall =
        duration.and_then(|d| chrono::Duration::from_std(d).ok()).unwrap_or_else(|| chrono::Duration::seconds(FOREVER_SECS));
    let now = local_now();
    model.expires_at = now.checked_add_signed(wall).unwrap_or(now);
}

/// Unloads a model (keep_alive 0).
pub(crate) fn unload(shared: &Shared, name: &str) {
    let key = names::key(name);
    shared.lock().loaded.retain(|m| m.key != key);
}

/// A generation slot; released on drop.
pub(crate) struct Slot {
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.lock().active_slots -= 1;
        self.shared.slot_released.notify_waiters();
    }
}

/// A place in the queue while waiting for a slot; given back on drop.
struct QueueTicket {
    shared: Arc<Shared>,
    queued: bool,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        if self.queued {
            self.shared.lock().queued -= 1;
        }
    }
}

/// Waits silently for a generation slot when `knobs.parallel` is set (`Ok(None)` when it is
/// not); 503 when the queue is full.
pub(crate) async fn acquire_slot(shared: &Arc<Shared>, knobs: &Knobs) -> Result<Option<Slot>, ApiError> {
    let Some(limit) = knobs.parallel.map(|n| n.max(1)) else {
        return Ok(None);
    };
    let mut ticket = QueueTicket { shared: shared.clone(), queued: false };
    loop {
        let released = shared.slot_released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        {
            let mut inner = shared.lock();
            if inner.active_slots < limit {
                inner.active_slots += 1;
                if ticket.queued {
                    inner.queued -= 1;
                    ticket.queued = false;
                }
                return Ok(Some(Slot { shared: shared.clone() }));
            }
            if !ticket.queued {
                if knobs.max_queue.is_some_and(|max| inner.queued >= max) {
                    return Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, SERVER_BUSY));
                }
                inner.queued += 1;
                ticket.queued = true;
            }
        }
        released.await;
    }
}
