//! State shared by the server and the [`Emulator`](crate::Emulator) handle: knobs, models,
//! and everything recorded for test assertions.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::Notify;

use crate::config::{Knobs, ModelSpec};
use crate::names;
use crate::scheduler::LoadedModel;

/// One request as the emulator received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query string, e.g. `/api/chat`.
    pub path: String,
    /// The body parsed as JSON; `None` when it was empty or not JSON.
    pub body: Option<Value>,
    /// All headers in the order received (names in lower case).
    pub headers: Vec<(String, String)>,
}

/// A stream (chat, generate or pull) whose client went away before its end.
#[derive(Clone, Debug)]
pub struct Cancellation {
    /// `/api/chat`, `/api/generate`, `/api/pull` or `/v1/chat/completions`.
    pub path: String,
    /// The model as the client sent it.
    pub model: String,
    /// Content chunks already handed to the connection (progress lines for a pull). 0 when the
    /// client left before the first chunk (while the model loaded or the prompt was evaluated).
    pub at_token: usize,
    /// When the disconnect was noticed.
    pub at: Instant,
}

/// Everything behind one lock. Critical sections are short and never await.
pub(crate) struct Inner {
    pub knobs: Knobs,
    /// Installed models, listed by `/api/tags` in this order.
    pub installed: Vec<ModelSpec>,
    /// Models that can be pulled.
    pub catalog: Vec<ModelSpec>,
    /// Models loaded "in memory" (for `/api/ps` and cold/warm starts).
    pub loaded: Vec<LoadedModel>,
    pub requests: Vec<RecordedRequest>,
    pub cancellations: Vec<Cancellation>,
    /// Generation requests holding a slot, and waiting for one (see `Knobs::parallel`).
    pub active_slots: usize,
    pub queued: usize,
    /// Source of ids for loads, so that a cancelled load only undoes itself.
    pub next_load_id: u64,
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Signalled whenever a generation slot is released or the knobs change.
    pub slot_released: Notify,
    pub completed_chats: AtomicUsize,
    pub in_flight_chats: AtomicUsize,
    /// Set by shutdown: connections torn down then are not client cancellations.
    pub shutting_down: AtomicBool,
    pub log_requests: bool,
    /// Serves the OpenAI-compatible API instead of the native one.
    pub openai: bool,
    /// The bearer token every request must carry, if any.
    pub api_key: Option<String>,
}

impl Shared {
    pub fn new(knobs: Knobs, installed: Vec<ModelSpec>, log_requests: bool, openai: bool, api_key: Option<String>) -> Self {
        let mut catalog = installed.clone();
        for extra in ModelSpec::defaults().into_iter().chain([ModelSpec::tinyllama()]) {
            if !catalog.iter().any(|m| names::key(&m.name) == names::key(&extra.name)) {
                catalog.push(extra);
            }
        }
        Shared {
            inner: Mutex::new(Inner {
                knobs,
                installed,
                catalog,
                loaded: Vec::new(),
                requests: Vec::new(),
                cancellations: Vec::new(),
                active_slots: 0,
                queued: 0,
                next_load_id: 0,
            }),
            slot_released: Notify::new(),
            completed_chats: AtomicUsize::new(0),
            in_flight_chats: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            log_requests,
            openai,
            api_key,
        }
    }

    /// Locks the state. A panic while it was held cannot leave it inconsistent in a way that
    /// matters to a test double, so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn knobs(&self) -> Knobs {
        self.lock().knobs.clone()
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        self.lock().knobs = knobs;
        // A new `parallel` limit may let queued requests through.
        self.slot_released.notify_waiters();
    }

    pub fn record_request(&self, request: RecordedRequest) {
        self.lock().requests.push(request);
    }

    pub fn record_cancellation(&self, cancellation: Cancellation) {
        if !self.shutting_down.load(Ordering::SeqCst) {
            self.lock().cancellations.push(cancellation);
        }
    }

    /// The installed model that `name` refers to.
    pub fn installed(&self, name: &str) -> Option<ModelSpec> {
        let key = names::key(name);
        self.lock().installed.iter().find(|m| names::key(&m.name) == key).cloned()
    }

    /// The pullable model that `name` refers to.
    pub fn pullable(&self, name: &str) -> Option<ModelSpec> {
        let key = names::key(name);
        self.lock().catalog.iter().find(|m| names::key(&m.name) == key).cloned()
    }

    /// Installs a pulled model (newest first, like `/api/tags` sorts); a re-pull keeps the entry.
    pub fn install(&self, spec: ModelSpec) {
        let key = names::key(&spec.name);
        let mut inner = self.lock();
        if !inner.installed.iter().any(|m| names::key(&m.name) == key) {
            inner.installed.insert(0, spec);
        }
    }

    /// Removes an installed model (and unloads it); false when it was not installed.
    pub fn remove(&self, name: &str) -> bool {
        let key = names::key(name);
        let mut inner = self.lock();
        let before = inner.installed.len();
        inner.installed.retain(|m| names::key(&m.name) != key);
        inner.loaded.retain(|m| m.key != key);
        inner.installed.len() != before
    }
}
