//! Bookkeeping for one streaming request (chat, generate or pull): how far it got, whether it
//! was completed, and — when it is dropped before its end — a recorded [`Cancellation`].
//!
//! The tracker lives in the handler future while the handler waits (model load, prompt delay,
//! hang) and then moves into the response body stream. Hyper drops the handler future or the
//! body as soon as it sees the client's connection close, so `Drop` notices a disconnect within
//! milliseconds, not only when the next token would be written.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::scheduler::{self, Slot};
use crate::state::{Cancellation, Shared};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Still producing; dropping it now means the client went away.
    Running,
    /// The final chunk (or the whole body) was handed to the connection.
    Completed,
    /// Ended on purpose without completing (an error, or an injected connection drop).
    Ended,
}

pub(crate) struct Tracker {
    shared: Arc<Shared>,
    path: &'static str,
    model: String,
    /// Counted in `in_flight_chats` / `completed_chats` (`/api/chat` and
    /// `/v1/chat/completions`).
    is_chat: bool,
    sent: usize,
    outcome: Outcome,
    /// Model to unload when the request is over (`keep_alive: 0`).
    unload: Option<String>,
    /// Generation slot held until the request is over.
    slot: Option<Slot>,
}

impl Tracker {
    pub fn new(shared: &Arc<Shared>, path: &'static str, model: &str) -> Self {
        let is_chat = matches!(path, "/api/chat" | crate::openai::CHAT_COMPLETIONS);
        if is_chat {
            shared.in_flight_chats.fetch_add(1, Ordering::SeqCst);
        }
        Tracker {
            shared: shared.clone(),
            path,
            model: model.to_string(),
            is_chat,
            sent: 0,
            outcome: Outcome::Running,
            unload: None,
            slot: None,
        }
    }

    /// Unload `model` when the request is over.
    pub fn unload_at_end(&mut self, model: &str) {
        self.unload = Some(model.to_string());
    }

    pub fn hold_slot(&mut self, slot: Option<Slot>) {
        self.slot = slot;
    }

    /// One more content chunk (or progress line) was produced.
    pub fn count_sent(&mut self) {
        self.sent += 1;
    }

    pub fn sent(&self) -> usize {
        self.sent
    }

    /// The request was answered to the end.
    pub fn complete(&mut self) {
        if self.outcome == Outcome::Running && self.is_chat {
            self.shared.completed_chats.fetch_add(1, Ordering::SeqCst);
        }
        self.outcome = Outcome::Completed;
    }

    /// The request ended on purpose without completing: not a cancellation.
    pub fn end(&mut self) {
        if self.outcome == Outcome::Running {
            self.outcome = Outcome::Ended;
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.outcome == Outcome::Running {
            self.shared.record_cancellation(Cancellation {
                path: self.path.to_string(),
                model: std::mem::take(&mut self.model),
                at_token: self.sent,
                at: Instant::now(),
            });
        }
        if let Some(model) = self.unload.take() {
            scheduler::unload(&self.shared, &model);
        }
        if self.is_chat {
            self.shared.in_flight_chats.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
