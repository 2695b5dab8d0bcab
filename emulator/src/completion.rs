//! OpenAI's response shapes for `/v1/chat/completions`, as vLLM and llama.cpp's server write
//! them: `chat.completion.chunk` events (`data: {...}\n\n`, ending with `data: [DONE]`), or
//! one `chat.completion` object.
//!
//! A stream starts with a chunk whose delta is `{"role": "assistant", "content": ""}`.
//! Thinking comes as `delta.reasoning_content`. A tool call comes as one chunk with its
//! `index`, `id`, `type` and `function.name` (and empty `arguments`), then chunks carrying
//! pieces of `function.arguments` (a JSON text) under the same `index`. The last chunk has an
//! empty delta and `finish_reason` (`stop`, `length` or `tool_calls`); with
//! `stream_options.include_usage` every chunk has `"usage": null` and one more chunk with
//! `choices: []` carries the usage.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use crate::generation::{Piece, Text, ToolCall};
use crate::text::random_hex;

/// Pieces a tool call's arguments are split into, at most.
const ARGUMENT_PIECES: usize = 3;

/// Token counts of a completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage { prompt_tokens, completion_tokens }
    }

    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// One completion being written: what its objects share, and how far its stream got.
pub(crate) struct Completion {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    sent_role: bool,
    tool_calls: usize,
}

impl Completion {
    pub fn new(model: String, include_usage: bool) -> Self {
        Completion {
            id: format!("chatcmpl-{}", random_hex(32)),
            created: chrono::Utc::now().timestamp(),
            model,
            include_usage,
            sent_role: false,
            tool_calls: 0,
        }
    }

    /// The events of one piece (after the role chunk, when nothing was written yet).
    pub fn piece(&mut self, piece: &Piece) -> Bytes {
        let mut events = self.start();
        match piece {
            Piece::Thinking(text) => self.push_chunk(&mut events, json!({ "reasoning_content": text }), None),
            Piece::Content(text) => self.push_chunk(&mut events, json!({ "content": text }), None),
            Piece::ToolCall(call) => {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let head = json!({
                    "index": index, "id": call.id(), "type": "function",
                    "function": { "name": call.name(), "arguments": "" },
                });
                self.push_chunk(&mut events, json!({ "tool_calls": [head] }), None);
                for part in split_text(&arguments_text(call), ARGUMENT_PIECES) {
                    let tail = json!({ "index": index, "function": { "arguments": part } });
                    self.push_chunk(&mut events, json!({ "tool_calls": [tail] }), None);
                }
            }
        }
        events.freeze()
    }

    /// The end of a complete stream: the chunk with `finish_reason`, the usage chunk when
    /// asked for, and `[DONE]`.
    pub fn done(&mut self, done_reason: &str, usage: Usage) -> Bytes {
        let mut events = self.start();
        let finish_reason = finish_reason(done_reason, self.tool_calls > 0);
        self.push_chunk(&mut events, json!({}), Some(finish_reason));
        if self.include_usage {
            let chunk = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage.to_json(),
            });
            push_event(&mut events, &chunk.to_string());
        }
        push_event(&mut events, "[DONE]");
        events.freeze()
    }

    /// The end of a stream that failed after it began: an error event, then `[DONE]` (as vLLM
    /// does).
    pub fn failure(&mut self, message: &str) -> Bytes {
        let mut events = self.start();
        let error = json!({ "error": { "message": message, "type": "server_error", "param": null, "code": null } });
        push_event(&mut events, &error.to_string());
        push_event(&mut events, "[DONE]");
        events.freeze()
    }

    /// A whole answer (`stream: false`).
    pub fn whole(&self, text: Text<'_>, done_reason: &str, usage: Usage) -> Vec<u8> {
        let has_calls = !text.tool_calls.is_empty();
        let mut message = json!({
            "role": "assistant",
            "content": if text.content.is_empty() && has_calls { Value::Null } else { json!(text.content) },
        });
        if !text.thinking.is_empty() {
            message["reasoning_content"] = json!(text.thinking);
        }
        if has_calls {
            let calls: Vec<Value> = text
                .tool_calls
                .iter()
                .map(|call| {
                    json!({
                        "id": call.id(), "type": "function",
                        "function": { "name": call.name(), "arguments": arguments_text(call) },
                    })
                })
                .collect();
            message["tool_calls"] = json!(calls);
        }
        let body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(done_reason, has_calls) }],
            "usage": usage.to_json(),
        });
        body.to_string().into_bytes()
    }

    /// A buffer for the next events, opened by the role chunk if it was not sent yet.
    fn start(&mut self) -> BytesMut {
        let mut events = BytesMut::new();
        if !std::mem::replace(&mut self.sent_role, true) {
            self.push_chunk(&mut events, json!({ "role": "assistant", "content": "" }), None);
        }
        events
    }

    fn push_chunk(&self, events: &mut BytesMut, delta: Value, finish_reason: Option<&str>) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        push_event(events, &chunk.to_string());
    }
}

/// `data: <data>` and the blank line that ends an event.
fn push_event(events: &mut BytesMut, data: &str) {
    events.put_slice(b"data: ");
    events.put_slice(data.as_bytes());
    events.put_slice(b"\n\n");
}

fn finish_reason(done_reason: &str, called_tools: bool) -> &'static str {
    match done_reason {
        "length" => "length",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// A call's arguments as OpenAI sends them: a JSON text.
fn arguments_text(call: &ToolCall) -> String {
    Value::Object(call.arguments().clone()).to_string()
}

/// `text` in at most `pieces` consecutive parts of about equal length (never splitting a
/// character).
fn split_text(text: &str, pieces: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let per_piece = chars.len().div_ceil(pieces.max(1)).max(1);
    chars.chunks(per_piece).map(|part| part.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &Bytes) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\n\n"), "{text:?}");
        text.split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                let data = event.strip_prefix("data: ").unwrap();
                if data == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(data).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn splits_text_into_pieces() {
        assert_eq!(split_text("{\"city\":\"Oslo\"}", 3), ["{\"cit", "y\":\"O", "slo\"}"]);
        assert_eq!(split_text("{}", 3), ["{", "}"]);
        assert!(split_text("", 3).is_empty());
        assert_eq!(split_text("ééé", 2), ["éé", "é"]);
    }

    #[test]
    fn the_first_events_carry_the_role_then_the_piece() {
        let mut completion = Completion::new("m".into(), false);
        let first = events(&completion.piece(&Piece::Content("Hi".into())));
        assert_eq!(first.len(), 2);
        assert_eq!(first[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(first[1]["choices"][0]["delta"], json!({"content": "Hi"}));
        assert!(first[1].get("usage").is_none());
        let end = events(&completion.done("stop", Usage::new(3, 1)));
        assert_eq!(end.len(), 2);
        assert_eq!(end[0]["choices"][0]["finish_reason"], "stop");
        assert_eq!(end[1], "[DONE]");
    }

    #[test]
    fn usage_comes_in_a_chunk_of_its_own() {
        let mut completion = Completion::new("m".into(), true);
        let end = events(&completion.done("length", Usage::new(12, 2)));
        assert_eq!(end.len(), 4);
        assert_eq!(end[1]["choices"][0]["finish_reason"], "length");
        assert_eq!(end[1]["usage"], Value::Null);
        assert_eq!(end[2]["choices"], json!([]));
        assert_eq!(end[2]["usage"], json!({"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}));
        assert_eq!(end[3], "[DONE]");
    }
}
