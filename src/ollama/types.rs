//! The parts of Ollama's `/api/chat` that rovertchat sends and reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What is sent upstream: only Ollama's own fields (never our `chatId`).
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<UpstreamMessage>,
    /// Always streamed upstream, so a stop can drop the request and partial answers exist.
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    /// Functions the model may call (OpenAI's and Ollama's shapes agree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
}

#[cfg(test)]
impl ChatRequest {
    /// A streamed request with nothing but the model and the messages.
    pub fn streamed(model: &str, messages: Vec<UpstreamMessage>) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            stream: true,
            think: None,
            options: None,
            format: None,
            keep_alive: None,
            tools: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamMessage {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

/// One NDJSON chunk of a streamed chat.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct ChatChunk {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub message: ChunkMessage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChunkMessage {
    #[serde(default = "assistant")]
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

impl Default for ChunkMessage {
    fn default() -> Self {
        ChunkMessage { role: assistant(), content: String::new(), thinking: None, tool_calls: None }
    }
}

fn assistant() -> String {
    "assistant".into()
}
