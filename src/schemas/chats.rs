//! Chats, messages and model chat requests on the wire.

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::serialize_utc;
use crate::store::chats::{Chat, DEFAULT_CHAT_TITLE};
use crate::store::messages::Message;
use crate::store::models::{ModelRecord, ProviderRecord};
use crate::validation::{
    any_json, any_string, boolean, literal, object, query_int, string, string_list, uuid_any, BodySize, Fields, FromFields,
    Patch, Problem,
};

pub const MESSAGE_ROLES: &[&str] = &["user", "assistant", "system", "tool"];

/// `POST /chats/my`: an empty or missing title gives "New Chat".
#[derive(ToSchema)]
pub struct ChatCreate {
    #[schema(max_length = 255, example = "Trip planning")]
    pub title: String,
}

impl FromFields for ChatCreate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let title = f.optional("title", string(0, 255));
        Some(ChatCreate { title: title.filter(|t| !t.is_empty()).unwrap_or_else(|| DEFAULT_CHAT_TITLE.to_owned()) })
    }
}

impl Default for ChatCreate {
    fn default() -> Self {
        ChatCreate { title: DEFAULT_CHAT_TITLE.to_owned() }
    }
}

/// `PATCH /chats/chat/{id}`.
#[derive(ToSchema)]
pub struct ChatUpdate {
    #[schema(min_length = 1, max_length = 100)]
    pub title: Option<String>,
    pub is_archived: Option<bool>,
}

impl FromFields for ChatUpdate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ChatUpdate { title: f.optional("title", string(1, 100)), is_archived: f.optional("is_archived", boolean) })
    }
}

/// `GET /chats/my?skip=&limit=&include_archived=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatListQuery {
    #[param(minimum = 0, default = 0)]
    pub skip: i64,
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: i64,
    #[param(default = false)]
    pub include_archived: bool,
}

impl FromFields for ChatListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ChatListQuery {
            skip: f.optional("skip", query_int(0, None)).unwrap_or(0),
            limit: f.optional("limit", query_int(1, Some(100))).unwrap_or(20),
            include_archived: f.optional("include_archived", boolean).unwrap_or(false),
        })
    }
}

/// `POST /chats/{id}/messages`.
#[derive(ToSchema)]
pub struct MessageCreate {
    #[schema(value_type = MessageRole)]
    pub role: String,
    pub content: String,
    /// Base64-encoded images.
    pub images: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub extended_metadata: Option<Map<String, Value>>,
}

/// Who wrote a message.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
    System,
    Tool,
}

impl FromFields for MessageCreate {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let role = f.required("role", literal(MESSAGE_ROLES));
        let content = f.required("content", any_string);
        let images = f.optional("images", string_list);
        let extended_metadata = f.optional("extended_metadata", object);
        Some(MessageCreate { role: role?, content: content?, images, extended_metadata })
    }
}

/// `PATCH /chats/{id}/messages/{message_id}`.
#[derive(ToSchema)]
pub struct MessageUpdate {
    #[schema(min_length = 1)]
    pub content: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub extended_metadata: Patch<Map<String, Value>>,
}

impl FromFields for MessageUpdate {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(MessageUpdate {
            content: f.optional("content", string(1, usize::MAX)),
            extended_metadata: f.patch("extended_metadata", object),
        })
    }
}

/// `DELETE /chats/{id}/messages/bulk`.
#[derive(ToSchema)]
pub struct BulkDelete {
    #[schema(max_items = 1000)]
    pub message_ids: Vec<Uuid>,
}

impl FromFields for BulkDelete {
    const BODY_SIZE: BodySize = BodySize::Medium;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let ids = f.required("message_ids", |v| {
            let Value::Array(items) = v else {
                return Err(Problem::new("list_type", "Input should be a valid list"));
            };
            if items.len() > 1000 {
                return Err(Problem::new("too_long", "List should have at most 1000 items after validation")
                    .with_ctx(serde_json::json!({"field_type": "List", "max_length": 1000, "actual_length": items.len()})));
            }
            items.iter().map(uuid_any).collect::<Result<Vec<_>, _>>()
        });
        Some(BulkDelete { message_ids: ids? })
    }
}

/// The options of a model request that are passed to Ollama as they are.
#[derive(Default, Clone)]
pub struct ModelOptions {
    pub think: Option<Value>,
    pub options: Option<Value>,
    pub format: Option<Value>,
    pub keep_alive: Option<Value>,
}

impl ModelOptions {
    pub fn new(think: Option<Value>, options: Option<Value>, format: Option<Value>, keep_alive: Option<Value>) -> Self {
        ModelOptions { think, options, format, keep_alive }
    }

    fn read(f: &mut Fields<'_>) -> Self {
        ModelOptions {
            think: f.optional("think", think_value),
            options: f.optional("options", |v| object(v).map(Value::Object)),
            format: f.optional("format", any_json),
            keep_alive: f.optional("keep_alive", any_json),
        }
    }
}

fn think_value(value: &Value) -> Result<Value, Problem> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        Value::String(s) if ["low", "medium", "high", "max"].contains(&s.as_str()) => Ok(value.clone()),
        _ => Err(Problem::new("bool_type", "Input should be a valid boolean or one of 'low', 'medium', 'high', 'max'")),
    }
}

/// A message of an `/ollama/chat` conversation.
#[derive(ToSchema)]
pub struct ChatTurn {
    #[schema(value_type = MessageRole)]
    pub role: String,
    pub content: String,
    pub images: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Value>,
    pub tool_name: Option<String>,
}

/// `POST /ollama/chat` as the SPA sends it.
#[derive(ToSchema)]
pub struct OllamaChatRequest {
    #[schema(min_length = 1, max_length = 200, example = "llama3.2:1b")]
    pub model: String,
    #[schema(rename = "chatId")]
    pub chat_id: Uuid,
    pub messages: Vec<ChatTurn>,
    /// `true`: NDJSON chunks in Ollama's shape; otherwise one JSON object.
    pub stream: bool,
    /// `true`, `false`, or a level: `low`, `medium`, `high`, `max`.
    #[schema(value_type = Option<bool>)]
    pub think: Option<Value>,
    /// Ollama's model options (`temperature`, `num_ctx`, ...).
    #[schema(value_type = Option<Object>)]
    pub options: Option<Value>,
    /// `"json"` or a JSON schema.
    #[schema(value_type = Option<Object>)]
    pub format: Option<Value>,
    /// A duration such as `"5m"`, or seconds.
    #[schema(value_type = Option<String>)]
    pub keep_alive: Option<Value>,
}

impl FromFields for OllamaChatRequest {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let model = f.required("model", string(1, 200));
        let messages = f.list_of("messages", true, |m| {
            let role = m.required("role", literal(MESSAGE_ROLES));
            let content = m.required("content", any_string);
            let images = m.optional("images", string_list);
            let tool_calls = m.optional("tool_calls", any_json);
            let tool_name = m.optional("tool_name", any_string);
            Some(ChatTurn { role: role?, content: content?, images, tool_calls, tool_name })
        });
        let stream = f.optional("stream", boolean).unwrap_or(false);
        let ModelOptions { think, options, format, keep_alive } = ModelOptions::read(f);
        let chat_id = f.required("chatId", uuid_any);
        Some(OllamaChatRequest {
            model: model?,
            chat_id: chat_id?,
            messages: messages?,
            stream,
            think,
            options,
            format,
            keep_alive,
        })
    }
}

/// `POST /chats/{id}/completions`: the new user message; history comes from the database.
#[derive(ToSchema)]
pub struct CompletionRequest {
    #[schema(min_length = 1, max_length = 200, example = "llama3.2:1b")]
    pub model: String,
    #[schema(min_length = 1)]
    pub content: String,
    pub images: Option<Vec<String>>,
    /// `true`, `false`, or a level: `low`, `medium`, `high`, `max`.
    #[schema(value_type = Option<bool>)]
    pub think: Option<Value>,
    /// Ollama's model options (`temperature`, `num_ctx`, ...).
    #[schema(value_type = Option<Object>)]
    pub options: Option<Value>,
    /// `"json"` or a JSON schema.
    #[schema(value_type = Option<Object>)]
    pub format: Option<Value>,
    /// A duration such as `"5m"`, or seconds.
    #[schema(value_type = Option<String>)]
    pub keep_alive: Option<Value>,
}

impl FromFields for CompletionRequest {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let model = f.required("model", string(1, 200));
        let content = f.required("content", string(1, usize::MAX));
        let images = f.optional("images", string_list);
        let ModelOptions { think, options, format, keep_alive } = ModelOptions::read(f);
        Some(CompletionRequest { model: model?, content: content?, images, think, options, format, keep_alive })
    }
}

/// `{"model": ...}` of `/ollama/show`, `/ollama/delete` and `/ollama/pull`.
#[derive(ToSchema)]
pub struct ModelName {
    #[schema(min_length = 1, max_length = 200, example = "llama3.2:1b")]
    pub model: String,
    /// `/ollama/pull` only: stream Ollama's progress as NDJSON.
    pub stream: bool,
}

impl FromFields for ModelName {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let model = f.required("model", string(1, 200));
        let stream = f.optional("stream", boolean).unwrap_or(false);
        Some(ModelName { model: model?, stream })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub title: Option<String>,
    pub is_archived: bool,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<NaiveDateTime>,
}

impl From<Chat> for ChatResponse {
    fn from(c: Chat) -> Self {
        ChatResponse {
            id: c.id,
            user_id: c.user_id,
            title: c.title,
            is_archived: c.is_archived.unwrap_or(false),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatListResponse {
    pub total: i64,
    pub chats: Vec<ChatResponse>,
    pub skip: i64,
    pub limit: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub id: Uuid,
    pub chat_id: Option<Uuid>,
    pub role: String,
    pub content: String,
    #[schema(value_type = Option<Vec<String>>)]
    pub images: Option<Value>,
    pub model_id: Option<Uuid>,
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<NaiveDateTime>,
    pub tokens_used: i32,
    #[schema(value_type = Option<Object>)]
    pub extended_metadata: Option<Value>,
    pub thinking: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Value>,
}

impl From<Message> for MessageResponse {
    fn from(m: Message) -> Self {
        MessageResponse {
            id: m.id,
            chat_id: m.chat_id,
            role: m.role,
            content: m.content,
            // The original wrote JSON `null` for "no images"; it reads the same as SQL NULL.
            images: m.images.filter(|v| !v.is_null()),
            model_id: m.model_id,
            created_at: m.created_at,
            tokens_used: m.tokens_used.unwrap_or(0),
            extended_metadata: m.extended_metadata.filter(|v| !v.is_null()),
            thinking: m.thinking,
            tool_calls: m.tool_calls.filter(|v| !v.is_null()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatWithMessages {
    pub chat: ChatResponse,
    pub messages: Vec<MessageResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessMessage {
    pub success: bool,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDeleted {
    pub success: bool,
    pub message: &'static str,
    pub deleted_message_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkDeleted {
    pub success: bool,
    pub message: String,
    pub deleted_count: usize,
    pub failed_deletions: Vec<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelSummary {
    pub id: Uuid,
    pub provider_id: Option<Uuid>,
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    pub is_active: bool,
}

impl From<ModelRecord> for ModelSummary {
    fn from(m: ModelRecord) -> Self {
        ModelSummary {
            id: m.id,
            provider_id: m.provider_id,
            name: m.name,
            display_name: m.display_name,
            description: m.description,
            config: m.config,
            is_active: m.is_active.unwrap_or(true),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderSummary {
    pub id: Uuid,
    pub name: String,
    pub api_url: String,
    pub auth_type: Option<String>,
    pub is_active: bool,
}

impl From<ProviderRecord> for ProviderSummary {
    fn from(p: ProviderRecord) -> Self {
        ProviderSummary {
            id: p.id,
            name: p.name,
            api_url: p.api_url,
            auth_type: p.auth_type,
            is_active: p.is_active.unwrap_or(true),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCatalog {
    pub models: Vec<ModelSummary>,
    pub providers: Vec<ProviderSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatRef {
    pub id: Uuid,
    pub title: Option<String>,
}
