//! Chats, messages and model chat requests on the wire.

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::serialize_utc;
use crate::config::GenerationLimits;
use crate::store::chats::{Chat, DEFAULT_CHAT_TITLE};
use crate::store::messages::Message;
use crate::store::models::{ModelRecord, ProviderRecord};
use crate::validation::{
    any_json, any_string, boolean, greater_than_equal, integer, less_than_equal, number, object, string, string_list,
    too_long_list, uuid_any, BodySize, Fields, FromFields, Patch, Problem, QueryInt, Skip, Text, ValidationIssue,
};

/// The longest chat title, on create and on rename (the column is `VARCHAR(255)`).
pub const CHAT_TITLE_MAX_CHARS: usize = 255;

/// A chat's title as sent; on create it may be empty (then "New Chat").
pub type TitleSent = Text<0, CHAT_TITLE_MAX_CHARS>;
/// A new title on rename.
pub type Title = Text<1, CHAT_TITLE_MAX_CHARS>;

/// The longest model name a request may name.
pub const MODEL_NAME_MAX_CHARS: usize = 200;
pub type ModelNameText = Text<1, MODEL_NAME_MAX_CHARS>;
/// A message the user writes: not empty, as long as the body allows.
pub type MessageText = Text<1, { usize::MAX }>;

/// `POST /chats/my`: an empty or missing title gives "New Chat".
#[derive(ToSchema)]
pub struct ChatCreate {
    #[schema(inline, value_type = TitleSent, example = "Trip planning")]
    pub title: String,
}

impl FromFields for ChatCreate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let title = f.optional("title", TitleSent::parse).map(Text::into_string);
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
    #[schema(inline)]
    pub title: Option<Title>,
    pub is_archived: Option<bool>,
}

impl FromFields for ChatUpdate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ChatUpdate { title: f.optional("title", Title::parse), is_archived: f.optional("is_archived", boolean) })
    }
}

/// `?limit=` of the chat list.
pub type ChatPageLimit = QueryInt<1, 100, 20>;

/// `GET /chats/my?skip=&limit=&include_archived=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatListQuery {
    #[param(inline, value_type = Skip)]
    pub skip: i64,
    #[param(inline, value_type = ChatPageLimit)]
    pub limit: i64,
    #[param(default = false)]
    pub include_archived: bool,
}

impl FromFields for ChatListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ChatListQuery {
            skip: Skip::read(f, "skip"),
            limit: ChatPageLimit::read(f, "limit"),
            include_archived: f.optional("include_archived", boolean).unwrap_or(false),
        })
    }
}

/// `POST /chats/{id}/messages`.
#[derive(ToSchema)]
pub struct MessageCreate {
    pub role: MessageRole,
    pub content: String,
    /// Base64-encoded images.
    pub images: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub extended_metadata: Option<Map<String, Value>>,
}

crate::text_enum! {
    /// Who wrote a message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum MessageRole {
        User = "user",
        Assistant = "assistant",
        System = "system",
        Tool = "tool",
    }
}

impl FromFields for MessageCreate {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let role = f.required("role", MessageRole::from_value);
        let content = f.required("content", any_string);
        let images = f.optional("images", string_list);
        let extended_metadata = f.optional("extended_metadata", object);
        Some(MessageCreate { role: role?, content: content?, images, extended_metadata })
    }
}

/// `PATCH /chats/{id}/messages/{message_id}`.
#[derive(ToSchema)]
pub struct MessageUpdate {
    #[schema(inline, value_type = Option<MessageText>)]
    pub content: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub extended_metadata: Patch<Map<String, Value>>,
}

impl FromFields for MessageUpdate {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(MessageUpdate {
            content: f.optional("content", MessageText::parse).map(Text::into_string),
            extended_metadata: f.patch("extended_metadata", object),
        })
    }
}

/// `DELETE /chats/{id}/messages/bulk`.
#[derive(ToSchema)]
pub struct BulkDelete {
    #[schema(schema_with = message_ids_schema)]
    pub message_ids: Vec<Uuid>,
}

/// Ids one bulk deletion may name.
pub const BULK_DELETE_MAX_IDS: usize = 1000;

fn message_ids_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid))),
        )
        .max_items(Some(BULK_DELETE_MAX_IDS))
        .build()
}

impl FromFields for BulkDelete {
    const BODY_SIZE: BodySize = BodySize::Medium;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let ids = f.required("message_ids", |v| {
            let Value::Array(items) = v else {
                return Err(Problem::new("list_type", "Input should be a valid list"));
            };
            if items.len() > BULK_DELETE_MAX_IDS {
                return Err(too_long_list(BULK_DELETE_MAX_IDS, items.len()));
            }
            items.iter().map(uuid_any).collect::<Result<Vec<_>, _>>()
        });
        Some(BulkDelete { message_ids: ids? })
    }
}

/// What an allowed model option holds, with its bounds that do not depend on the configuration.
#[derive(Clone, Copy, Debug)]
pub enum OptionValue {
    Number { min: f64, max: f64 },
    Integer { min: Option<i64> },
    Strings { max_items: usize, max_chars: usize },
}

/// The model options (Ollama's `options`) a request may set: sampling and length. Any other key
/// is refused with 422, so that nobody picks the GPU layers, threads, batch or memory mapping of
/// a model that everyone shares. `num_ctx` is also bounded by `MAX_NUM_CTX` and `num_predict`
/// by `MAX_ANSWER_TOKENS` (see [`ModelOptions::check_limits`]).
pub const MODEL_OPTIONS: &[(&str, OptionValue)] = &[
    ("temperature", OptionValue::Number { min: 0.0, max: 2.0 }),
    ("top_k", OptionValue::Integer { min: Some(0) }),
    ("top_p", OptionValue::Number { min: 0.0, max: 1.0 }),
    ("min_p", OptionValue::Number { min: 0.0, max: 1.0 }),
    ("typical_p", OptionValue::Number { min: 0.0, max: 1.0 }),
    ("repeat_last_n", OptionValue::Integer { min: Some(-1) }),
    ("repeat_penalty", OptionValue::Number { min: 0.0, max: 2.0 }),
    ("presence_penalty", OptionValue::Number { min: -2.0, max: 2.0 }),
    ("frequency_penalty", OptionValue::Number { min: -2.0, max: 2.0 }),
    ("seed", OptionValue::Integer { min: None }),
    ("stop", OptionValue::Strings { max_items: 16, max_chars: 256 }),
    ("num_ctx", OptionValue::Integer { min: Some(1) }),
    ("num_predict", OptionValue::Integer { min: Some(1) }),
];

impl OptionValue {
    /// Checks a value and gives it back as Ollama expects it (numbers as JSON numbers).
    fn parse(self, value: &Value) -> Result<Value, Problem> {
        match self {
            OptionValue::Number { min, max } => {
                let n = number(value)?;
                if n < min {
                    return Err(greater_than_equal(min));
                }
                if n > max {
                    return Err(less_than_equal(max));
                }
                Ok(json!(n))
            }
            OptionValue::Integer { min } => {
                let n = integer(value)?;
                if let Some(min) = min.filter(|min| n < *min) {
                    return Err(greater_than_equal(min));
                }
                Ok(json!(n))
            }
            OptionValue::Strings { max_items, max_chars } => {
                let items = string_list(value)?;
                if items.len() > max_items {
                    return Err(too_long_list(max_items, items.len()));
                }
                for item in &items {
                    string(0, max_chars)(&json!(item))?;
                }
                Ok(json!(items))
            }
        }
    }

    fn schema(self) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        match self {
            OptionValue::Number { min, max } => {
                ObjectBuilder::new().schema_type(Type::Number).minimum(Some(min)).maximum(Some(max)).into()
            }
            OptionValue::Integer { min } => ObjectBuilder::new().schema_type(Type::Integer).minimum(min.map(|m| m as f64)).into(),
            OptionValue::Strings { max_items, max_chars } => ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String).max_length(Some(max_chars)))
                .max_items(Some(max_items))
                .into(),
        }
    }
}

/// `options` of a chat request: the allow-list [`MODEL_OPTIONS`] in the OpenAPI document.
pub struct ModelOptionsSchema;

impl utoipa::PartialSchema for ModelOptionsSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        let defaults = GenerationLimits::default();
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(format!(
                "Ollama's model options, limited to these keys (any other key is refused with 422). \
                 `num_ctx` is at most `MAX_NUM_CTX` (default {}) and `num_predict` at most \
                 `MAX_ANSWER_TOKENS` (default {}), which is also the length limit when none is given.",
                defaults.max_num_ctx, defaults.max_answer_tokens
            )))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for (name, value) in MODEL_OPTIONS {
            object = object.property(*name, value.schema());
        }
        object.into()
    }
}

impl ToSchema for ModelOptionsSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "ModelOptions".into()
    }
}

/// Reads `options`: only the keys of [`MODEL_OPTIONS`], each checked.
pub(crate) fn model_options(f: &mut Fields<'_>) -> Option<Map<String, Value>> {
    let mut options = Map::new();
    for (name, input) in f.entries() {
        match MODEL_OPTIONS.iter().find(|(allowed, _)| *allowed == name) {
            Some((_, kind)) => {
                if let Some(value) = f.optional(name, |v| kind.parse(v)) {
                    options.insert(name.to_owned(), value);
                }
            }
            None => {
                let allowed: Vec<&str> = MODEL_OPTIONS.iter().map(|(name, _)| *name).collect();
                f.fail(
                    name,
                    input,
                    Problem::new("extra_forbidden", "Extra inputs are not permitted").with_ctx(json!({ "allowed": allowed })),
                );
            }
        }
    }
    Some(options)
}

/// The model settings of a chat request, checked at the edge.
#[derive(Default, Clone)]
pub struct ModelOptions {
    pub think: Option<Value>,
    /// Only keys of [`MODEL_OPTIONS`].
    pub options: Option<Map<String, Value>>,
    pub format: Option<Value>,
    /// Admins only: it unloads or pins a model for everyone.
    pub keep_alive: Option<Value>,
}

impl ModelOptions {
    fn read(f: &mut Fields<'_>) -> Self {
        ModelOptions {
            think: f.optional("think", think_value),
            options: f.optional_object("options", model_options),
            format: f.optional("format", any_json),
            keep_alive: f.optional("keep_alive", keep_alive_value),
        }
    }

    /// The bounds that come from the configuration: `num_ctx` at most `MAX_NUM_CTX`,
    /// `num_predict` at most `MAX_ANSWER_TOKENS`; 422 in the parser's shape otherwise.
    pub fn check_limits(&self, limits: &GenerationLimits) -> Result<(), Vec<ValidationIssue>> {
        let bounds = [("num_ctx", limits.max_num_ctx), ("num_predict", limits.max_answer_tokens)];
        let issues: Vec<ValidationIssue> = bounds
            .into_iter()
            .filter_map(|(name, max)| {
                let input = self.options.as_ref()?.get(name)?;
                (input.as_i64()? > i64::from(max)).then(|| {
                    let problem = less_than_equal(max);
                    problem.at(vec![json!("body"), json!("options"), json!(name)], input)
                })
            })
            .collect();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }
}

/// A Go duration (`"5m"`, `"0"`) or a number of seconds, as Ollama takes it.
fn keep_alive_value(value: &Value) -> Result<Value, Problem> {
    match value {
        Value::String(_) | Value::Number(_) => Ok(value.clone()),
        _ => Err(Problem::new("string_type", "Input should be a duration such as \"5m\" or a number of seconds")),
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
    pub role: MessageRole,
    pub content: String,
    pub images: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Value>,
    pub tool_name: Option<String>,
}

/// `POST /ollama/chat` as the SPA sends it.
#[derive(ToSchema)]
pub struct OllamaChatRequest {
    #[schema(inline, value_type = ModelNameText, example = "llama3.2:1b")]
    pub model: String,
    #[schema(rename = "chatId")]
    pub chat_id: Uuid,
    pub messages: Vec<ChatTurn>,
    /// `true`: NDJSON chunks in Ollama's shape; otherwise one JSON object.
    pub stream: bool,
    /// `true`, `false`, or a level: `low`, `medium`, `high`, `max`.
    #[schema(value_type = Option<bool>)]
    pub think: Option<Value>,
    /// Ollama's model options, limited to an allow-list (see `ModelOptions`).
    #[schema(value_type = Option<ModelOptionsSchema>)]
    pub options: Option<Map<String, Value>>,
    /// `"json"` or a JSON schema.
    #[schema(value_type = Option<Object>)]
    pub format: Option<Value>,
    /// A duration such as `"5m"`, or seconds. Admins only (403 otherwise): it keeps or unloads
    /// the model for everyone.
    #[schema(value_type = Option<String>)]
    pub keep_alive: Option<Value>,
}

impl FromFields for OllamaChatRequest {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let model = f.required("model", ModelNameText::parse).map(Text::into_string);
        let messages = f.list_of("messages", true, |m| {
            let role = m.required("role", MessageRole::from_value);
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
    #[schema(inline, value_type = ModelNameText, example = "llama3.2:1b")]
    pub model: String,
    #[schema(inline, value_type = MessageText)]
    pub content: String,
    pub images: Option<Vec<String>>,
    /// `true`, `false`, or a level: `low`, `medium`, `high`, `max`.
    #[schema(value_type = Option<bool>)]
    pub think: Option<Value>,
    /// Ollama's model options, limited to an allow-list (see `ModelOptions`).
    #[schema(value_type = Option<ModelOptionsSchema>)]
    pub options: Option<Map<String, Value>>,
    /// `"json"` or a JSON schema.
    #[schema(value_type = Option<Object>)]
    pub format: Option<Value>,
    /// A duration such as `"5m"`, or seconds. Admins only (403 otherwise): it keeps or unloads
    /// the model for everyone.
    #[schema(value_type = Option<String>)]
    pub keep_alive: Option<Value>,
}

impl FromFields for CompletionRequest {
    const BODY_SIZE: BodySize = BodySize::Message;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let model = f.required("model", ModelNameText::parse).map(Text::into_string);
        let content = f.required("content", MessageText::parse).map(Text::into_string);
        let images = f.optional("images", string_list);
        let ModelOptions { think, options, format, keep_alive } = ModelOptions::read(f);
        Some(CompletionRequest { model: model?, content: content?, images, think, options, format, keep_alive })
    }
}

/// `{"model": ...}` of `/ollama/show`, `/ollama/delete` and `/ollama/pull`.
#[derive(ToSchema)]
pub struct ModelName {
    #[schema(inline, value_type = ModelNameText, example = "llama3.2:1b")]
    pub model: String,
    /// `/ollama/pull` only: stream Ollama's progress as NDJSON.
    pub stream: bool,
    /// `/ollama/pull` and `/ollama/delete`: the provider (name or id) to act on; absent: every
    /// enabled Ollama provider.
    #[schema(value_type = Option<String>, max_length = 100)]
    pub provider: Option<String>,
}

impl FromFields for ModelName {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let model = f.required("model", ModelNameText::parse).map(Text::into_string);
        let stream = f.optional("stream", boolean).unwrap_or(false);
        let provider = f.optional("provider", crate::validation::string(1, 100));
        Some(ModelName { model: model?, stream, provider })
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
    /// The provider's address; empty for anyone but an admin.
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
