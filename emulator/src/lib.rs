//! An emulator of the Ollama REST API (the native `/api/*` endpoints), faithful in the details a
//! proxy depends on: NDJSON streaming with headers held back until the first token, `stream`
//! defaulting to true, Ollama's error shapes and status codes, thinking and tool-call chunks,
//! cold/warm model loads, pull progress, and fault injection (errors before the first byte or
//! mid-stream, abrupt connection drops, hangs). It records every request and notices clients
//! that disconnect, so tests can check what a proxy sent and that it cancelled upstream work.
//!
//! ```no_run
//! # async fn demo() {
//! use ollama_emulator::{Emulator, Knobs};
//! use std::time::Duration;
//!
//! let emulator = Emulator::start().await;
//! emulator.set_knobs(Knobs { per_token_delay: Duration::from_millis(20), ..Knobs::default() });
//! // point the service under test at emulator.base_url() ...
//! assert!(emulator.cancellations().is_empty());
//! # }
//! ```

mod base64;
mod chat;
mod completion;
mod config;
pub mod embed;
mod generate;
mod generation;
mod models;
mod names;
mod openai;
mod pace;
mod params;
mod pull;
mod scheduler;
mod server;
mod state;
mod text;
mod tracker;
mod validate;
mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{EmulatorConfig, Knobs, ModelSpec};
pub use models::OLLAMA_VERSION;
pub use state::{Cancellation, RecordedRequest};

use state::Shared;

/// A running emulator on a local port. Dropping it stops the server and closes its connections.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts an emulator on `127.0.0.1` and a free port, with the default models and knobs.
    /// Returns once the socket is listening.
    pub async fn start() -> Emulator {
        Self::start_with(EmulatorConfig::default()).await
    }

    /// Starts an emulator with the given configuration.
    ///
    /// # Panics
    /// If the address cannot be bound; use [`Emulator::try_start_with`] to handle that.
    pub async fn start_with(config: EmulatorConfig) -> Emulator {
        match Self::try_start_with(config).await {
            Ok(emulator) => emulator,
            Err(error) => panic!("ollama-emulator: cannot bind: {error}"),
        }
    }

    /// Starts an emulator, reporting a bind failure as an error.
    pub async fn try_start_with(config: EmulatorConfig) -> io::Result<Emulator> {
        let host = config.host.as_deref().unwrap_or("127.0.0.1");
        let listener = TcpListener::bind((host, config.port.unwrap_or(0))).await?;
        let addr = listener.local_addr()?;
        let models = config.models.unwrap_or_else(ModelSpec::defaults);
        let models = models.into_iter().map(|spec| ModelSpec { name: names::with_default_tag(&spec.name), ..spec }).collect();
        let shared = Arc::new(Shared::new(config.knobs, models, config.log_requests, config.openai, config.api_key));
        let server = tokio::spawn(server::serve(listener, server::router(shared.clone())));
        Ok(Emulator { addr, shared, server: Some(server) })
    }

    /// `http://HOST:PORT`, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the knobs; requests that start afterwards use them.
    pub fn set_knobs(&self, knobs: Knobs) {
        self.shared.set_knobs(knobs);
    }

    /// The current knobs.
    pub fn knobs(&self) -> Knobs {
        self.shared.knobs()
    }

    /// Every request received, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The JSON bodies of `POST /api/chat` requests, in order (bodies that were not JSON are
    /// left out).
    pub fn chat_requests(&self) -> Vec<serde_json::Value> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/api/chat")
            .filter_map(|r| r.body.clone())
            .collect()
    }

    /// The JSON bodies of `POST /v1/chat/completions` requests (OpenAI mode), in order.
    pub fn chat_completion_requests(&self) -> Vec<serde_json::Value> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/v1/chat/completions")
            .filter_map(|r| r.body.clone())
            .collect()
    }

    /// Streams (chat, chat completion, generate, pull) whose client went away before the end,
    /// in order.
    pub fn cancellations(&self) -> Vec<Cancellation> {
        self.shared.lock().cancellations.clone()
    }

    /// Waits until at least `n` cancellations are recorded or `timeout` passes, polling every
    /// few milliseconds; returns the cancellations recorded by then.
    pub async fn wait_for_cancellations(&self, n: usize, timeout: Duration) -> Vec<Cancellation> {
        let deadline = Instant::now() + timeout;
        loop {
            let cancellations = self.cancellations();
            if cancellations.len() >= n || Instant::now() >= deadline {
                return cancellations;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Chat responses (`/api/chat` and `/v1/chat/completions`) written to the end (the final
    /// chunk, or the whole non-stream body, was handed to the connection).
    pub fn completed_chats(&self) -> usize {
        self.shared.completed_chats.load(Ordering::SeqCst)
    }

    /// Chat requests (`/api/chat` and `/v1/chat/completions`) being served right now
    /// (validated, and not yet finished or cancelled).
    pub fn in_flight_chats(&self) -> usize {
        self.shared.in_flight_chats.load(Ordering::SeqCst)
    }

    /// Names of the installed models, as `/api/tags` (or `/v1/models`) lists them.
    pub fn models(&self) -> Vec<String> {
        self.shared.lock().installed.iter().map(|m| m.name.clone()).collect()
    }

    /// Stops serving and closes every connection (streams in progress are cut, and are not
    /// recorded as cancellations).
    pub async fn shutdown(mut self) {
        if let Some(server) = self.stop() {
            let _ = server.await;
        }
    }

    fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let server = self.server.take()?;
        server.abort();
        Some(server)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}
