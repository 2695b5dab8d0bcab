//! Server-owned generations: a model's answer is produced by a task that owns it, not by the
//! HTTP request that asked for it. The answer is stored exactly once when the task ends
//! (completed, stopped, or failed with what was produced so far), whatever happens to the
//! clients watching it. Clients follow a generation from its start, or re-attach later and
//! get everything produced so far, then the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::ollama::{ChatChunk, ChatRequest, OllamaClient, OllamaError};
use crate::store::chats::DEFAULT_CHAT_TITLE;
use crate::store::messages::{Message, NewMessage};
use crate::store::{self, Store};
use chrono::NaiveDateTime;

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStatus {
    Completed,
    Stopped,
    Failed,
}

impl EndStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndStatus::Completed => "completed",
            EndStatus::Stopped => "stopped",
            EndStatus::Failed => "failed",
        }
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
}

impl From<GenerationError> for ApiError {
    fn from(err: GenerationError) -> Self {
        match err {
            GenerationError::Ollama(err) => err.into(),
            GenerationError::QuestionNotStored => ApiError::Unavailable("Your message could not be stored"),
        }
    }
}

/// What watchers receive, in order: every chunk, then the end.
#[derive(Debug, Clone)]
pub enum GenerationEvent {
    Chunk(Box<ChatChunk>),
    End(Arc<Ending>),
}

/// One running (or just finished) generation.
pub struct Generation {
    pub id: Uuid,
    pub chat_id: Uuid,
    pub user_id: Uuid,
    pub model: String,
    /// The user message this generation answers, when the request stored one.
    pub user_message_id: Option<Uuid>,
    log: Mutex<Vec<GenerationEvent>>,
    published: watch::Sender<usize>,
    cancel: CancellationToken,
}

impl Generation {
    fn publish(&self, event: GenerationEvent) {
        let mut log = self.log.lock().expect("generation log lock");
        log.push(event);
        let len = log.len();
        drop(log);
        self.published.send_replace(len);
    }

    /// A cursor over this generation's events from the very first one.
    pub fn watch(self: &Arc<Self>) -> GenerationWatcher {
        GenerationWatcher { generation: self.clone(), next: 0, published: self.published.subscribe() }
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

/// Reads a generation's events in order, none twice, waiting for new ones.
pub struct GenerationWatcher {
    generation: Arc<Generation>,
    next: usize,
    published: watch::Receiver<usize>,
}

impl GenerationWatcher {
    /// The next event; `None` after the end has been returned.
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        loop {
            {
                let log = self.generation.log.lock().expect("generation log lock");
                if let Some(event) = log.get(self.next) {
                    self.next += 1;
                    return Some(event.clone());
                }
                if matches!(log.last(), Some(GenerationEvent::End(_))) {
                    return None;
                }
            }
            if self.published.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Skips to the end and returns it.
    pub async fn ending(mut self) -> Arc<Ending> {
        loop {
            match self.next().await {
                Some(GenerationEvent::End(ending)) => return ending,
                Some(_) => continue,
                None => unreachable!("a generation always publishes its end before closing"),
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
    pub chat_id: Uuid,
    /// Stored before the answer; already part of `upstream`'s messages.
    pub question: Option<Question>,
    pub upstream: ChatRequest,
    /// The text the chat is titled from while it is still "New Chat".
    pub title_source: Option<String>,
}

/// All generations of this process, at most one per chat.
#[derive(Clone)]
pub struct Generations {
    running: Arc<Mutex<HashMap<Uuid, Arc<Generation>>>>,
    tasks: TaskTracker,
    store: Store,
    ollama: OllamaClient,
}

impl Generations {
    pub fn new(store: Store, ollama: OllamaClient) -> Self {
        Self { running: Arc::default(), tasks: TaskTracker::new(), store, ollama }
    }

    /// Starts a generation in its own task. Refused while the chat has one running.
    pub fn start(&self, request: GenerationRequest) -> ApiResult<Arc<Generation>> {
        if self.tasks.is_closed() {
            return Err(ApiError::Unavailable("The server is shutting down"));
        }
        let mut running = self.running.lock().expect("generations lock");
        if running.contains_key(&request.chat_id) {
            return Err(ApiError::Conflict("A reply is already being generated for this chat"));
        }
        let generation = Arc::new(Generation {
            id: Uuid::new_v4(),
            chat_id: request.chat_id,
            user_id: request.user_id,
            model: request.upstream.model.clone(),
            user_message_id: request.question.as_ref().map(|q| q.id),
            log: Mutex::new(Vec::new()),
            published: watch::channel(0).0,
            cancel: CancellationToken::new(),
        });
        running.insert(request.chat_id, generation.clone());
        drop(running);
        let this = self.clone();
        let task_generation = generation.clone();
        self.tasks.spawn(async move { this.run(task_generation, request).await });
        Ok(generation)
    }

    /// The running generation of a chat of this user.
    pub fn running(&self, user_id: Uuid, chat_id: Uuid) -> Option<Arc<Generation>> {
        let running = self.running.lock().expect("generations lock");
        running.get(&chat_id).filter(|g| g.user_id == user_id).cloned()
    }

    /// Stops the chat's generation, if any; returns it so the caller can wait for its end.
    pub fn stop(&self, user_id: Uuid, chat_id: Uuid) -> Option<Arc<Generation>> {
        let generation = self.running(user_id, chat_id)?;
        generation.stop();
        Some(generation)
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().expect("generations lock").len()
    }

    /// Refuses new generations, lets running ones finish within `grace`, then stops the rest
    /// (their partial answers are stored) and waits for them to be stored.
    pub async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            let running: Vec<Arc<Generation>> = self.running.lock().expect("generations lock").values().cloned().collect();
            tracing::warn!(count = running.len(), "stopping generations still running at shutdown");
            for generation in running {
                generation.stop();
            }
            self.tasks.wait().await;
        }
    }

    async fn run(&self, generation: Arc<Generation>, mut request: GenerationRequest) {
        let question = request.question.take().map(|question| self.spawn_store_question(&generation, question));
        let mut answer = Answer::default();
        let mut outcome = tokio::select! {
            // Dropping `stream_answer` drops the upstream request: Ollama stops generating.
            _ = generation.cancel.cancelled() => Outcome::Stopped,
            result = stream_answer(&self.ollama, &generation, &request.upstream, &mut answer) => match result {
                Ok(final_chunk) => Outcome::Completed(Box::new(final_chunk)),
                Err(err) => Outcome::Failed(err.into()),
            },
        };
        // An answer is only kept after its question.
        if let Some(question) = question {
            match question.await {
                Ok(QuestionFate::Stored) => {}
                Ok(QuestionFate::ChatDeleted) => (outcome, answer) = (Outcome::Stopped, Answer::default()),
                Ok(QuestionFate::NotStored) | Err(_) => {
                    (outcome, answer) = (Outcome::Failed(GenerationError::QuestionNotStored), Answer::default());
                }
            }
        }
        let ending = self.finish(&generation, &request, answer, outcome).await;
        // Unregister before publishing the end, so a client that saw the end can start anew.
        self.running.lock().expect("generations lock").remove(&generation.chat_id);
        generation.publish(GenerationEvent::End(Arc::new(ending)));
    }

    /// Stores the answer (once) and works out what the watchers are told.
    async fn finish(&self, generation: &Generation, request: &GenerationRequest, answer: Answer, outcome: Outcome) -> Ending {
        let (status, final_chunk, error) = match outcome {
            Outcome::Completed(chunk) => (EndStatus::Completed, Some(*chunk), None),
            Outcome::Stopped => (EndStatus::Stopped, None, None),
            Outcome::Failed(err) => (EndStatus::Failed, None, Some(err)),
        };
        let produced_anything = answer.produced_anything();
        let mut ending = Ending { status, message: None, chat_title: None, final_chunk, error, produced_anything };
        // Nothing produced and not completed: there is no answer to keep.
        if !produced_anything && status != EndStatus::Completed {
            ending.chat_title = self.chat_title(request, false).await;
            return ending;
        }
        let counters = ending.final_chunk.as_ref();
        let mut metadata = json!({
            "prompt_eval_count": counters.and_then(|c| c.prompt_eval_count),
            "eval_count": counters.and_then(|c| c.eval_count),
            "eval_duration": counters.and_then(|c| c.eval_duration),
        });
        if status != EndStatus::Completed {
            metadata["status"] = json!(status.as_str());
        }
        if let Some(err) = &ending.error {
            metadata["error"] = json!(err.to_string());
        }
        let model_id = match self.store.model_id_by_name(&generation.model).await {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(error = %err, "model lookup failed; storing the answer without model_id");
                None
            }
        };
        let new = NewMessage {
            role: "assistant".into(),
            content: answer.content,
            thinking: (!answer.thinking.is_empty()).then_some(answer.thinking),
            tool_calls: (!answer.tool_calls.is_empty()).then(|| Value::Array(answer.tool_calls)),
            images: None,
            model_id,
            tokens_used: counters.and_then(|c| c.eval_count).map_or(0, |n| n.min(i32::MAX as u64) as i32),
            extended_metadata: Some(metadata),
        };
        ending.message = self.store_answer(generation, &new).await;
        ending.chat_title = self.chat_title(request, ending.message.is_some()).await;
        tracing::info!(
            generation_id = %generation.id, chat_id = %generation.chat_id, status = status.as_str(),
            stored = ending.message.is_some(), "generation ended"
        );
        ending
    }

    /// Writes the user's message in its own task; when it cannot be written, the generation
    /// is stopped.
    fn spawn_store_question(&self, generation: &Arc<Generation>, question: Question) -> tokio::task::JoinHandle<QuestionFate> {
        let store = self.store.clone();
        let generation = generation.clone();
        tokio::spawn(async move {
            let mut attempt = 1u32;
            let failure = loop {
                match store
                    .add_message_with_id(question.id, generation.user_id, generation.chat_id, &question.message, question.at)
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
        })
    }

    /// Writes the answer; retries a few times so a database hiccup does not lose it.
    async fn store_answer(&self, generation: &Generation, new: &NewMessage) -> Option<Message> {
        for attempt in 1..=5u32 {
            match self.store.add_message(generation.user_id, generation.chat_id, new, store::now()).await {
                Ok(stored) => return stored, // `None`: the chat was deleted meanwhile.
                Err(err) => {
                    tracing::error!(error = %err, attempt, generation_id = %generation.id, "storing the answer failed");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        None
    }

    async fn chat_title(&self, request: &GenerationRequest, may_retitle: bool) -> Option<String> {
        let result = match (&request.title_source, may_retitle) {
            (Some(source), true) => self.store.title_untitled_chat(request.chat_id, &title_from(source)).await,
            _ => self.store.user_chat(request.user_id, request.chat_id).await.map(|c| c.and_then(|c| c.title)),
        };
        result.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "reading the chat title failed");
            None
        })
    }
}

enum QuestionFate {
    Stored,
    /// The chat was deleted before the question could be written.
    ChatDeleted,
    NotStored,
}

enum Outcome {
    Completed(Box<ChatChunk>),
    Stopped,
    Failed(GenerationError),
}

/// What has been produced so far.
#[derive(Default)]
struct Answer {
    content: String,
    thinking: String,
    tool_calls: Vec<Value>,
}

impl Answer {
    fn produced_anything(&self) -> bool {
        !self.content.is_empty() || !self.thinking.is_empty() || !self.tool_calls.is_empty()
    }
}

async fn stream_answer(
    ollama: &OllamaClient,
    generation: &Generation,
    request: &ChatRequest,
    answer: &mut Answer,
) -> Result<ChatChunk, OllamaError> {
    let stream = ollama.chat(request).await?;
    futures_util::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let chunk = item?;
        answer.content.push_str(&chunk.message.content);
        if let Some(thinking) = &chunk.message.thinking {
            answer.thinking.push_str(thinking);
        }
        if let Some(calls) = &chunk.message.tool_calls {
            answer.tool_calls.extend(calls.iter().cloned());
        }
        let done = chunk.done;
        generation.publish(GenerationEvent::Chunk(Box::new(chunk.clone())));
        if done {
            return Ok(chunk);
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
    use super::title_from;

    #[test]
    fn titles_are_cut_like_the_original() {
        assert_eq!(title_from("What is the capital of Portugal and why is it famous?"), "What is the capital of Portuga...");
        assert_eq!(title_from("  Short one  "), "Short one");
        assert_eq!(title_from("Zürich weekend 🚆"), "Zürich weekend 🚆");
    }
}
