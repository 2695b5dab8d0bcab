//! The generation engine behind `/api/chat`, `/api/generate` and `/v1/chat/completions`:
//! waits like a model would (queue, load, prompt evaluation), then answers with a stream
//! (Ollama's NDJSON, or OpenAI's server-sent events) or one JSON object, applying the
//! fault-injection knobs.
//!
//! All waiting before the first chunk happens inside the handler, so the status line and
//! headers are only written together with the first chunk, as in Ollama.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::completion::{Completion, Usage};
use crate::config::{Knobs, ModelSpec};
use crate::pace::{pause, Pacer};
use crate::params::KeepAlive;
use crate::scheduler::{self, LoadOutcome};
use crate::state::Shared;
use crate::text::{fit_tokens, group_tokens, split_tokens, tool_call_id};
use crate::tracker::Tracker;
use crate::wire::{created_at_now, error_line, to_json, with_content_type, ApiError, JSON, NDJSON};
use crate::{openai, openai::CHAT_COMPLETIONS};

/// Reported `load_duration` of a cold model at least (the value the original emulator used).
const MIN_LOAD_NS: u64 = 12_345_678;
/// Reported prompt evaluation time per prompt token at least.
const PROMPT_NS_PER_TOKEN: u64 = 1_000_000;
/// Reported generation time per output token at least.
const EVAL_NS_PER_TOKEN: u64 = 5_000_000;
/// Time outside load, prompt and eval added to `total_duration` at least.
const OVERHEAD_NS: u64 = 1_000_000;
/// Thinking text comes in at most this many chunks.
const THINKING_CHUNKS: usize = 3;

/// The deterministic "reasoning" about `message`, when the model thinks: a thinking model
/// thinks unless the request says `think: false`.
pub(crate) fn thinking_text(spec: &ModelSpec, think: Option<bool>, message: &str) -> Option<String> {
    (spec.has_capability("thinking") && think != Some(false))
        .then(|| format!("The user said {} characters.", message.chars().count()))
}

/// Which endpoint's response shape to produce.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Flavor {
    /// `/api/chat`: `message.content`, `message.thinking`, `message.tool_calls`.
    Chat,
    /// `/api/generate`: `response`, `thinking`, and a `context` array at the end unless raw.
    Generate { context: bool },
    /// `/v1/chat/completions`: `chat.completion` objects, or `chat.completion.chunk` events
    /// (with a usage chunk at the end when `include_usage`).
    OpenAi { include_usage: bool },
}

impl Flavor {
    fn path(self) -> &'static str {
        match self {
            Flavor::Chat => "/api/chat",
            Flavor::Generate { .. } => "/api/generate",
            Flavor::OpenAi { .. } => CHAT_COMPLETIONS,
        }
    }
}

/// A tool call as the native API sends it (`arguments` is an object).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ToolCall {
    id: String,
    function: ToolCallFunction,
}

#[derive(Clone, Debug, Serialize)]
struct ToolCallFunction {
    index: usize,
    name: String,
    arguments: Map<String, Value>,
}

impl ToolCall {
    /// A call of `tool` (a tool definition, `{"type": "function", "function": {"name",
    /// "parameters"}}`) as a model would make it: every required parameter gets a value of its
    /// type, a string parameter the text of the last user message.
    pub fn for_tool(tool: &Value, text: &str) -> Self {
        let function = tool.get("function").unwrap_or(&Value::Null);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("tool");
        let parameters = function.get("parameters").unwrap_or(&Value::Null);
        let required = parameters.get("required").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let arguments = required
            .iter()
            .filter_map(Value::as_str)
            .map(|parameter| {
                let kind = parameters.get("properties").and_then(|p| p.get(parameter)).and_then(|p| p.get("type"));
                let value = match kind.and_then(Value::as_str) {
                    Some("integer") => Value::from(1),
                    Some("number") => Value::from(1.5),
                    Some("boolean") => Value::Bool(true),
                    Some("array") => Value::Array(Vec::new()),
                    Some("object") => Value::Object(Map::new()),
                    _ => Value::from(text),
                };
                (parameter.to_string(), value)
            })
            .collect();
        ToolCall { id: tool_call_id(), function: ToolCallFunction { index: 0, name: name.to_string(), arguments } }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.function.name
    }

    pub fn arguments(&self) -> &Map<String, Value> {
        &self.function.arguments
    }
}

/// One chunk's worth of output.
#[derive(Clone, Debug)]
pub(crate) enum Piece {
    Thinking(String),
    ToolCall(ToolCall),
    Content(String),
}

/// What the "model" will say, before timing and faults are applied.
pub(crate) struct Answer {
    pieces: Vec<Piece>,
    done_reason: &'static str,
    prompt_eval_count: u64,
}

impl Answer {
    /// Thinking (a few chunks), then an optional tool call, then the reply word by word
    /// (repeated or cut to `knobs.tokens`, then cut to `num_predict` with `done_reason:
    /// "length"`). `prompt_eval_count` is the number of prompt words plus 10.
    pub fn compose(
        reply: &str,
        thinking: Option<&str>,
        tool_call: Option<ToolCall>,
        prompt_words: usize,
        knobs: &Knobs,
        num_predict: Option<usize>,
    ) -> Answer {
        let mut content = split_tokens(reply);
        if let Some(count) = knobs.tokens {
            content = fit_tokens(content, count);
        }
        let mut done_reason = "stop";
        let num_predict = num_predict.filter(|_| !knobs.ignore_num_predict);
        if let Some(limit) = num_predict.filter(|limit| content.len() > *limit) {
            content.truncate(limit);
            done_reason = "length";
        }
        let thinking = thinking.map(|text| group_tokens(split_tokens(text), THINKING_CHUNKS)).unwrap_or_default();
        let pieces = thinking
            .into_iter()
            .map(Piece::Thinking)
            .chain(tool_call.map(Piece::ToolCall))
            .chain(content.into_iter().map(Piece::Content))
            .collect();
        Answer { pieces, done_reason, prompt_eval_count: prompt_words as u64 + 10 }
    }
}

/// What a validated generation request asks for.
pub(crate) enum Work {
    /// Empty messages/prompt: load the model and answer `done_reason: "load"`.
    Load,
    /// Empty messages/prompt with `keep_alive: 0`: unload, `done_reason: "unload"`.
    Unload,
    /// Generate this answer.
    Answer(Answer),
}

impl Work {
    /// What a request without messages (or prompt) does.
    pub fn empty_request(keep_alive: KeepAlive) -> Work {
        if keep_alive.unloads() {
            Work::Unload
        } else {
            Work::Load
        }
    }
}

/// A validated generation request.
pub(crate) struct Job {
    pub flavor: Flavor,
    /// The model name as the client sent it (echoed in every chunk).
    pub model: String,
    pub spec: ModelSpec,
    pub stream: bool,
    pub keep_alive: KeepAlive,
    pub num_ctx: Option<u64>,
    pub work: Work,
}

/// Serves a validated job with the knobs read when the request started.
pub(crate) async fn serve(shared: Arc<Shared>, knobs: Knobs, job: Job) -> Response {
    let started = Instant::now();
    let writer = Writer::new(job.flavor, job.model.clone());
    if let Some((status, message)) = &knobs.fail_before_first_byte {
        return writer.error(ApiError::injected(*status, message.clone()));
    }
    let mut tracker = Tracker::new(&shared, job.flavor.path(), &job.model);
    if job.keep_alive.unloads() {
        tracker.unload_at_end(&job.spec.name);
    }
    if let Work::Unload = job.work {
        return load_only_response(&writer, "unload", tracker);
    }
    match scheduler::acquire_slot(&shared, &knobs).await {
        Ok(slot) => tracker.hold_slot(slot),
        Err(error) => {
            tracker.end();
            return writer.error(error);
        }
    }
    if knobs.hang {
        // Ends only when hyper drops this future because the client went away.
        std::future::pending::<()>().await;
    }
    let load = scheduler::load(&shared, &job.spec, knobs.load_delay, job.keep_alive, job.num_ctx).await;
    let Work::Answer(answer) = job.work else {
        return load_only_response(&writer, "load", tracker);
    };
    let prompt_started = Instant::now();
    pause(knobs.first_token_delay).await;
    let output = Output {
        writer,
        done_reason: answer.done_reason,
        per_token_delay: knobs.per_token_delay,
        timing: Timing {
            started,
            load,
            prompt: prompt_started.elapsed(),
            prompt_eval_count: answer.prompt_eval_count,
            eval_started: Instant::now(),
        },
    };
    let script = Script::new(answer.pieces, &knobs);
    if job.stream {
        stream_response(output, script, tracker)
    } else {
        collect_response(output, script, tracker).await
    }
}

/// The single object of a load or unload request (even when streaming was asked for).
fn load_only_response(writer: &Writer, reason: &'static str, mut tracker: Tracker) -> Response {
    let body = writer.whole(Text::default(), reason, Metrics::default());
    tracker.complete();
    with_content_type(StatusCode::OK, JSON, Body::from(body))
}

/// How a script ends.
enum Ending {
    /// The final chunk with `done: true` and the metrics.
    Done,
    /// An in-band `{"error": ...}` line (or a 500 when nothing was sent yet / not streaming).
    Fail(String),
    /// An abrupt connection drop.
    Abort,
}

/// The pieces actually sent, and how the answer ends, once faults are applied.
struct Script {
    pieces: Vec<Piece>,
    ending: Ending,
}

impl Script {
    /// Cuts the answer before the content chunk where `error_after_tokens` or
    /// `drop_after_tokens` fires (the earlier one; the error on a tie), or before the end.
    fn new(pieces: Vec<Piece>, knobs: &Knobs) -> Script {
        let error = knobs.error_after_tokens.clone().map(|(n, message)| (n, Ending::Fail(message)));
        let abort = knobs.drop_after_tokens.map(|n| (n, Ending::Abort));
        let mut fault = match (error, abort) {
            (Some(error), Some(abort)) => Some(if abort.0 < error.0 { abort } else { error }),
            (error, abort) => error.or(abort),
        };
        let mut kept = Vec::with_capacity(pieces.len());
        let mut content = 0;
        for piece in pieces {
            if let Piece::Content(_) = piece {
                if let Some((_, ending)) = fault.take_if(|(n, _)| *n == content) {
                    return Script { pieces: kept, ending };
                }
                content += 1;
            }
            kept.push(piece);
        }
        Script { pieces: kept, ending: fault.map_or(Ending::Done, |(_, ending)| ending) }
    }
}

/// Measured and reported durations of one request.
struct Timing {
    started: Instant,
    load: LoadOutcome,
    prompt: Duration,
    prompt_eval_count: u64,
    eval_started: Instant,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Timing {
    /// Real durations, each raised to a plausible minimum, so that metrics look like a real
    /// model's even with zero delays, and always `total >= load + prompt_eval + eval`.
    fn metrics(&self, eval_count: usize) -> Metrics {
        let eval_count = eval_count as u64;
        let load = if self.load.cold { nanos(self.load.waited).max(MIN_LOAD_NS) } else { 0 };
        let prompt = nanos(self.prompt).max(self.prompt_eval_count * PROMPT_NS_PER_TOKEN);
        let eval = if eval_count == 0 { 0 } else { nanos(self.eval_started.elapsed()).max(eval_count * EVAL_NS_PER_TOKEN) };
        Metrics {
            total_duration: nanos(self.started.elapsed()).max(load + prompt + eval + OVERHEAD_NS),
            load_duration: load,
            prompt_eval_count: self.prompt_eval_count,
            prompt_eval_duration: prompt,
            eval_count,
            eval_duration: eval,
        }
    }
}

/// Ollama's own response shapes.
#[derive(Clone, Copy, Debug)]
enum Native {
    Chat,
    Generate { context: bool },
}

/// Writes one response in the shape of its endpoint.
enum Writer {
    /// Ollama's NDJSON lines and objects.
    Native { flavor: Native, model: String },
    /// OpenAI's events and objects.
    OpenAi(Completion),
}

impl Writer {
    fn new(flavor: Flavor, model: String) -> Self {
        match flavor {
            Flavor::Chat => Writer::Native { flavor: Native::Chat, model },
            Flavor::Generate { context } => Writer::Native { flavor: Native::Generate { context }, model },
            Flavor::OpenAi { include_usage } => Writer::OpenAi(Completion::new(model, include_usage)),
        }
    }

    /// An error answered instead of a response.
    fn error(&self, error: ApiError) -> Response {
        match self {
            Writer::Native { .. } => error.into_response(),
            Writer::OpenAi(_) => openai::error_response(error),
        }
    }

    fn stream_content_type(&self) -> &'static str {
        match self {
            Writer::Native { .. } => NDJSON,
            Writer::OpenAi(_) => openai::EVENT_STREAM,
        }
    }

    /// What one piece of a stream is written as.
    fn piece(&mut self, piece: &Piece) -> Bytes {
        match self {
            Writer::Native { flavor, model } => {
                let text = match piece {
                    Piece::Thinking(thinking) => Text { thinking, ..Text::default() },
                    Piece::ToolCall(call) => Text { tool_calls: std::slice::from_ref(call), ..Text::default() },
                    Piece::Content(content) => Text { content, ..Text::default() },
                };
                line(render(*flavor, model, text, None))
            }
            Writer::OpenAi(completion) => completion.piece(piece),
        }
    }

    /// The end of a complete stream.
    fn done(&mut self, done_reason: &str, metrics: Metrics) -> Bytes {
        match self {
            Writer::Native { flavor, model } => line(render(*flavor, model, Text::default(), Some((done_reason, metrics)))),
            Writer::OpenAi(completion) => completion.done(done_reason, metrics.usage()),
        }
    }

    /// The in-band error that ends a failed stream.
    fn failure(&mut self, message: &str) -> Bytes {
        match self {
            Writer::Native { .. } => error_line(message),
            Writer::OpenAi(completion) => completion.failure(message),
        }
    }

    /// A whole answer as one object (`stream: false`).
    fn whole(&self, text: Text<'_>, done_reason: &str, metrics: Metrics) -> Vec<u8> {
        match self {
            Writer::Native { flavor, model } => render(*flavor, model, text, Some((done_reason, metrics))),
            Writer::OpenAi(completion) => completion.whole(text, done_reason, metrics.usage()),
        }
    }
}

/// Everything needed to write the chunks of one response.
struct Output {
    writer: Writer,
    done_reason: &'static str,
    per_token_delay: Duration,
    timing: Timing,
}

impl Output {
    fn final_chunk(&mut self, eval_count: usize) -> Bytes {
        let metrics = self.timing.metrics(eval_count);
        self.writer.done(self.done_reason, metrics)
    }

    fn final_body(&self, text: Text<'_>, eval_count: usize) -> Vec<u8> {
        self.writer.whole(text, self.done_reason, self.timing.metrics(eval_count))
    }
}

fn line(mut json: Vec<u8>) -> Bytes {
    json.push(b'\n');
    Bytes::from(json)
}

/// The error a body stream yields to make hyper abort the connection mid-body.
fn connection_drop() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "ollama-emulator: injected connection drop")
}

/// Streams the script (NDJSON or server-sent events); each chunk is produced (and flushed by
/// hyper) when it is due.
fn stream_response(output: Output, script: Script, mut tracker: Tracker) -> Response {
    if let (true, Ending::Fail(message)) = (script.pieces.is_empty(), &script.ending) {
        // Nothing was written yet, so Ollama reports the error as a plain HTTP error.
        tracker.end();
        return output.writer.error(ApiError::internal(message.clone()));
    }
    let content_type = output.writer.stream_content_type();
    let steps = script.pieces.into_iter().map(Step::Piece).chain([Step::End(script.ending)]);
    let pacer = Pacer::new(output.per_token_delay);
    let state = StreamState { steps: Box::new(steps), output, tracker, pacer };
    let body = futures_util::stream::unfold(state, |mut state| async move {
        let step = state.steps.next()?;
        state.pacer.next().await;
        let item = state.emit(step);
        Some((item, state))
    });
    with_content_type(StatusCode::OK, content_type, Body::from_stream(body))
}

enum Step {
    Piece(Piece),
    End(Ending),
}

struct StreamState {
    steps: Box<dyn Iterator<Item = Step> + Send>,
    output: Output,
    tracker: Tracker,
    pacer: Pacer,
}

impl StreamState {
    fn emit(&mut self, step: Step) -> io::Result<Bytes> {
        match step {
            Step::Piece(piece) => {
                if let Piece::Content(_) = piece {
                    self.tracker.count_sent();
                }
                Ok(self.output.writer.piece(&piece))
            }
            Step::End(Ending::Done) => {
                let chunk = self.output.final_chunk(self.tracker.sent());
                self.tracker.complete();
                Ok(chunk)
            }
            Step::End(Ending::Fail(message)) => {
                self.tracker.end();
                Ok(self.output.writer.failure(&message))
            }
            Step::End(Ending::Abort) => {
                self.tracker.end();
                Err(connection_drop())
            }
        }
    }
}

/// Runs the script to its end and answers with one JSON object (`stream: false`).
async fn collect_response(output: Output, script: Script, mut tracker: Tracker) -> Response {
    let (mut content, mut thinking, mut tool_calls) = (String::new(), String::new(), Vec::new());
    let mut pacer = Pacer::new(output.per_token_delay);
    for piece in script.pieces {
        pacer.next().await;
        match piece {
            Piece::Thinking(text) => thinking.push_str(&text),
            Piece::ToolCall(call) => tool_calls.push(call),
            Piece::Content(text) => {
                content.push_str(&text);
                tracker.count_sent();
            }
        }
    }
    pacer.next().await;
    match script.ending {
        Ending::Done => {
            let text = Text { content: &content, thinking: &thinking, tool_calls: &tool_calls };
            let body = output.final_body(text, tracker.sent());
            tracker.complete();
            with_content_type(StatusCode::OK, JSON, Body::from(body))
        }
        Ending::Fail(message) => {
            tracker.end();
            output.writer.error(ApiError::internal(message))
        }
        Ending::Abort => {
            tracker.end();
            let failing = futures_util::stream::once(async { Err::<Bytes, _>(connection_drop()) });
            with_content_type(StatusCode::OK, JSON, Body::from_stream(failing))
        }
    }
}

/// `Metrics` of the final chunk; zero values are left out, as Ollama does.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Metrics {
    #[serde(skip_serializing_if = "is_zero")]
    total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    load_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_duration: u64,
}

impl Metrics {
    /// The token counts in OpenAI's terms.
    fn usage(&self) -> Usage {
        Usage::new(self.prompt_eval_count, self.eval_count)
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Text carried by one chunk, or joined text of a whole answer.
#[derive(Default, Clone, Copy)]
pub(crate) struct Text<'a> {
    pub content: &'a str,
    pub thinking: &'a str,
    pub tool_calls: &'a [ToolCall],
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    created_at: String,
    message: ChatMessage<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    done: bool,
    #[serde(flatten)]
    metrics: Metrics,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    #[serde(skip_serializing_if = "<[ToolCall]>::is_empty")]
    tool_calls: &'a [ToolCall],
}

#[derive(Serialize)]
struct GenerateBody<'a> {
    model: &'a str,
    created_at: String,
    response: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Vec<u32>>,
    #[serde(flatten)]
    metrics: Metrics,
}

/// Renders one response object; `end` makes it the final one (`done: true`).
fn render(flavor: Native, model: &str, text: Text<'_>, end: Option<(&str, Metrics)>) -> Vec<u8> {
    let (done_reason, metrics) = match end {
        Some((reason, metrics)) => (Some(reason), metrics),
        None => (None, Metrics::default()),
    };
    let created_at = created_at_now();
    match flavor {
        Native::Chat => to_json(&ChatBody {
            model,
            created_at,
            message: ChatMessage {
                role: "assistant",
                content: text.content,
                thinking: text.thinking,
                tool_calls: text.tool_calls,
            },
            done_reason,
            done: end.is_some(),
            metrics,
        }),
        Native::Generate { context } => to_json(&GenerateBody {
            model,
            created_at,
            response: text.content,
            thinking: text.thinking,
            done: end.is_some(),
            done_reason,
            // Fake token ids of prompt and answer, only at the end of a real generation.
            context: (context && metrics.prompt_eval_count > 0).then(|| {
                (0..metrics.prompt_eval_count + metrics.eval_count).map(|i| 128_000 + (i * 7_919 % 20_000) as u32).collect()
            }),
            metrics,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(script: &Script) -> Vec<String> {
        script
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Content(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn composes_thinking_tool_and_content() {
        let knobs = Knobs::default();
        let answer = Answer::compose(
            "Echo: hi there",
            Some("The user said 8 characters."),
            Some(ToolCall::for_tool(&serde_json::json!({"function": {"name": "get_weather"}}), "hi")),
            2,
            &knobs,
            None,
        );
        assert!(matches!(answer.pieces[0], Piece::Thinking(_)));
        assert!(matches!(answer.pieces[3], Piece::ToolCall(_)));
        assert_eq!(answer.pieces.len(), 3 + 1 + 3);
        assert_eq!(answer.prompt_eval_count, 12);
        assert_eq!(answer.done_reason, "stop");
        let cut = Answer::compose("a b c d", None, None, 0, &knobs, Some(2));
        assert_eq!(cut.pieces.len(), 2);
        assert_eq!(cut.done_reason, "length");
    }

    #[test]
    fn faults_cut_the_script() {
        let pieces = || Answer::compose("a b c d", None, None, 0, &Knobs::default(), None).pieces;
        let knobs = Knobs { error_after_tokens: Some((2, "boom".into())), ..Knobs::default() };
        let script = Script::new(pieces(), &knobs);
        assert_eq!(contents(&script), ["a", " b"]);
        assert!(matches!(script.ending, Ending::Fail(ref m) if m == "boom"));
        let knobs = Knobs { drop_after_tokens: Some(9), ..Knobs::default() };
        let script = Script::new(pieces(), &knobs);
        assert_eq!(contents(&script).len(), 4);
        assert!(matches!(script.ending, Ending::Abort));
        let script = Script::new(pieces(), &Knobs::default());
        assert!(matches!(script.ending, Ending::Done));
    }

    #[test]
    fn final_chunk_omits_zero_metrics() {
        let metrics = Metrics { total_duration: 5, eval_count: 1, ..Metrics::default() };
        let body = render(Native::Chat, "m", Text::default(), Some(("stop", metrics)));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["done"], true);
        assert_eq!(value["done_reason"], "stop");
        assert_eq!(value["message"], serde_json::json!({"role": "assistant", "content": ""}));
        assert!(value.get("load_duration").is_none());
        assert_eq!(value["total_duration"], 5);
    }
}
