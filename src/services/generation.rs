//! Server-owned generations: a model's answer is produced by a task that owns it, not by the
//! HTTP request that asked for it. The answer is stored exactly once when the task ends
//! (completed, stopped, or failed with what was produced so far), whatever happens to the
//! clients watching it. Clients follow a generation from its start, or re-attach later and
//! get everything produced so far, then the rest.
//!
//! A generation keeps what it produced as joined text, not chunk by chunk: its memory is the
//! size of the answer, whatever the number of chunks or watchers, and it is freed when the
//! generation has ended and its watchers are gone. Answers are bounded too: at most
//! `max_answer_tokens` chunks, and at most the user's quota of generations running at once.
//!
//! A generation's task is supervised: should it stop without ending the generation (a panic, or
//! the task dropped while the runtime shuts down), its [`Supervisor`] still stores the partial
//! answer as failed, frees the chat for a new answer and ends every watcher's stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{ServiceError, ServiceResult};
use crate::cluster::{Bus, Notice, PieceAt};
use crate::config::GenerationLimits;
use crate::ollama::types::ChunkMessage;
use crate::ollama::{ChatChunk, ChatRequest, OllamaError};
use crate::schemas::chats::MessageRole;
use crate::store::chats::DEFAULT_CHAT_TITLE;
use crate::store::generations::{EndWritten, EndedBy, GenerationEnd, GenerationRow, NewGeneration, StartRefusal};
use crate::store::messages::{Message, NewMessage};
use crate::store::{self, Store};
use crate::upstream::Upstreams;
use chrono::NaiveDateTime;

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStatus {
    Completed,
    Stopped,
    Failed,
    /// Cut at its maximum length (`MAX_ANSWER_TOKENS`, or the request's smaller `num_predict`).
    Length,
    /// Its server died; another replica (or the same one, restarted) stored its checkpoint.
    Interrupted,
}

impl EndStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndStatus::Completed => "completed",
            EndStatus::Stopped => "stopped",
            EndStatus::Failed => "failed",
            EndStatus::Length => "length",
            EndStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the answer broke off (its stream ends with `error`).
    pub fn is_failure(self) -> bool {
        matches!(self, EndStatus::Failed | EndStatus::Interrupted)
    }

    /// The status of a `generations` row that has ended.
    pub fn from_row(status: &str) -> Option<Self> {
        [EndStatus::Completed, EndStatus::Stopped, EndStatus::Failed, EndStatus::Length, EndStatus::Interrupted]
            .into_iter()
            .find(|s| s.as_str() == status)
    }
}

/// The end of a generation, as every watcher sees it.
#[derive(Debug, Clone)]
pub struct Ending {
    pub status: EndStatus,
    /// The stored assistant message; `None` when nothing was produced (e.g. Ollama refused
    /// the request), so nothing was stored.
    pub message: Option<Message>,
    pub chat_title: Option<String>,
    /// Ollama's last chunk (`done: true`, with counters) when it completed.
    pub final_chunk: Option<ChatChunk>,
    pub error: Option<GenerationError>,
    /// Whether any chunk was produced before the end.
    pub produced_anything: bool,
}

/// Why a generation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GenerationError {
    #[error(transparent)]
    Ollama(#[from] OllamaError),
    #[error("Your message could not be stored, so no answer was kept; please send it again")]
    QuestionNotStored,
    /// The generation's task stopped without ending it (a bug: a panic).
    #[error("The answer stopped unexpectedly")]
    Interrupted,
    /// Its server died before it ended.
    #[error("The server generating this answer stopped before it ended")]
    ServerLost,
    /// Ended on another replica, with this detail.
    #[error("{0}")]
    Elsewhere(String),
}

/// What watchers receive, in order: the answer's new text, then the end.
#[derive(Debug, Clone)]
pub enum GenerationEvent {
    Delta(Delta),
    End(Arc<Ending>),
}

/// The answer's text since the watcher's previous event: one upstream chunk for a watcher that
/// keeps up, or everything since, joined, for one that attached late or fell behind.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub thinking: String,
    pub content: String,
    pub tool_calls: Vec<Value>,
}

/// How many recent chunk ends are remembered: a watcher less far behind gets chunks one by
/// one, a watcher further behind gets the rest joined.
const RECENT_PIECES: usize = 256;

/// Where the answer stood after a piece (an upstream chunk that carried something).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    piece: u64,
    content: usize,
    thinking: usize,
    tool_calls: usize,
}

/// What a generation has produced so far.
#[derive(Default)]
struct Produced {
    answer: Answer,
    pieces: u64,
    recent_ends: VecDeque<Mark>,
    end: Option<Arc<Ending>>,
    /// Set while another replica follows this generation: each piece is sent there too.
    forward: Option<Bus>,
}

impl Produced {
    fn mark(&self) -> Mark {
        Mark {
            piece: self.pieces,
            content: self.answer.content.len(),
            thinking: self.answer.thinking.len(),
            tool_calls: self.answer.tool_calls.len(),
        }
    }

    fn push(&mut self, message: ChunkMessage) {
        self.answer.content.push_str(&message.content);
        if let Some(thinking) = &message.thinking {
            self.answer.thinking.push_str(thinking);
        }
        self.answer.tool_calls.extend(message.tool_calls.into_iter().flatten());
        self.pieces += 1;
        if self.recent_ends.len() == RECENT_PIECES {
            self.recent_ends.pop_front();
        }
        let end = self.mark();
        self.recent_ends.push_back(end);
    }

    /// Where the piece after `at` ends, while it is still remembered.
    fn next_end(&self, at: Mark) -> Option<Mark> {
        let first = self.recent_ends.front()?.piece;
        let index = (at.piece + 1).checked_sub(first)?;
        self.recent_ends.get(usize::try_from(index).ok()?).copied()
    }

    fn delta(&self, from: Mark, to: Mark) -> Delta {
        Delta {
            thinking: self.answer.thinking[from.thinking..to.thinking].to_owned(),
            content: self.answer.content[from.content..to.content].to_owned(),
            tool_calls: self.answer.tool_calls[from.tool_calls..to.tool_calls].to_vec(),
        }
    }
}

/// Whether an upstream chunk carries any part of the answer.
fn carries_answer(message: &ChunkMessage) -> bool {
    !message.content.is_empty()
        || message.thinking.as_ref().is_some_and(|t| !t.is_empty())
        || message.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
}

/// One running (or just finished) generation.
pub struct Generation {
    pub id: Uuid,
    /// The chat the answer is stored in; `None` for an answer that is only streamed back (the
    /// OpenAI-compatible API), which nobody can re-attach to and which ends with its client.
    pub chat_id: Option<Uuid>,
    pub user_id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub model: String,
    /// The user message this generation answers, when the request stored one.
    pub user_message_id: Option<Uuid>,
    started: Instant,
    started_at: NaiveDateTime,
    first_token_after: OnceLock<Duration>,
    produced: Mutex<Produced>,
    published: watch::Sender<()>,
    cancel: CancellationToken,
    /// A copy of a generation another replica owns, fed by its notices.
    mirror: bool,
    /// How many pieces the checkpoint in the database holds.
    checkpointed: AtomicU64,
    /// The provider that answered (or was tried last), recorded with the usage.
    provider: Mutex<Option<String>>,
}

impl Generation {
    fn new(request: &GenerationRequest) -> Self {
        Generation {
            id: Uuid::new_v4(),
            chat_id: request.chat_id,
            user_id: request.user_id,
            api_key_id: request.api_key_id,
            model: request.upstream.model.clone(),
            user_message_id: request.question.as_ref().map(|q| q.id),
            started: Instant::now(),
            started_at: store::now(),
            first_token_after: OnceLock::new(),
            produced: Mutex::default(),
            published: watch::channel(()).0,
            cancel: CancellationToken::new(),
            mirror: false,
            checkpointed: AtomicU64::new(0),
            provider: Mutex::default(),
        }
    }

    /// Its row as it starts, owned by `instance`.
    fn started_row(&self, instance: Uuid) -> NewGeneration {
        NewGeneration {
            id: self.id,
            user_id: self.user_id,
            api_key_id: self.api_key_id,
            chat_id: self.chat_id,
            model: self.model.clone(),
            owner_instance: instance,
            user_message_id: self.user_message_id,
            started_at: self.started_at,
        }
    }

    /// A copy of another replica's generation, empty until its notices arrive.
    pub(super) fn mirror_of(row: &GenerationRow) -> Self {
        Generation {
            id: row.id,
            chat_id: row.chat_id,
            user_id: row.user_id,
            api_key_id: None,
            model: row.model.clone(),
            user_message_id: row.user_message_id,
            started: Instant::now(),
            started_at: row.started_at,
            first_token_after: OnceLock::new(),
            produced: Mutex::default(),
            published: watch::channel(()).0,
            cancel: CancellationToken::new(),
            mirror: true,
            checkpointed: AtomicU64::new(0),
            provider: Mutex::default(),
        }
    }

    /// The provider that answered, or was tried last.
    pub fn provider(&self) -> Option<String> {
        self.provider.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Its key among the running generations: its chat, or itself when it has none.
    fn slot(&self) -> Uuid {
        self.chat_id.unwrap_or(self.id)
    }

    /// How long the upstream took to send the first part of the answer.
    pub fn time_to_first_token(&self) -> Option<Duration> {
        self.first_token_after.get().copied()
    }

    /// What was produced. A panic while the lock was held cannot leave it unusable: at worst
    /// the last piece is half recorded, which is better than a generation nobody can end.
    fn produced(&self) -> MutexGuard<'_, Produced> {
        self.produced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, message: ChunkMessage) {
        self.first_token_after.get_or_init(|| self.started.elapsed());
        let mut produced = self.produced();
        let before = produced.mark();
        produced.push(message);
        if let Some(bus) = &produced.forward {
            let piece = produced.delta(before, produced.mark());
            let at = PieceAt {
                co: before.content,
                to: before.thinking,
                xo: before.tool_calls,
                c: piece.content,
                t: piece.thinking,
                x: piece.tool_calls,
            };
            for at in at.split() {
                bus.publish(Notice::Piece { g: self.id, at });
            }
        }
        drop(produced);
        self.published.send_replace(());
    }

    /// From now on, sends each piece to the other replicas too; returns what was produced
    /// before (the pieces sent start right after it) and how many pieces it holds.
    pub(super) fn forward_to(&self, bus: &Bus) -> (Answer, u64) {
        let mut produced = self.produced();
        produced.forward = Some(bus.clone());
        (produced.answer.clone(), produced.pieces)
    }

    /// The answer so far and its number of pieces, when it has grown since the last checkpoint.
    pub(super) fn checkpoint_due(&self) -> Option<(Answer, u64)> {
        let produced = self.produced();
        (produced.pieces > self.checkpointed.load(Ordering::Relaxed)).then(|| (produced.answer.clone(), produced.pieces))
    }

    pub(super) fn checkpoint_saved(&self, pieces: u64) {
        self.checkpointed.fetch_max(pieces, Ordering::Relaxed);
    }

    /// Adds what `at` brings beyond what this mirror has; false when something before `at` is
    /// missing (nothing is added then).
    pub(super) fn apply_remote(&self, at: &PieceAt) -> bool {
        let mut produced = self.produced();
        let have = produced.mark();
        let beyond = |text: &str, offset: usize, length: usize| -> Option<String> {
            length.checked_sub(offset).map(|skip| text.get(skip.min(text.len())..).unwrap_or_default().to_owned())
        };
        let (Some(content), Some(thinking)) = (beyond(&at.c, at.co, have.content), beyond(&at.t, at.to, have.thinking)) else {
            return false;
        };
        if at.xo > have.tool_calls {
            return false;
        }
        let tool_calls: Vec<Value> = at.x.iter().skip(have.tool_calls - at.xo).cloned().collect();
        if content.is_empty() && thinking.is_empty() && tool_calls.is_empty() {
            return true;
        }
        let message = ChunkMessage {
            content,
            thinking: (!thinking.is_empty()).then_some(thinking),
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            ..ChunkMessage::default()
        };
        produced.push(message);
        drop(produced);
        self.published.send_replace(());
        true
    }

    pub(super) fn is_mirror(&self) -> bool {
        self.mirror
    }

    /// Publishes the end; a generation ends once, so a later end is ignored.
    pub(super) fn publish_end(&self, ending: Ending) {
        let mut produced = self.produced();
        if produced.end.is_none() {
            if !self.mirror {
                crate::metrics::generation_ended(&self.model, &ending, produced.pieces, self.time_to_first_token());
            }
            produced.end = Some(Arc::new(ending));
            drop(produced);
            self.published.send_replace(());
        }
    }

    /// A copy of the answer so far.
    pub(super) fn answer(&self) -> Answer {
        self.produced().answer.clone()
    }

    /// A cursor over this generation: first everything produced so far (as one delta), then
    /// each new piece, then the end.
    pub fn watch(self: &Arc<Self>) -> GenerationWatcher {
        GenerationWatcher { generation: self.clone(), at: Mark::default(), ended: false, published: self.published.subscribe() }
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// A guard that stops the generation when dropped: for a client whose leaving ends it.
    pub fn stop_on_drop(self: &Arc<Self>) -> StopOnDrop {
        StopOnDrop(self.clone())
    }
}

/// Stops its generation when dropped (see [`Generation::stop_on_drop`]).
pub struct StopOnDrop(Arc<Generation>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Reads a generation in order, nothing twice and nothing left out, waiting for more.
pub struct GenerationWatcher {
    generation: Arc<Generation>,
    /// How far this watcher has read; at piece 0 it has had nothing yet, and its first delta
    /// joins everything produced before it came.
    at: Mark,
    ended: bool,
    published: watch::Receiver<()>,
}

impl GenerationWatcher {
    /// The next event; `None` after the end has been returned.
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        loop {
            {
                let produced = self.generation.produced();
                if self.at.piece < produced.pieces {
                    let following = self.at.piece > 0;
                    let next = if following { produced.next_end(self.at) } else { None };
                    let to = next.unwrap_or_else(|| produced.mark());
                    let delta = produced.delta(self.at, to);
                    self.at = to;
                    return Some(GenerationEvent::Delta(delta));
                }
                if let Some(ending) = &produced.end {
                    if self.ended {
                        return None;
                    }
                    self.ended = true;
                    return Some(GenerationEvent::End(ending.clone()));
                }
            }
            if self.published.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Waits for the end, skipping the answer's text.
    pub async fn ending(mut self) -> Arc<Ending> {
        loop {
            if let Some(ending) = &self.generation.produced().end {
                return ending.clone();
            }
            if self.published.changed().await.is_err() {
                unreachable!("the watcher holds the generation, so its sender lives");
            }
        }
    }

    pub fn generation(&self) -> &Arc<Generation> {
        &self.generation
    }
}

/// The user's message a generation answers, when the request brings one: it is written while
/// the upstream request starts, so its commit is not on the way to the first token.
pub struct Question {
    pub id: Uuid,
    pub message: NewMessage,
    pub at: NaiveDateTime,
}

/// What to generate.
pub struct GenerationRequest {
    pub user_id: Uuid,
    /// Where the answer is stored; `None`: it is only streamed back (see [`Generation::chat_id`]).
    pub chat_id: Option<Uuid>,
    /// The API key the request came with, if any (recorded with the usage).
    pub api_key_id: Option<Uuid>,
    /// How many of the user's answers may run at once, this one included (`None`: no limit).
    pub max_running: Option<usize>,
    /// Stored before the answer; already part of `upstream`'s messages.
    pub question: Option<Question>,
    pub upstream: ChatRequest,
    /// The text the chat is titled from while it is still "New Chat".
    pub title_source: Option<String>,
}

/// All generations of this process: at most one per chat, at most the request's `max_running`
/// per user. Each has a row in `generations` from its start, which is how replicas sharing the
/// database keep those limits together and find, stop and follow each other's generations
/// (see `services/replicas.rs`).
#[derive(Clone)]
pub struct Generations {
    pub(super) running: Arc<Mutex<HashMap<Uuid, Arc<Generation>>>>,
    pub(super) tasks: TaskTracker,
    pub(super) store: Store,
    upstreams: Upstreams,
    limits: GenerationLimits,
    /// This process, as `generations.owner_instance` names it.
    pub(super) instance: Uuid,
    pub(super) bus: Bus,
    /// Copies of other replicas' generations followed here, by id.
    pub(super) mirrors: Arc<Mutex<HashMap<Uuid, std::sync::Weak<Generation>>>>,
    /// Other processes' running generations: the heartbeat last seen, and since when.
    pub(super) heartbeats_seen: Arc<Mutex<HashMap<Uuid, HeartbeatSeen>>>,
}

/// A heartbeat value read from a row, and when this process first read it.
type HeartbeatSeen = (Option<NaiveDateTime>, Instant);

impl Generations {
    pub fn new(store: Store, upstreams: Upstreams, limits: GenerationLimits, instance: Uuid, bus: Bus) -> Self {
        Self {
            running: Arc::default(),
            tasks: TaskTracker::new(),
            store,
            upstreams,
            limits,
            instance,
            bus,
            mirrors: Arc::default(),
            heartbeats_seen: Arc::default(),
        }
    }

    pub fn limits(&self) -> &GenerationLimits {
        &self.limits
    }

    /// Starts a generation in its own task. Refused while the chat has one running (409), or
    /// while the user has `max_running` running (429), on any replica.
    pub async fn start(&self, mut request: GenerationRequest) -> ServiceResult<Arc<Generation>> {
        let generation = self.register(&mut request)?;
        if let Err(refused) = self.write_start(&generation, request.max_running).await {
            self.unregister(&generation);
            return Err(refused);
        }
        let supervisor = self.supervise(&generation, request.question, request.title_source);
        let this = self.clone();
        self.tasks.spawn(async move { this.run(supervisor, request.upstream).await });
        Ok(generation)
    }

    /// Makes the request the chat's running generation, within the limits.
    fn register(&self, request: &mut GenerationRequest) -> ServiceResult<Arc<Generation>> {
        if self.tasks.is_closed() {
            return Err(ServiceError::Unavailable("The server is shutting down"));
        }
        let mut running = self.running_map();
        if request.chat_id.is_some_and(|chat_id| running.contains_key(&chat_id)) {
            return Err(ServiceError::Conflict("A reply is already being generated for this chat"));
        }
        if let Some(limit) = request.max_running {
            if running.values().filter(|g| g.user_id == request.user_id).count() >= limit {
                return Err(super::quotas::too_many_at_once(limit));
            }
        }
        limit_answer_length(&mut request.upstream, self.limits.max_answer_tokens);
        let generation = Arc::new(Generation::new(request));
        running.insert(generation.slot(), generation.clone());
        Ok(generation)
    }

    /// Writes the generation's `running` row: the database keeps one per chat and the user's
    /// quota across replicas. A chat held by a dead replica's generation is recovered first.
    async fn write_start(&self, generation: &Generation, max_running: Option<usize>) -> ServiceResult<()> {
        let new = generation.started_row(self.instance);
        let mut recovered = false;
        loop {
            match self.store.start_generation(&new, max_running).await? {
                Ok(()) => return Ok(()),
                Err(StartRefusal::TooManyAtOnce(limit)) => return Err(super::quotas::too_many_at_once(limit)),
                Err(StartRefusal::ChatBusy) if !recovered => {
                    recovered = true;
                    let Some(chat_id) = generation.chat_id else { continue };
                    match self.store.running_generation(chat_id).await? {
                        Some(row) if self.is_stale(&row) => self.recover(row).await,
                        Some(_) => return Err(ServiceError::Conflict("A reply is already being generated for this chat")),
                        None => {}
                    }
                }
                Err(StartRefusal::ChatBusy) => {
                    return Err(ServiceError::Conflict("A reply is already being generated for this chat"));
                }
            }
        }
    }

    /// Whether another process's running generation is taken for dead: its heartbeat has not
    /// changed for the timeout, as this process's own clock measures it (replicas' clocks may
    /// disagree; only their heartbeats' changes are compared).
    pub(super) fn is_stale(&self, row: &GenerationRow) -> bool {
        if row.owner_instance == Some(self.instance) {
            return false;
        }
        let mut seen = self.heartbeats_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (heartbeat, since) = seen.entry(row.id).or_insert((row.heartbeat_at, Instant::now()));
        if *heartbeat != row.heartbeat_at {
            (*heartbeat, *since) = (row.heartbeat_at, Instant::now());
        }
        since.elapsed() >= self.limits.heartbeat_timeout
    }

    /// The task's guard over `generation`; from here on the generation ends whatever happens.
    fn supervise(&self, generation: &Arc<Generation>, question: Option<Question>, title_source: Option<String>) -> Supervisor {
        Supervisor {
            generations: self.clone(),
            generation: generation.clone(),
            question: question.map(|question| (question.id, self.spawn_store_question(generation, question))),
            title_source,
            may_salvage: true,
            armed: true,
        }
    }

    /// The chats' running generations. A panic while the lock was held leaves the map whole
    /// (it is only read, inserted into and removed from), so it stays usable.
    fn running_map(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Generation>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees the chat for a new generation, if `generation` is still the one registered.
    fn unregister(&self, generation: &Arc<Generation>) {
        let mut running = self.running_map();
        if running.get(&generation.slot()).is_some_and(|registered| Arc::ptr_eq(registered, generation)) {
            running.remove(&generation.slot());
        }
    }

    /// The running generation of a chat of this user.
    pub fn running(&self, user_id: Uuid, chat_id: Uuid) -> Option<Arc<Generation>> {
        self.running_map().get(&chat_id).filter(|g| g.user_id == user_id && g.chat_id == Some(chat_id)).cloned()
    }

    pub fn running_count(&self) -> usize {
        self.running_map().len()
    }

    /// Refuses new generations, lets running ones finish within `grace`, then stops the rest
    /// (their partial answers are stored) and waits for them to be stored.
    pub async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            let running: Vec<Arc<Generation>> = self.running_map().values().cloned().collect();
            tracing::warn!(count = running.len(), "stopping generations still running at shutdown");
            for generation in running {
                generation.stop();
            }
            self.tasks.wait().await;
        }
    }

    async fn run(&self, supervisor: Supervisor, upstream: ChatRequest) {
        let generation = &supervisor.generation;
        let outcome = tokio::select! {
            // Dropping `stream_answer` drops the upstream request: Ollama stops generating.
            _ = generation.cancel.cancelled() => Outcome::Stopped,
            result = stream_answer(&self.upstreams, generation, &upstream, self.limits.max_answer_tokens) => match result {
                Ok(Streamed::Done(final_chunk)) if final_chunk.done_reason.as_deref() == Some("length") => {
                    Outcome::Length(Some(final_chunk))
                }
                Ok(Streamed::Done(final_chunk)) => Outcome::Completed(final_chunk),
                Ok(Streamed::CutAtLimit) => Outcome::Length(None),
                Err(err) => Outcome::Failed(err.into()),
            },
        };
        self.settle(&supervisor, outcome).await;
        supervisor.disarm();
    }

    /// Keeps the answer once its question's fate is known, then ends the generation.
    async fn settle(&self, supervisor: &Supervisor, mut outcome: Outcome) {
        let generation = &supervisor.generation;
        let mut answer = generation.answer();
        // An answer is only kept after its question.
        if let Some((question_id, question)) = supervisor.question.clone() {
            match question.await {
                // Refused before its first token: the question goes too, or sending it again
                // would leave it in the chat (and in later turns' history) twice.
                QuestionFate::Stored if matches!(outcome, Outcome::Failed(_)) && !answer.produced_anything() => {
                    self.remove_question(generation, question_id).await;
                }
                QuestionFate::Stored => {}
                QuestionFate::ChatDeleted => (outcome, answer) = (Outcome::Stopped, Answer::default()),
                QuestionFate::NotStored => {
                    (outcome, answer) = (Outcome::Failed(GenerationError::QuestionNotStored), Answer::default());
                }
            }
        }
        let ending = self.finish(generation, supervisor.title_source.as_deref(), answer, outcome).await;
        // Unregister before publishing the end, so a client that saw the end can start anew.
        self.unregister(generation);
        generation.publish_end(ending);
    }

    async fn remove_question(&self, generation: &Generation, question_id: Uuid) {
        let Some(chat_id) = generation.chat_id else { return };
        let removed = self.store.delete_messages(generation.user_id, chat_id, &[question_id], store::now()).await;
        if let Err(err) = removed {
            tracing::warn!(error = %err, generation_id = %generation.id, "removing the question of a refused request failed");
        }
    }

    /// Stores the answer (once) and works out what the watchers are told.
    async fn finish(&self, generation: &Generation, title_source: Option<&str>, answer: Answer, outcome: Outcome) -> Ending {
        let (status, final_chunk, error) = match outcome {
            Outcome::Completed(chunk) => (EndStatus::Completed, Some(*chunk), None),
            Outcome::Length(chunk) => (EndStatus::Length, chunk.map(|c| *c), None),
            Outcome::Stopped => (EndStatus::Stopped, None, None),
            Outcome::Failed(err) => (EndStatus::Failed, None, Some(err)),
        };
        let produced_anything = answer.produced_anything();
        let mut ending = Ending { status, message: None, chat_title: None, final_chunk, error, produced_anything };
        let counters = ending.final_chunk.as_ref();
        let pieces = generation.produced().pieces;
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let end = GenerationEnd {
            id: generation.id,
            status: status.as_str().into(),
            provider: generation.provider(),
            ended_at: store::now(),
            first_token_ms: generation.time_to_first_token().map(millis),
            duration_ms: Some(millis(generation.started.elapsed())),
            prompt_tokens: counters.and_then(|c| c.prompt_eval_count).map_or(0, count),
            completion_tokens: count(counters.and_then(|c| c.eval_count).unwrap_or(pieces)),
            detail: ending.error.as_ref().map(ToString::to_string),
            by: EndedBy::Owner(generation.started_row(self.instance)),
        };
        // Nothing produced and cut short, there is no answer to keep.
        let nothing_to_keep = !produced_anything && matches!(status, EndStatus::Stopped | EndStatus::Failed);
        let new = match (generation.chat_id, nothing_to_keep) {
            (Some(chat_id), false) => Some((chat_id, self.answer_message(&generation.model, answer, &ending).await)),
            _ => None,
        };
        let written = self.write_end(&end, new.as_ref().map(|(chat_id, new)| (generation.user_id, *chat_id, new))).await;
        self.bus.publish(Notice::End { g: generation.id });
        let Some(chat_id) = generation.chat_id else {
            tracing::info!(generation_id = %generation.id, status = status.as_str(), "generation ended");
            return ending;
        };
        ending.message = match written {
            Some(EndWritten::Ended(message)) => message.map(|m| *m),
            Some(EndWritten::NotRunning) => {
                tracing::warn!(generation_id = %generation.id, "the generation was ended elsewhere (taken for dead?); its answer is not stored again");
                None
            }
            None => None,
        };
        ending.chat_title = self.chat_title(generation, title_source, ending.message.is_some()).await;
        tracing::info!(
            generation_id = %generation.id, %chat_id, status = status.as_str(),
            stored = ending.message.is_some(), "generation ended"
        );
        ending
    }

    /// The assistant message that keeps `answer`, with the counters and how it ended.
    pub(super) async fn answer_message(&self, model: &str, answer: Answer, ending: &Ending) -> NewMessage {
        let counters = ending.final_chunk.as_ref();
        let mut metadata = json!({
            "prompt_eval_count": counters.and_then(|c| c.prompt_eval_count),
            "eval_count": counters.and_then(|c| c.eval_count),
            "eval_duration": counters.and_then(|c| c.eval_duration),
        });
        if ending.status != EndStatus::Completed {
            metadata["status"] = json!(ending.status.as_str());
        }
        if let Some(err) = &ending.error {
            metadata["error"] = json!(err.to_string());
        }
        let model_id = match self.store.model_id_by_name(model).await {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(error = %err, "model lookup failed; storing the answer without model_id");
                None
            }
        };
        NewMessage {
            role: MessageRole::Assistant.as_str().into(),
            content: answer.content,
            thinking: (!answer.thinking.is_empty()).then_some(answer.thinking),
            tool_calls: (!answer.tool_calls.is_empty()).then(|| Value::Array(answer.tool_calls)),
            images: None,
            model_id,
            tokens_used: counters.and_then(|c| c.eval_count).map_or(0, |n| n.min(i32::MAX as u64) as i32),
            extended_metadata: Some(metadata),
        }
    }

    /// Ends the generation's row and stores its answer in one transaction; tries a few times
    /// so that a database hiccup does not lose the answer. `None`: nothing could be written.
    pub(super) async fn write_end(&self, end: &GenerationEnd, answer: Option<(Uuid, Uuid, &NewMessage)>) -> Option<EndWritten> {
        for attempt in 1..=5u32 {
            match self.store.end_generation(end, answer).await {
                Ok(written) => return Some(written),
                Err(err) => {
                    tracing::error!(error = %err, attempt, generation_id = %end.id, "storing the end of the generation failed");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        None
    }

    /// Writes the user's message in its own task; when it cannot be written, the generation
    /// is stopped.
    fn spawn_store_question(&self, generation: &Arc<Generation>, question: Question) -> QuestionWritten {
        let store = self.store.clone();
        let generation = generation.clone();
        let written = self.tasks.spawn(async move {
            let Some(chat_id) = generation.chat_id else { return QuestionFate::NotStored };
            let mut attempt = 1u32;
            let failure = loop {
                match store
                    .add_message_with_id(question.id, generation.user_id, chat_id, &question.message, question.at)
                    .await
                {
                    Ok(Some(_)) => return QuestionFate::Stored,
                    Ok(None) => {
                        generation.stop();
                        return QuestionFate::ChatDeleted;
                    }
                    // Only a connection problem may go away by trying again.
                    Err(err) if store::is_connection_error(&err) && attempt < 3 => {
                        tracing::warn!(error = %err, attempt, generation_id = %generation.id, "storing the question failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                        attempt += 1;
                    }
                    Err(err) => break err.to_string(),
                }
            };
            tracing::error!(error = %failure, generation_id = %generation.id, "the user's message was not stored; stopping its answer");
            generation.stop();
            QuestionFate::NotStored
        });
        written.map(|fate| fate.unwrap_or(QuestionFate::NotStored)).boxed().shared()
    }

    async fn chat_title(&self, generation: &Generation, title_source: Option<&str>, may_retitle: bool) -> Option<String> {
        let chat_id = generation.chat_id?;
        let result = match (title_source, may_retitle) {
            (Some(source), true) => self.store.title_untitled_chat(chat_id, &title_from(source)).await,
            _ => self.store.user_chat(generation.user_id, chat_id).await.map(|c| c.and_then(|c| c.title)),
        };
        result.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "reading the chat title failed");
            None
        })
    }
}

/// Ends a generation whose task stopped without ending it: a panic (its unwinding drops the
/// supervisor), or the task dropped while the runtime shuts down. The task disarms it once the
/// generation has ended.
struct Supervisor {
    generations: Generations,
    generation: Arc<Generation>,
    /// The user's message being written, and its id.
    question: Option<(Uuid, QuestionWritten)>,
    title_source: Option<String>,
    /// Whether the partial answer may still be stored by a task of its own. That task is
    /// supervised too, without this: if it stops as well, the generation ends at once.
    may_salvage: bool,
    armed: bool,
}

impl Supervisor {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let generation = &self.generation;
        let runtime = tokio::runtime::Handle::try_current();
        if let (true, Ok(runtime)) = (self.may_salvage, runtime) {
            tracing::error!(generation_id = %generation.id, chat_id = ?generation.chat_id, "a generation stopped unexpectedly; storing what it produced");
            let salvage = Supervisor {
                generations: self.generations.clone(),
                generation: generation.clone(),
                question: self.question.take(),
                title_source: self.title_source.take(),
                may_salvage: false,
                armed: true,
            };
            // On the tracker, so that shutdown waits for the answer to be stored.
            self.generations.tasks.spawn_on(
                async move {
                    salvage.generations.settle(&salvage, Outcome::Failed(GenerationError::Interrupted)).await;
                    salvage.disarm();
                },
                &runtime,
            );
            return;
        }
        // Nothing can be stored any more: free the chat and end the streams.
        tracing::error!(generation_id = %generation.id, chat_id = ?generation.chat_id, "a generation stopped unexpectedly; its answer is not stored");
        self.generations.unregister(generation);
        let produced_anything = generation.answer().produced_anything();
        generation.publish_end(Ending {
            status: EndStatus::Failed,
            message: None,
            chat_title: None,
            final_chunk: None,
            error: Some(GenerationError::Interrupted),
            produced_anything,
        });
    }
}

/// The writing of the user's message, awaited by the generation (or its supervisor).
type QuestionWritten = Shared<BoxFuture<'static, QuestionFate>>;

#[derive(Clone, Copy)]
enum QuestionFate {
    Stored,
    /// The chat was deleted before the question could be written.
    ChatDeleted,
    NotStored,
}

enum Outcome {
    Completed(Box<ChatChunk>),
    /// Ollama's last chunk when it ended the answer itself (`done_reason: "length"`).
    Length(Option<Box<ChatChunk>>),
    Stopped,
    Failed(GenerationError),
}

/// What has been produced so far.
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Answer {
    pub(super) content: String,
    pub(super) thinking: String,
    pub(super) tool_calls: Vec<Value>,
}

impl Answer {
    pub(super) fn produced_anything(&self) -> bool {
        !self.content.is_empty() || !self.thinking.is_empty() || !self.tool_calls.is_empty()
    }
}

/// How an upstream answer ended, when it did not fail.
enum Streamed {
    /// Ollama's last chunk (`done: true`, counters; its text is already published).
    Done(Box<ChatChunk>),
    /// The upstream went on past `max_tokens` (an upstream may ignore `num_predict`).
    CutAtLimit,
}

/// Asks the upstream for at most `max_tokens` tokens, or fewer when the request asks for fewer.
fn limit_answer_length(request: &mut ChatRequest, max_tokens: u32) {
    let options = request.options.get_or_insert_with(|| json!({}));
    if let Value::Object(options) = options {
        let asked = options.get("num_predict").and_then(Value::as_u64).filter(|n| *n > 0);
        let limit = asked.map_or(u64::from(max_tokens), |n| n.min(u64::from(max_tokens)));
        options.insert("num_predict".into(), json!(limit));
    }
}

/// Publishes the chunks of the provider that answers (see [`Upstreams::open`]) as they come,
/// at most `max_tokens` of them.
async fn stream_answer(
    upstreams: &Upstreams,
    generation: &Generation,
    request: &ChatRequest,
    max_tokens: u32,
) -> Result<Streamed, OllamaError> {
    let record_provider =
        |name: &str| *generation.provider.lock().unwrap_or_else(PoisonError::into_inner) = Some(name.to_owned());
    let mut answer = upstreams.open(generation.chat_id, request, record_provider).await?;
    let stream = &mut answer.chunks;
    let mut tokens = 0u32;
    while let Some(item) = stream.next().await {
        let mut chunk = item?;
        let message = std::mem::take(&mut chunk.message);
        if carries_answer(&message) {
            if tokens == max_tokens {
                return Ok(Streamed::CutAtLimit);
            }
            tokens += 1;
            generation.publish(message);
        }
        if chunk.done {
            return Ok(Streamed::Done(Box::new(chunk)));
        }
    }
    Err(OllamaError::Disconnected("the answer ended before it was complete".into()))
}

/// The original's automatic title: the first 30 characters (trimmed), "..." when longer.
pub fn title_from(text: &str) -> String {
    let text = text.trim();
    let mut title: String = text.chars().take(30).collect();
    if text.chars().count() > 30 {
        title.push_str("...");
    }
    if title.is_empty() {
        DEFAULT_CHAT_TITLE.to_owned()
    } else {
        title
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_request(model: &str) -> ChatRequest {
        ChatRequest::streamed(model, Vec::new())
    }

    fn generation() -> Arc<Generation> {
        Arc::new(Generation::new(&request(Uuid::new_v4(), Uuid::new_v4(), None)))
    }

    fn request(user_id: Uuid, chat_id: Uuid, question: Option<Question>) -> GenerationRequest {
        GenerationRequest {
            user_id,
            chat_id: Some(chat_id),
            api_key_id: None,
            max_running: Some(4),
            question,
            upstream: empty_request("llama3.2:1b"),
            title_source: Some("What is a lighthouse for?".into()),
        }
    }

    fn piece(content: &str) -> ChunkMessage {
        ChunkMessage { content: content.into(), ..ChunkMessage::default() }
    }

    fn end(generation: &Generation) {
        generation.publish_end(Ending {
            status: EndStatus::Completed,
            message: None,
            chat_title: None,
            final_chunk: None,
            error: None,
            produced_anything: true,
        });
    }

    async fn next_content(watcher: &mut GenerationWatcher) -> String {
        match watcher.next().await {
            Some(GenerationEvent::Delta(delta)) => delta.content,
            other => panic!("expected a delta, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_watcher_that_keeps_up_gets_each_piece_in_order_then_the_end() {
        let generation = generation();
        let mut watcher = generation.watch();
        generation.publish(piece("Echo:"));
        assert_eq!(next_content(&mut watcher).await, "Echo:");
        generation.publish(piece(" one"));
        generation.publish(ChunkMessage { thinking: Some("hm".into()), tool_calls: Some(vec![json!({"f": 1})]), ..piece("") });
        generation.publish(piece(" two"));
        assert_eq!(next_content(&mut watcher).await, " one");
        let Some(GenerationEvent::Delta(delta)) = watcher.next().await else { panic!() };
        assert_eq!((delta.content.as_str(), delta.thinking.as_str(), delta.tool_calls), ("", "hm", vec![json!({"f": 1})]));
        assert_eq!(next_content(&mut watcher).await, " two");
        end(&generation);
        assert!(matches!(watcher.next().await, Some(GenerationEvent::End(_))));
        assert!(watcher.next().await.is_none());
    }

    #[tokio::test]
    async fn a_late_watcher_gets_what_was_produced_as_one_delta_then_follows() {
        let generation = generation();
        for word in ["Echo:", " a", " b"] {
            generation.publish(piece(word));
        }
        let mut late = generation.watch();
        assert_eq!(next_content(&mut late).await, "Echo: a b");
        generation.publish(piece(" c"));
        assert_eq!(next_content(&mut late).await, " c");
    }

    #[tokio::test]
    async fn a_watcher_far_behind_gets_the_rest_joined_with_nothing_lost() {
        let generation = generation();
        let mut slow = generation.watch();
        generation.publish(piece("0"));
        assert_eq!(next_content(&mut slow).await, "0");
        let words: Vec<String> = (1..=RECENT_PIECES + 10).map(|i| format!(" {i}")).collect();
        for word in &words {
            generation.publish(piece(word));
        }
        assert_eq!(next_content(&mut slow).await, words.concat());
        generation.publish(piece(" last"));
        assert_eq!(next_content(&mut slow).await, " last");
        // Only the last pieces' ends are remembered, never the pieces themselves.
        let produced = generation.produced.lock().unwrap();
        assert_eq!(produced.recent_ends.len(), RECENT_PIECES);
        assert_eq!(produced.answer.content, format!("0{} last", words.concat()));
    }

    #[test]
    fn the_answer_length_is_capped_but_a_smaller_request_is_kept() {
        let mut request = empty_request("m");
        limit_answer_length(&mut request, 100);
        assert_eq!(request.options, Some(json!({"num_predict": 100})));
        request.options = Some(json!({"temperature": 0.5, "num_predict": 7}));
        limit_answer_length(&mut request, 100);
        assert_eq!(request.options, Some(json!({"temperature": 0.5, "num_predict": 7})));
        request.options = Some(json!({"num_predict": 700}));
        limit_answer_length(&mut request, 100);
        assert_eq!(request.options, Some(json!({"num_predict": 100})));
    }

    #[test]
    fn titles_are_cut_like_the_original() {
        assert_eq!(title_from("What is the capital of Portugal and why is it famous?"), "What is the capital of Portuga...");
        assert_eq!(title_from("  Short one  "), "Short one");
        assert_eq!(title_from("Zürich weekend 🚆"), "Zürich weekend 🚆");
    }
    /// Generations over a real SQLite database, with one user and one chat; no upstream (its
    /// address refuses connections): these tests drive the generation's task by hand.
    async fn generations_with_a_chat(dir: &tempfile::TempDir) -> (Generations, Uuid, Uuid) {
        let database = crate::config::DatabaseConfig::Sqlite { path: dir.path().join("test.db") };
        let store = Store::connect(&database, 2).await.unwrap();
        store.migrate().await.unwrap();
        let user = store
            .create_user(
                crate::store::users::NewUser {
                    username: "bob_user".into(),
                    email: "bob@example.com".into(),
                    password_hash: "not a hash".into(),
                    role: None,
                    default_role: crate::store::users::Role::User,
                    is_active: true,
                    created_at: store::now(),
                },
                |user| {
                    crate::services::audit::ActionContext::cli().event(
                        crate::store::audit::AuditAction::Register,
                        Some(crate::store::audit::AuditTarget::user(user.id)),
                        serde_json::json!({}),
                    )
                },
            )
            .await
            .unwrap();
        let chat = store.create_chat(user.id, DEFAULT_CHAT_TITLE, store::now()).await.unwrap();
        let config = crate::config::OllamaConfig {
            base_urls: vec!["http://127.0.0.1:9".into()],
            connect_timeout: Duration::from_secs(1),
            first_byte_timeout: Duration::from_secs(1),
            stall_timeout: None,
            idle_timeout: Duration::from_secs(1),
            tags_cache_ttl: Duration::from_secs(1),
        };
        let cipher = crate::upstream::keys::KeyCipher::new("test");
        let spawner = crate::background::BackgroundTasks::default().spawner();
        let upstreams = Upstreams::new(store.clone(), config, cipher, spawner);
        (Generations::new(store, upstreams, GenerationLimits::default(), Uuid::new_v4(), Bus::single()), user.id, chat.id)
    }

    fn question(content: &str) -> Question {
        let message = NewMessage { role: "user".into(), content: content.into(), ..NewMessage::default() };
        Question { id: Uuid::new_v4(), message, at: store::now() }
    }

    async fn next_event(watcher: &mut GenerationWatcher) -> GenerationEvent {
        let next = tokio::time::timeout(Duration::from_secs(10), watcher.next()).await;
        next.expect("the generation ends").expect("an event")
    }

    #[tokio::test]
    async fn a_generation_whose_task_panics_keeps_its_partial_answer_ends_its_streams_and_frees_its_chat() {
        let dir = tempfile::tempdir().unwrap();
        let (generations, user_id, chat_id) = generations_with_a_chat(&dir).await;
        let mut request = request(user_id, chat_id, Some(question("What is a lighthouse for?")));
        let generation = generations.register(&mut request).unwrap();
        generations.write_start(&generation, None).await.unwrap();
        let supervisor = generations.supervise(&generation, request.question.take(), request.title_source.take());
        let mut watcher = generation.watch();
        generation.publish(piece("A lighthouse"));
        let task = tokio::spawn(async move {
            let _supervisor = supervisor;
            panic!("a fault inside the generation");
        });
        assert!(task.await.unwrap_err().is_panic());

        let GenerationEvent::Delta(delta) = next_event(&mut watcher).await else { panic!("expected the answer so far") };
        assert_eq!(delta.content, "A lighthouse");
        let GenerationEvent::End(ending) = next_event(&mut watcher).await else { panic!("expected the end") };
        assert_eq!(ending.status, EndStatus::Failed);
        assert!(matches!(ending.error, Some(GenerationError::Interrupted)));
        assert_eq!(ending.chat_title.as_deref(), Some("What is a lighthouse for?"));
        let stored = ending.message.as_ref().expect("the partial answer is stored");
        assert_eq!(stored.content, "A lighthouse");

        let messages = generations.store.chat_messages(chat_id).await.unwrap();
        let kept: Vec<(&str, &str)> = messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
        assert_eq!(kept, [("user", "What is a lighthouse for?"), ("assistant", "A lighthouse")]);
        let metadata = messages[1].extended_metadata.as_ref().unwrap();
        assert_eq!(metadata["status"], "failed");
        assert_eq!(metadata["error"], "The answer stopped unexpectedly");

        assert_eq!(generations.running_count(), 0);
        assert!(generations.register(&mut self::request(user_id, chat_id, None)).is_ok(), "the chat takes a new answer");
    }

    #[tokio::test]
    async fn a_generation_dropped_where_nothing_can_be_stored_still_ends_its_streams_and_frees_its_chat() {
        let dir = tempfile::tempdir().unwrap();
        let (generations, user_id, chat_id) = generations_with_a_chat(&dir).await;
        let mut request = request(user_id, chat_id, None);
        let generation = generations.register(&mut request).unwrap();
        generations.write_start(&generation, None).await.unwrap();
        let supervisor = generations.supervise(&generation, None, request.title_source.take());
        let mut watcher = generation.watch();
        generation.publish(piece("A light"));
        // As when a runtime shutting down drops the task: no task can be started any more.
        std::thread::spawn(move || drop(supervisor)).join().unwrap();

        assert!(matches!(next_event(&mut watcher).await, GenerationEvent::Delta(_)));
        let GenerationEvent::End(ending) = next_event(&mut watcher).await else { panic!("expected the end") };
        assert_eq!(ending.status, EndStatus::Failed);
        assert!(matches!(ending.error, Some(GenerationError::Interrupted)));
        assert!(ending.message.is_none() && ending.produced_anything);
        assert_eq!(generations.running_count(), 0);
        assert!(generations.store.chat_messages(chat_id).await.unwrap().is_empty());
    }
}
