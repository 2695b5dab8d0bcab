//! The providers this process knows, kept in memory: for each its client, its health (probed
//! in the background, cooled down with a growing back-off after failures), its models and the
//! ones loaded now, and the answers it is generating. Requests read this state and never wait
//! for a probe: every provider is probed by its own task, each call bounded by a timeout, so a
//! hung host delays nothing but itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use super::keys::KeyCipher;
use super::routing::{self, Candidate};
use super::{cools_down, fails_over, ChunkStream, ProviderKind, UpstreamClient};
use crate::background::Spawner;
use crate::config::OllamaConfig;
use crate::ollama::openai_upstream::{OpenAiUpstream, Timeouts};
use crate::ollama::{model_name, ChatRequest, OllamaClient, OllamaError};
use crate::store::providers::ProviderRow;
use crate::store::Store;

/// How often a healthy provider is probed (its models, the loaded ones, its version).
const PROBE_INTERVAL: Duration = Duration::from_secs(15);
/// The longest wait for one probe call (startup waits for the first probes at most this long).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first cool-down after a failure; it doubles with each failure in a row, up to
/// [`MAX_COOL_DOWN`].
const FIRST_COOL_DOWN: Duration = Duration::from_secs(1);
const MAX_COOL_DOWN: Duration = Duration::from_secs(60);
/// How long a stalled provider is routed after the others the first time, at least (see
/// [`Provider::stalled`]), and at most.
const MIN_STALL_ASIDE: Duration = Duration::from_secs(10);
const MAX_STALL_ASIDE: Duration = Duration::from_secs(600);
/// How often the providers are read again from the database (changes made on other replicas).
const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Chats whose provider is remembered in memory; beyond it the memory starts over (the
/// database still knows).
const STICKY_CHATS: usize = 50_000;
/// Names given to the hosts of `OLLAMA_BASE_URL`: `default`, `default-2`, ...
const CONFIGURED_NAME: &str = "default";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One provider: its settings, its client, and what is known of it now.
pub struct Provider {
    pub id: Uuid,
    pub name: String,
    pub kind: ProviderKind,
    pub enabled: bool,
    /// Changed in place by a reload: a new priority keeps the provider's state (its models stay
    /// listed).
    priority: AtomicI32,
    pub model_prefix: Option<String>,
    /// The row it was made from: a reload keeps providers whose row did not change.
    row: ProviderRow,
    /// Why it cannot be used, when it cannot (its API key does not open, an unknown kind).
    client: Result<UpstreamClient, String>,
    state: Mutex<State>,
    running: AtomicUsize,
    wake: Notify,
    progress: watch::Sender<Progress>,
    stop: CancellationToken,
    /// Bumped by every change of a provider's model list or health (the union is rebuilt).
    epoch: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    healthy: bool,
    version: Option<String>,
    latency_ms: Option<u64>,
    last_error: Option<OllamaError>,
    failures: u32,
    retry_at: Option<Instant>,
    probed_at: Option<Instant>,
    /// `/ollama/tags` entries, under the provider's prefix, each naming the provider.
    models: Arc<Vec<Value>>,
    /// Listed name (with the prefix) -> the name the provider knows.
    names: HashMap<String, String>,
    /// The names and digests of the last listing: when they change, the entries are rebuilt.
    installed: Vec<(String, String)>,
    listed_at: Option<Instant>,
    /// Listed names of the models in memory.
    loaded: HashSet<String>,
    /// Refreshes asked for ([`Provider::refresh_now`]); a probe serves those asked before it began.
    requested: u64,
    /// Took a request for a loaded model and gave no first token in time: until when it is
    /// routed after the others, and the wait it exceeded. Probes cannot tell; a first token ends it.
    stalled: Option<(Instant, Duration)>,
    /// Stalls in a row: each doubles the time set aside.
    stalls: u32,
}

impl State {
    fn stalled_now(&self) -> Option<Duration> {
        self.stalled.filter(|(until, _)| Instant::now() < *until).map(|(_, limit)| limit)
    }
}

#[derive(Clone, Copy, Default)]
struct Progress {
    probes: u64,
    /// The last request number served by a probe.
    served: u64,
}

/// What the admin sees of a provider's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderStatus {
    /// Answered its last probe, no request failed on it since (`false` until first probed), and
    /// it is not set aside for leaving a request without a first token.
    pub healthy: bool,
    /// The provider's own version (Ollama's `/api/version`).
    pub version: Option<String>,
    /// How long its model list took to come, in the last probe.
    pub latency_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Its models, as listed here (under its prefix).
    pub models: Vec<String>,
    /// Its models in memory now.
    pub loaded_models: Vec<String>,
    /// Answers this server is generating on it now.
    pub running: usize,
}

impl ProviderStatus {
    /// A provider this process has not probed (just added through another replica).
    pub fn unknown() -> Self {
        ProviderStatus {
            healthy: false,
            version: None,
            latency_ms: None,
            last_error: None,
            models: Vec::new(),
            loaded_models: Vec::new(),
            running: 0,
        }
    }
}

impl Provider {
    fn new(row: ProviderRow, config: &OllamaConfig, cipher: &KeyCipher, epoch: Arc<AtomicU64>) -> Provider {
        let kind = ProviderKind::parse(&row.kind);
        let client = match (kind, &row.api_key_encrypted) {
            (None, _) => Err(format!("Unknown provider kind {:?}", row.kind)),
            (Some(kind), sealed) => {
                let key = match sealed {
                    Some(sealed) => cipher.open(row.id, sealed).map(Some).map_err(|e| e.to_string()),
                    None => Ok(None),
                };
                key.and_then(|key| make_client(kind, config, &row.api_url, key.as_deref()))
            }
        };
        if let Err(reason) = &client {
            tracing::warn!(provider = %row.name, reason, "provider cannot be used");
        }
        Provider {
            id: row.id,
            name: row.name.clone(),
            kind: kind.unwrap_or(ProviderKind::Ollama),
            enabled: row.enabled(),
            priority: AtomicI32::new(row.priority),
            model_prefix: row.model_prefix.clone().filter(|p| !p.is_empty()),
            row,
            client,
            state: Mutex::default(),
            running: AtomicUsize::new(0),
            wake: Notify::new(),
            progress: watch::channel(Progress::default()).0,
            stop: CancellationToken::new(),
            epoch,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn usable(&self) -> Option<&UpstreamClient> {
        self.client.as_ref().ok().filter(|_| self.enabled)
    }

    /// Its base URL as configured (for admins and `rovertchat check` only).
    pub fn base_url(&self) -> &str {
        &self.row.api_url
    }

    /// The address the log names: the base URL without credentials (`None` when unusable).
    pub fn address(&self) -> Option<&str> {
        self.client.as_ref().ok().map(UpstreamClient::address)
    }

    pub fn is_healthy(&self) -> bool {
        self.state().healthy
    }

    pub fn status(&self) -> ProviderStatus {
        let state = self.state();
        let stalled = state.stalled_now();
        let last_error = match (&self.client, stalled, &state.last_error) {
            (Err(reason), _, _) => Some(reason.clone()),
            (_, Some(limit), _) => {
                Some(format!("Gave no first token within {}s; other providers are tried first", limit.as_secs_f64()))
            }
            (_, None, error) => error.as_ref().map(ToString::to_string),
        };
        let mut models: Vec<String> = state.names.keys().cloned().collect();
        models.sort();
        let mut loaded_models: Vec<String> = state.loaded.iter().cloned().collect();
        loaded_models.sort();
        ProviderStatus {
            healthy: state.healthy && stalled.is_none(),
            version: state.version.clone(),
            latency_ms: state.latency_ms,
            last_error,
            models,
            loaded_models,
            running: self.running.load(Ordering::Relaxed),
        }
    }

    /// The name `listed` has at this provider: without its prefix.
    fn upstream_name<'a>(&self, listed: &'a str) -> Option<&'a str> {
        match &self.model_prefix {
            Some(prefix) => listed.strip_prefix(prefix.as_str()).filter(|rest| !rest.is_empty()),
            None => Some(listed),
        }
    }

    fn listed_name(&self, upstream: &str) -> String {
        format!("{}{upstream}", self.model_prefix.as_deref().unwrap_or(""))
    }

    /// A request failed on this provider: when the provider itself is in trouble it is cooled
    /// down, and probed again when the cool-down ends.
    fn failed(&self, err: &OllamaError) {
        if !cools_down(err) {
            return;
        }
        let mut state = self.state();
        self.cool_down(&mut state, err.clone());
        drop(state);
        self.wake.notify_one();
    }

    fn cool_down(&self, state: &mut State, err: OllamaError) {
        state.failures = state.failures.saturating_add(1);
        let factor = 1u32 << (state.failures - 1).min(10);
        let wait = FIRST_COOL_DOWN.saturating_mul(factor).min(MAX_COOL_DOWN);
        state.retry_at = Some(Instant::now() + wait);
        if state.healthy || state.probed_at.is_none() {
            let address = self.client.as_ref().map_or("", |client| client.address());
            tracing::warn!(provider = %self.name, address, cause = %err, cool_down_secs = wait.as_secs(), "upstream unreachable");
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        state.healthy = false;
        state.last_error = Some(err);
    }

    /// A request for a model loaded here waited `limit` without a first token while it could
    /// have gone elsewhere: the provider takes requests but does not answer them (a wedged
    /// runner, a GPU fault), which its probes do not show. It is routed after the others for
    /// `limit` (at least [`MIN_STALL_ASIDE`]), doubling with each stall in a row up to
    /// [`MAX_STALL_ASIDE`].
    fn stalled(&self, limit: Duration) {
        let mut state = self.state();
        state.stalls = state.stalls.saturating_add(1);
        let first = limit.max(MIN_STALL_ASIDE);
        let aside = first.saturating_mul(1u32 << (state.stalls - 1).min(10)).min(MAX_STALL_ASIDE.max(first));
        state.stalled = Some((Instant::now() + aside, limit));
        drop(state);
        tracing::warn!(provider = %self.name, waited_secs = limit.as_secs_f64(), aside_secs = aside.as_secs(), "provider gave no first token; other providers are tried first");
    }

    /// The model answered here, so it is in memory now, and the provider answers again.
    fn answered_with(&self, listed: &str) {
        let mut state = self.state();
        if !state.loaded.contains(listed) {
            state.loaded.insert(listed.to_owned());
        }
        state.stalled = None;
        state.stalls = 0;
    }

    /// How long a request for `listed` may wait here for its first token before the next
    /// provider is tried: only when the model needs no loading (a load may take minutes).
    fn stall_limit(&self, listed: &str, config: &OllamaConfig) -> Option<Duration> {
        let limit = config.stall_timeout?;
        (self.kind == ProviderKind::OpenAi || self.state().loaded.contains(listed)).then_some(limit)
    }

    /// Asks for a probe now (forcing a fresh model list) and waits for it, at most
    /// [`PROBE_TIMEOUT`] plus the probe's own time.
    pub async fn refresh_now(&self) {
        let ticket = {
            let mut state = self.state();
            state.requested += 1;
            state.requested
        };
        let mut progress = self.progress.subscribe();
        self.wake.notify_one();
        let served = progress.wait_for(|p| p.served >= ticket);
        let _ = tokio::time::timeout(PROBE_TIMEOUT * 3, served).await;
    }

    /// Probes the provider until it is stopped: every [`PROBE_INTERVAL`] while healthy, when its
    /// cool-down ends while not, and at once when asked.
    async fn keep_probing(self: Arc<Self>, config: OllamaConfig) {
        loop {
            self.probe(&config).await;
            loop {
                let (due, asked) = {
                    let state = self.state();
                    let due = match (state.healthy, state.retry_at, state.probed_at) {
                        (false, Some(retry_at), _) => retry_at,
                        (_, _, Some(probed_at)) => probed_at + PROBE_INTERVAL,
                        _ => Instant::now(),
                    };
                    (due, state.requested > self.progress.borrow().served)
                };
                if asked || Instant::now() >= due {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = self.wake.notified() => {}
                    () = self.stop.cancelled() => return,
                }
            }
            if self.stop.is_cancelled() {
                return;
            }
        }
    }

    async fn probe(&self, config: &OllamaConfig) {
        let requested = self.state().requested;
        match &self.client {
            Ok(UpstreamClient::Ollama(client)) if self.enabled => self.probe_ollama(client, config, requested).await,
            Ok(UpstreamClient::OpenAi(client)) if self.enabled => self.probe_openai(client).await,
            _ => {}
        }
        // Also for a provider that is not probed (disabled, unusable): its next turn is a
        // period away, not now.
        self.state().probed_at = Some(Instant::now());
        self.progress.send_modify(|p| {
            p.probes += 1;
            p.served = p.served.max(requested);
        });
    }

    async fn probe_ollama(&self, client: &OllamaClient, config: &OllamaConfig, requested: u64) {
        let listing = async {
            let started = Instant::now();
            bounded(client.installed()).await.map(|installed| (installed, started.elapsed()))
        };
        let (listing, loaded, version) = tokio::join!(listing, bounded(client.loaded()), bounded(client.version()));
        let (installed, latency) = match listing {
            Ok(listed) => listed,
            Err(err) => {
                self.cool_down(&mut self.state(), err);
                return;
            }
        };
        let stale = {
            let state = self.state();
            let forced = requested > self.progress.borrow().served;
            forced || state.installed != installed || state.listed_at.is_none_or(|at| at.elapsed() >= config.tags_cache_ttl)
        };
        let entries = if stale {
            client.clear_cache().await;
            match bounded(client.tags()).await {
                Ok(tags) => Some(self.entries(&tags)),
                Err(err) => {
                    tracing::warn!(provider = %self.name, cause = %err, "listing the provider's models with their capabilities failed");
                    None
                }
            }
        } else {
            None
        };
        let mut state = self.state();
        let recovered = !state.healthy;
        if recovered {
            tracing::info!(provider = %self.name, address = client.address(), models = installed.len(), "upstream reachable");
        }
        state.healthy = true;
        state.failures = 0;
        state.retry_at = None;
        state.last_error = None;
        state.latency_ms = Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
        state.version = version.ok().and_then(|v| v.get("version").and_then(Value::as_str).map(str::to_owned));
        if let Ok(loaded) = loaded {
            state.loaded = loaded.iter().map(|name| self.listed_name(name)).collect();
        }
        let changed = entries.is_some() || recovered;
        if let Some(entries) = entries {
            state.names = entries
                .iter()
                .filter_map(|entry| model_name(entry).map(str::to_owned))
                .filter_map(|listed| self.upstream_name(&listed).map(|upstream| (listed.clone(), upstream.to_owned())))
                .collect();
            state.models = Arc::new(entries);
            state.installed = installed;
            state.listed_at = Some(Instant::now());
        }
        if changed {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An OpenAI-compatible server: its model list (`/models`) is its health; it has no
    /// version and says nothing of what is loaded.
    async fn probe_openai(&self, client: &OpenAiUpstream) {
        let started = Instant::now();
        let ids = match bounded(client.models()).await {
            Ok(ids) => ids,
            Err(err) => {
                self.cool_down(&mut self.state(), err);
                return;
            }
        };
        let latency = started.elapsed();
        let installed: Vec<(String, String)> = ids.iter().map(|id| (id.clone(), String::new())).collect();
        let mut state = self.state();
        let recovered = !state.healthy;
        if recovered {
            tracing::info!(provider = %self.name, address = client.address(), models = ids.len(), "upstream reachable");
        }
        state.healthy = true;
        state.failures = 0;
        state.retry_at = None;
        state.last_error = None;
        state.latency_ms = Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
        if state.installed != installed || state.listed_at.is_none() {
            // The shape of Ollama's `/api/tags` entries, with what an OpenAI server tells.
            let entries: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let listed = self.listed_name(id);
                    json!({
                        "model": listed, "name": listed, "modified_at": null, "size": 0, "digest": "",
                        "details": {"format": "", "family": "", "parameter_size": "", "quantization_level": ""},
                        "capabilities": ["completion"], "provider": self.name,
                    })
                })
                .collect();
            state.names = ids.iter().map(|id| (self.listed_name(id), id.clone())).collect();
            state.models = Arc::new(entries);
            state.installed = installed;
            state.listed_at = Some(Instant::now());
            self.epoch.fetch_add(1, Ordering::Relaxed);
        } else if recovered {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `/api/tags` entries under the prefix, each naming this provider.
    fn entries(&self, tags: &Value) -> Vec<Value> {
        let listed = tags.get("models").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        listed
            .iter()
            .map(|entry| {
                let mut entry = entry.clone();
                if self.model_prefix.is_some() {
                    for field in ["name", "model"] {
                        if let Some(name) = entry.get(field).and_then(Value::as_str) {
                            entry[field] = json!(self.listed_name(name));
                        }
                    }
                }
                entry["provider"] = json!(self.name);
                entry
            })
            .collect()
    }
}

/// A probe's call, at most [`PROBE_TIMEOUT`].
async fn bounded<T>(call: impl std::future::Future<Output = Result<T, OllamaError>>) -> Result<T, OllamaError> {
    tokio::time::timeout(PROBE_TIMEOUT, call).await.unwrap_or(Err(OllamaError::Timeout(PROBE_TIMEOUT)))
}

fn make_client(kind: ProviderKind, config: &OllamaConfig, base_url: &str, key: Option<&str>) -> Result<UpstreamClient, String> {
    match kind {
        ProviderKind::Ollama => OllamaClient::new(config, base_url, key).map(UpstreamClient::Ollama).map_err(|e| e.to_string()),
        ProviderKind::OpenAi => OpenAiUpstream::new(base_url, key.map(str::to_owned), Timeouts::from(config))
            .map(UpstreamClient::OpenAi)
            .map_err(|e| e.to_string()),
    }
}

/// Counts an answer as running on its provider while it lives.
struct Running(Arc<Provider>);

impl Running {
    fn start(provider: &Arc<Provider>) -> Running {
        provider.running.fetch_add(1, Ordering::Relaxed);
        Running(provider.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer that has begun: its provider and its chunks (the first one included). It counts
/// as running on its provider until dropped.
pub struct OpenedAnswer {
    pub provider: String,
    pub chunks: ChunkStream,
    _running: Running,
}

/// A provider a pull or delete acts on.
pub struct PullTarget {
    pub name: String,
    pub client: OllamaClient,
    provider: Arc<Provider>,
}

impl PullTarget {
    /// Reads its model list again (after a pull or delete), waiting for it.
    pub async fn refresh(&self) {
        self.provider.refresh_now().await;
    }
}

/// The registry of providers. Cheap to clone.
#[derive(Clone)]
pub struct Upstreams(Arc<Registry>);

struct Registry {
    store: Store,
    config: OllamaConfig,
    cipher: KeyCipher,
    spawner: Spawner,
    providers: RwLock<Arc<Vec<Arc<Provider>>>>,
    epoch: Arc<AtomicU64>,
    /// `/ollama/tags`' union and the epoch it was built at.
    union: Mutex<Option<(u64, Arc<Value>)>>,
    /// Chat -> the provider of its last answer.
    sticky: Mutex<HashMap<Uuid, String>>,
    reloading: tokio::sync::Mutex<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        for provider in self.providers.read().unwrap_or_else(PoisonError::into_inner).iter() {
            provider.stop.cancel();
        }
    }
}

impl Upstreams {
    /// A registry without providers yet ([`Upstreams::reload`] reads them).
    pub fn new(store: Store, config: OllamaConfig, cipher: KeyCipher, spawner: Spawner) -> Self {
        Upstreams(Arc::new(Registry {
            store,
            config,
            cipher,
            spawner,
            providers: RwLock::default(),
            epoch: Arc::default(),
            union: Mutex::default(),
            sticky: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    /// Adds the hosts of `OLLAMA_BASE_URL` that are not providers yet, reads the providers,
    /// starts probing them, waits for their first probes (at most [`PROBE_TIMEOUT`] and a bit),
    /// and reads them again every [`RELOAD_INTERVAL`].
    pub async fn start(store: Store, config: OllamaConfig, cipher: KeyCipher, spawner: Spawner) -> anyhow::Result<Self> {
        for (index, url) in config.base_urls.iter().enumerate() {
            let names = (index + 1..index + 100).map(|n| match n {
                1 => CONFIGURED_NAME.to_owned(),
                n => format!("{CONFIGURED_NAME}-{n}"),
            });
            store.ensure_ollama_provider(url, names).await?;
        }
        let upstreams = Upstreams::new(store, config, cipher, spawner.clone());
        upstreams.reload().await?;
        upstreams.first_probes().await;
        let _ = upstreams.tags();
        let weak = Arc::downgrade(&upstreams.0);
        spawner.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + RELOAD_INTERVAL, RELOAD_INTERVAL);
            loop {
                ticks.tick().await;
                let Some(registry) = weak.upgrade() else { return };
                let upstreams = Upstreams(registry);
                if let Err(err) = upstreams.reload().await {
                    tracing::warn!(error = %err, "reading the providers failed");
                }
                // Keeps the metrics' model labels current.
                let _ = upstreams.tags();
            }
        });
        Ok(upstreams)
    }

    /// Reads the providers again: unchanged ones keep their state (a new priority included),
    /// changed ones start over, removed ones stop being probed.
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.0.reloading.lock().await;
        let rows = self.0.store.providers().await?;
        let before = self.providers();
        let mut after = Vec::with_capacity(rows.len());
        for row in rows {
            let kept = before.iter().find(|p| p.id == row.id && same_settings(&p.row, &row));
            match kept {
                Some(provider) => {
                    provider.priority.store(row.priority, Ordering::Relaxed);
                    after.push(provider.clone());
                }
                None => {
                    let provider = Arc::new(Provider::new(row, &self.0.config, &self.0.cipher, self.0.epoch.clone()));
                    self.0.spawner.spawn(provider.clone().keep_probing(self.0.config.clone()));
                    after.push(provider);
                }
            }
        }
        for gone in before.iter().filter(|old| !after.iter().any(|new| Arc::ptr_eq(old, new))) {
            gone.stop.cancel();
        }
        *self.0.providers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(after);
        self.0.epoch.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until every provider has been probed once, at most [`PROBE_TIMEOUT`] and a second.
    pub async fn first_probes(&self) {
        let probes = self.providers().iter().map(|p| p.progress.subscribe()).collect::<Vec<_>>();
        let first = futures_util::future::join_all(probes.into_iter().map(|mut progress| async move {
            let _ = progress.wait_for(|p| p.probes > 0).await;
        }));
        let _ = tokio::time::timeout(PROBE_TIMEOUT + Duration::from_secs(1), first).await;
    }

    /// Every provider, the preferred first.
    pub fn providers(&self) -> Arc<Vec<Arc<Provider>>> {
        self.0.providers.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn cipher(&self) -> &KeyCipher {
        &self.0.cipher
    }

    /// Whether any enabled provider answered its last probe (`None`: there is none).
    pub fn any_healthy(&self) -> Option<bool> {
        let providers = self.providers();
        let mut enabled = providers.iter().filter(|p| p.enabled).peekable();
        enabled.peek()?;
        Some(enabled.any(|p| p.is_healthy()))
    }

    /// The error that says no provider can be reached: the one provider's own error when there
    /// is one, else a list of the providers and what they last said (names, never addresses).
    fn none_reachable(&self, providers: &[&Arc<Provider>]) -> OllamaError {
        match providers {
            [] => OllamaError::NoProvider("No model provider is enabled".into()),
            [only] => match (&only.client, &only.state().last_error) {
                (Err(reason), _) => OllamaError::NoProvider(format!("Provider {} cannot be used: {reason}", only.name)),
                (_, Some(err)) => err.clone(),
                (_, None) => OllamaError::NoProvider(format!("Provider {} has not answered yet", only.name)),
            },
            several => {
                let said: Vec<String> = several
                    .iter()
                    .map(|p| match (&p.client, &p.state().last_error) {
                        (Err(reason), _) => format!("{}: {reason}", p.name),
                        (_, Some(err)) => format!("{}: {err}", p.name),
                        (_, None) => format!("{}: not answered yet", p.name),
                    })
                    .collect();
                OllamaError::NoProvider(format!("No model provider is reachable ({})", said.join("; ")))
            }
        }
    }

    /// `/ollama/tags`: the models of every reachable provider (the first of several with one
    /// name lists it), served from memory.
    pub fn tags(&self) -> Result<Arc<Value>, OllamaError> {
        let epoch = self.0.epoch.load(Ordering::Relaxed);
        if let Some((built, tags)) = &*lock(&self.0.union) {
            if *built == epoch {
                return Ok(tags.clone());
            }
        }
        let providers = self.providers();
        let enabled: Vec<&Arc<Provider>> = providers.iter().filter(|p| p.enabled).collect();
        let healthy: Vec<&&Arc<Provider>> = enabled.iter().filter(|p| p.is_healthy()).collect();
        if healthy.is_empty() && !enabled.is_empty() {
            return Err(self.none_reachable(&enabled));
        }
        let mut seen = HashSet::new();
        let mut models = Vec::new();
        for provider in healthy {
            let entries = provider.state().models.clone();
            for entry in entries.iter() {
                if seen.insert(model_name(entry).unwrap_or_default().to_owned()) {
                    models.push(entry.clone());
                }
            }
        }
        crate::metrics::know_models(models.iter().filter_map(|m| model_name(m).map(str::to_owned)));
        let tags = Arc::new(json!({ "models": models }));
        *lock(&self.0.union) = Some((epoch, tags.clone()));
        Ok(tags)
    }

    /// The providers that may serve `model`, best first, each with the name the model has
    /// there. A model no provider lists is tried on the Ollama providers (it may have been
    /// pulled there since the last listing; otherwise Ollama's "not found" is the answer).
    fn route(&self, model: &str, sticky: Option<&str>) -> Result<Vec<(Arc<Provider>, String)>, OllamaError> {
        let providers = self.providers();
        let usable: Vec<&Arc<Provider>> = providers.iter().filter(|p| p.usable().is_some()).collect();
        if usable.is_empty() {
            return Err(self.none_reachable(&providers.iter().filter(|p| p.enabled).collect::<Vec<_>>()));
        }
        let listing: Vec<(&Arc<Provider>, String)> =
            usable.iter().filter_map(|p| p.state().names.get(model).map(|upstream| (*p, upstream.clone()))).collect();
        let mut chosen = listing;
        if chosen.is_empty() {
            chosen = usable
                .iter()
                .filter(|p| p.kind == ProviderKind::Ollama)
                .filter_map(|p| p.upstream_name(model).map(|upstream| (*p, upstream.to_owned())))
                .collect();
        }
        if chosen.is_empty() {
            return Err(OllamaError::Upstream {
                status: reqwest::StatusCode::NOT_FOUND,
                message: format!("model '{model}' not found"),
            });
        }
        let mut candidates: Vec<Candidate> = chosen
            .iter()
            .map(|(p, _)| {
                let state = p.state();
                Candidate {
                    name: p.name.clone(),
                    healthy: state.healthy,
                    stalled: state.stalled_now().is_some(),
                    sticky: sticky == Some(p.name.as_str()),
                    loaded: state.loaded.contains(model),
                    running: p.running.load(Ordering::Relaxed),
                    priority: p.priority.load(Ordering::Relaxed),
                }
            })
            .collect();
        routing::order(&mut candidates);
        Ok(candidates
            .iter()
            .filter_map(|c| chosen.iter().find(|(p, _)| p.name == c.name).map(|(p, upstream)| ((*p).clone(), upstream.clone())))
            .collect())
    }

    /// The provider of the chat's last answer: remembered here, else read from its usage rows.
    async fn sticky_provider(&self, chat_id: Uuid) -> Option<String> {
        if let Some(name) = lock(&self.0.sticky).get(&chat_id) {
            return Some(name.clone());
        }
        match self.0.store.last_provider_of_chat(chat_id).await {
            Ok(name) => name,
            Err(err) => {
                tracing::warn!(error = %err, "reading the provider of a chat failed; routing without it");
                None
            }
        }
    }

    fn remember_sticky(&self, chat_id: Uuid, provider: &str) {
        let mut sticky = lock(&self.0.sticky);
        if sticky.len() >= STICKY_CHATS {
            sticky.clear();
        }
        sticky.insert(chat_id, provider.to_owned());
    }

    /// Starts an answer on the best provider for the request's model and waits for its first
    /// chunk; a provider that fails before it hands over to the next one (and is cooled down
    /// when it is in trouble). `on_attempt` is told each provider tried.
    pub async fn open(
        &self,
        chat_id: Option<Uuid>,
        request: &ChatRequest,
        on_attempt: impl Fn(&str),
    ) -> Result<OpenedAnswer, OllamaError> {
        let mut route = self.route(&request.model, None)?;
        // The chat's provider only matters when there is a choice (its lookup may read the
        // database, on the way to the first token).
        if let (Some(chat_id), true) = (chat_id, route.len() > 1) {
            if let Some(sticky) = self.sticky_provider(chat_id).await {
                route = self.route(&request.model, Some(&sticky))?;
            }
        }
        let mut failures: Vec<(String, OllamaError)> = Vec::new();
        // Whether a reachable provider comes after each one: only then is a stall worth leaving.
        let mut reachable_after = vec![false; route.len()];
        for at in (1..route.len()).rev() {
            reachable_after[at - 1] = reachable_after[at] || route[at].0.is_healthy();
        }
        for ((provider, upstream_name), reachable_after) in route.into_iter().zip(reachable_after) {
            let Some(client) = provider.usable() else { continue };
            on_attempt(&provider.name);
            let running = Running::start(&provider);
            let renamed;
            let sent = if upstream_name == request.model {
                request
            } else {
                renamed = ChatRequest { model: upstream_name, ..request.clone() };
                &renamed
            };
            let stall_limit = if reachable_after { provider.stall_limit(&request.model, &self.0.config) } else { None };
            let started = async {
                let mut chunks = client.chat(sent).await?;
                match chunks.next().await {
                    Some(Ok(first)) => Ok((first, chunks)),
                    Some(Err(err)) => Err(err),
                    None => Err(OllamaError::Disconnected("the answer ended before it began".into())),
                }
            };
            let started = match stall_limit {
                None => started.await,
                Some(limit) => match tokio::time::timeout(limit, started).await {
                    Ok(started) => started,
                    Err(_) => {
                        provider.stalled(limit);
                        failures.push((provider.name.clone(), OllamaError::Timeout(limit)));
                        continue;
                    }
                },
            };
            match started {
                Ok((first, rest)) => {
                    provider.answered_with(&request.model);
                    if let Some(chat_id) = chat_id {
                        self.remember_sticky(chat_id, &provider.name);
                    }
                    let listed = request.model.clone();
                    let renamed = sent.model != listed;
                    let chunks = futures_util::stream::once(async { Ok(first) })
                        .chain(rest)
                        .map(move |chunk| {
                            chunk.map(|mut chunk| {
                                if renamed {
                                    chunk.model = listed.clone();
                                }
                                chunk
                            })
                        })
                        .boxed();
                    return Ok(OpenedAnswer { provider: provider.name.clone(), chunks, _running: running });
                }
                Err(err) => {
                    provider.failed(&err);
                    if !fails_over(&err) {
                        return Err(err);
                    }
                    tracing::info!(provider = %provider.name, cause = %err, model = %request.model, "provider failed before the first token; trying the next");
                    failures.push((provider.name.clone(), err));
                }
            }
        }
        Err(gave_up(&request.model, failures))
    }

    /// A client of a reachable Ollama provider that has `model`, and the model's name there
    /// (for `/ollama/show` and embeddings).
    pub fn ollama_for(&self, model: &str) -> Result<(OllamaClient, String), OllamaError> {
        let route = self.route(model, None)?;
        route
            .into_iter()
            .find_map(|(provider, upstream)| match provider.usable() {
                Some(UpstreamClient::Ollama(client)) => Some((client.clone(), upstream)),
                _ => None,
            })
            .ok_or_else(|| OllamaError::NoProvider(format!("No Ollama provider serves {model}")))
    }

    /// Ollama's `/api/show` for `model`, from a provider that has it (for an OpenAI-compatible
    /// one, what its listing says, in `/api/show`'s shape).
    pub async fn show(&self, model: &str) -> Result<Value, OllamaError> {
        let route = self.route(model, None)?;
        let Some((provider, upstream)) = route.into_iter().find(|(p, _)| p.usable().is_some()) else {
            return Err(OllamaError::NoProvider(format!("No model provider serves {model}")));
        };
        match provider.usable() {
            Some(UpstreamClient::Ollama(client)) => client.show(&upstream).await,
            _ => {
                let entry = provider.state().models.iter().find(|m| model_name(m) == Some(model)).cloned().unwrap_or_default();
                Ok(json!({
                    "modelfile": "", "parameters": "", "template": "",
                    "details": entry.get("details").cloned().unwrap_or_else(|| json!({})),
                    "model_info": {}, "capabilities": entry.get("capabilities").cloned().unwrap_or_else(|| json!(["completion"])),
                }))
            }
        }
    }

    /// `/ollama/version`: of the first reachable Ollama provider (by priority).
    pub async fn version(&self) -> Result<Value, OllamaError> {
        let providers = self.providers();
        let ollamas: Vec<&Arc<Provider>> =
            providers.iter().filter(|p| p.kind == ProviderKind::Ollama && p.usable().is_some()).collect();
        let first = ollamas.iter().find(|p| p.is_healthy()).or(ollamas.first());
        match first.and_then(|p| p.usable()) {
            Some(UpstreamClient::Ollama(client)) => client.version().await,
            _ => Err(self.none_reachable(&providers.iter().filter(|p| p.enabled).collect::<Vec<_>>())),
        }
    }

    /// The Ollama providers a pull or delete acts on: the one named (by name or id), or every
    /// enabled one. `Err(None)`: no provider has that name or id; `Err(Some(name))`: it is
    /// not an Ollama provider.
    pub fn pull_targets(&self, named: Option<&str>) -> Result<Vec<PullTarget>, Option<String>> {
        let providers = self.providers();
        let target = |p: &Arc<Provider>| match &p.client {
            Ok(UpstreamClient::Ollama(client)) => {
                Some(PullTarget { name: p.name.clone(), client: client.clone(), provider: p.clone() })
            }
            _ => None,
        };
        match named {
            Some(named) => {
                let provider =
                    providers.iter().find(|p| p.name == named || p.id.to_string() == named.to_ascii_lowercase()).ok_or(None)?;
                target(provider).map(|t| vec![t]).ok_or_else(|| Some(provider.name.clone()))
            }
            None => Ok(providers.iter().filter(|p| p.enabled).filter_map(target).collect()),
        }
    }

    /// Re-reads every provider's models now (`/ollama/cache/clear`), all at once.
    pub async fn refresh_all(&self) {
        let providers = self.providers();
        futures_util::future::join_all(providers.iter().filter(|p| p.enabled).map(|p| p.refresh_now())).await;
    }

    /// The state of the provider with this id, as this process knows it.
    pub fn status(&self, id: Uuid) -> ProviderStatus {
        self.providers().iter().find(|p| p.id == id).map_or_else(ProviderStatus::unknown, |p| p.status())
    }

    /// Each enabled provider's name and whether it is healthy (the metrics' gauge).
    pub fn health_by_name(&self) -> Vec<(String, bool)> {
        self.providers().iter().filter(|p| p.enabled).map(|p| (p.name.clone(), p.is_healthy())).collect()
    }
}

/// Whether a provider's row is the same but for what a reload applies in place (its priority);
/// a change of anything else starts the provider over.
fn same_settings(a: &ProviderRow, b: &ProviderRow) -> bool {
    (&a.name, &a.kind, &a.api_url, a.is_active, &a.model_prefix, &a.api_key_encrypted)
        == (&b.name, &b.kind, &b.api_url, b.is_active, &b.model_prefix, &b.api_key_encrypted)
}

/// The error after every provider failed before the first token: the only one's own error (or
/// a refusal such as "not found", which says what the client needs), else all of them named.
fn gave_up(model: &str, mut failures: Vec<(String, OllamaError)>) -> OllamaError {
    match failures.len() {
        0 => OllamaError::NoProvider(format!("No model provider is available for {model}")),
        1 => failures.remove(0).1,
        _ => {
            if let Some((_, err @ OllamaError::Upstream { status, .. })) = failures.last() {
                if status.is_client_error() {
                    return err.clone();
                }
            }
            let said: Vec<String> = failures.iter().map(|(name, err)| format!("{name}: {err}")).collect();
            OllamaError::NoProvider(format!("Every provider of {model} failed ({})", said.join("; ")))
        }
    }
}
