//! The OpenAI-compatible API's request and response shapes (`/v1`). Requests are read with
//! serde: unknown fields are ignored, as OpenAI's own clients send fields this server does
//! not use.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    /// A string or a list of strings.
    #[schema(value_type = Option<Object>)]
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": {...}}}`.
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
    /// `"none"` sends no tools; anything else lets the model choose.
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    /// `none`, `minimal`, `low`, `medium` or `high`: Ollama's `think`.
    pub reasoning_effort: Option<String>,
    /// Only 1.
    pub n: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One message of the conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system` (or `developer`), `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, or a list of parts: `{"type": "text", "text"}` and `{"type": "image_url",
    /// "image_url": {"url": "data:image/png;base64,..."}}`.
    #[schema(value_type = Option<Object>)]
    pub content: Option<Value>,
    /// An assistant's earlier calls: `[{"id", "type": "function", "function": {"name", "arguments"}}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Vec<Value>>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// A string or a list of strings.
    #[schema(value_type = Object)]
    pub input: Value,
    /// `float` (default) or `base64` (little-endian float32, what the official SDKs ask for).
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
}

/// A model as `/v1/models` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    /// The model's modification time (Unix seconds).
    pub created: i64,
    pub owned_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

/// `{"error": {...}}`, the OpenAI-compatible API's error answer.
#[derive(ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error`, `api_error`.
    #[schema(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    /// `invalid_api_key`, `model_not_found`, `rate_limit_exceeded`, or null.
    pub code: Option<String>,
}
