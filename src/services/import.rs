//! Importing chats from export files: ours (NDJSON, a JSON list, or one chat), ChatGPT's
//! `conversations.json` and Open WebUI's chat export, told apart by their content. Each chat is
//! stored in its own transaction; one that cannot be read or stored is reported and the others
//! go on. A chat's source is remembered, so importing a file again imports nothing new.

use super::audit::ActionContext;
use crate::store::audit::{AuditAction, AuditTarget};
use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeDelta};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ServiceError, ServiceResult};
use crate::schemas::chats::{MessageRole, CHAT_TITLE_MAX_CHARS};
use crate::schemas::search::{ImportFailure, ImportReport, CHAT_EXPORT_FORMAT};
use crate::store::chat_imports::ImportedChat;
use crate::store::messages::NewMessage;
use crate::store::users::User;
use crate::store::{self, Store};
use crate::validation::{too_long_list, Problem};

/// Chats one file may hold.
pub const MAX_IMPORT_CHATS: usize = 10_000;

/// The title of an imported chat that has none.
const UNTITLED: &str = "Imported chat";

/// Longest source id kept as it is; longer ones are replaced by their fingerprint.
const SOURCE_ID_MAX_CHARS: usize = 200;

fn invalid_file(kind: &'static str, msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(vec![Problem::new(kind, msg).at(vec![json!("body")], &Value::Null)])
}

fn unknown_format() -> ServiceError {
    invalid_file(
        "import_format",
        "The file is not a chat export of rovertchat, ChatGPT (conversations.json) or Open WebUI (a JSON list, or NDJSON)",
    )
}

/// Imports every chat of `file` for `user`; an import that stored chats is recorded in the audit
/// log afterwards (each chat has its own transaction, the event sums them up).
pub async fn import(store: &Store, context: &ActionContext, user: &User, file: &[u8]) -> ServiceResult<ImportReport> {
    let report = import_chats(store, user, file).await?;
    if report.imported > 0 {
        let details =
            serde_json::json!({ "imported": report.imported, "skipped": report.skipped, "failed": report.failed.len() });
        let event = context.event(AuditAction::ChatsImported, Some(AuditTarget::user(user.id)), details);
        if let Err(err) = store.record_audit(&event).await {
            tracing::error!(error = %err, "recording an import in the audit log failed");
        }
    }
    Ok(report)
}

async fn import_chats(store: &Store, user: &User, file: &[u8]) -> ServiceResult<ImportReport> {
    let file = file.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(file);
    let text = std::str::from_utf8(file).map_err(|_| invalid_file("import_format", "The file is not UTF-8 text"))?;
    let items = split_items(text)?;
    // Refuse a file of which nothing is a chat before storing any; then read and store one chat
    // at a time, so memory holds the file and one chat.
    if !items.is_empty() && !items.iter().any(|item| item.as_ref().is_ok_and(|item| format_of(item).is_some())) {
        return Err(unknown_format());
    }
    let mut report = ImportReport { imported: 0, skipped: 0, failed: Vec::new(), chat_ids: Vec::new() };
    for (index, item) in items.into_iter().enumerate() {
        let chat = match item.and_then(read_chat) {
            Ok(chat) => chat,
            Err(err) => {
                report.failed.push(ImportFailure { index, title: err.title, detail: err.detail });
                continue;
            }
        };
        if already_ours(store, user, &chat).await? {
            report.skipped += 1;
            continue;
        }
        match store.import_chat(user.id, &chat).await {
            Ok(Some(chat_id)) => {
                report.imported += 1;
                report.chat_ids.push(chat_id);
            }
            Ok(None) => report.skipped += 1,
            Err(err) if store::is_connection_error(&err) => return Err(err.into()),
            Err(err) => {
                tracing::warn!(error = %err, index, "an imported chat could not be stored");
                report.failed.push(ImportFailure {
                    index,
                    title: Some(chat.title),
                    detail: "The chat could not be stored".into(),
                });
            }
        }
    }
    Ok(report)
}

/// A chat of our own export whose id is one of the user's chats: it is already here.
async fn already_ours(store: &Store, user: &User, chat: &ImportedChat) -> ServiceResult<bool> {
    let Some(id) = chat.source.strip_prefix(OURS).and_then(|id| Uuid::parse_str(id).ok()) else {
        return Ok(false);
    };
    Ok(store.user_chat(user.id, id).await?.is_some())
}

/// The chats of a file, each still as JSON text: a JSON list, one JSON object, or NDJSON. A
/// line of NDJSON that is not JSON is that chat's failure.
fn split_items(text: &str) -> ServiceResult<Vec<Result<&RawValue, ItemError>>> {
    let start = text.trim_start();
    if start.starts_with('[') {
        let mut reader = serde_json::Deserializer::from_str(text);
        let (items, total) = serde::Deserializer::deserialize_seq(&mut reader, LimitedList)
            .and_then(|list| reader.end().map(|()| list))
            .map_err(|err| invalid_file("json_invalid", format!("The file is not valid JSON: {err}")))?;
        if total > MAX_IMPORT_CHATS {
            return Err(too_many_chats(total));
        }
        return Ok(items.into_iter().map(Ok).collect());
    }
    if !start.starts_with('{') {
        return Err(unknown_format());
    }
    if let Ok(one) = serde_json::from_str::<&RawValue>(text) {
        return Ok(vec![Ok(one)]);
    }
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    if lines.len() > MAX_IMPORT_CHATS {
        return Err(too_many_chats(lines.len()));
    }
    if let Err(err) = serde_json::from_str::<&RawValue>(lines[0]) {
        return Err(invalid_file("json_invalid", format!("The file is neither JSON nor NDJSON: {err}")));
    }
    Ok(lines
        .into_iter()
        .map(|line| {
            serde_json::from_str::<&RawValue>(line).map_err(|err| ItemError::new(format!("This line is not valid JSON: {err}")))
        })
        .collect())
}

fn too_many_chats(total: usize) -> ServiceError {
    let problem = too_long_list(MAX_IMPORT_CHATS, total);
    ServiceError::Invalid(vec![Problem::new(
        problem.kind,
        format!("The file holds {total} chats; at most {MAX_IMPORT_CHATS} can be imported at once"),
    )
    .with_ctx(problem.ctx.unwrap_or_default())
    .at(vec![json!("body")], &Value::Null)])
}

/// The elements of a JSON list, borrowed from the text; past [`MAX_IMPORT_CHATS`] they are only
/// counted, so a list of a million tiny values costs no memory.
struct LimitedList;

impl<'de> Visitor<'de> for LimitedList {
    type Value = (Vec<&'de RawValue>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of chats")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while items.len() < MAX_IMPORT_CHATS {
            match seq.next_element::<&'de RawValue>()? {
                Some(item) => items.push(item),
                None => {
                    let total = items.len();
                    return Ok((items, total));
                }
            }
        }
        let mut total = items.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok((items, total))
    }
}

/// Why one chat of a file was not imported.
#[derive(Debug)]
struct ItemError {
    title: Option<String>,
    detail: String,
}

impl ItemError {
    fn new(detail: impl Into<String>) -> Self {
        ItemError { title: None, detail: detail.into() }
    }
}

const OURS: &str = "rovertchat:";
const CHATGPT: &str = "chatgpt:";
const OPEN_WEBUI: &str = "open-webui:";

/// The fields that tell the formats apart.
#[derive(Deserialize)]
struct Probe {
    format: Option<String>,
    mapping: Option<IgnoredAny>,
    chat: Option<IgnoredAny>,
    history: Option<IgnoredAny>,
    title: Option<IgnoredAny>,
}

/// What a failed item was called, when that can be read.
#[derive(Deserialize)]
struct Titled {
    title: Option<String>,
    chat: Option<Box<Titled>>,
}

/// The export formats a chat can be in.
#[derive(Clone, Copy)]
enum Format {
    Ours,
    ChatGpt,
    OpenWebui,
    /// An older Open WebUI export: the chat itself, without its record.
    OpenWebuiChat,
}

/// Which format an item is in, from the fields it has.
fn format_of(item: &RawValue) -> Option<Format> {
    let probe: Probe = serde_json::from_str(item.get()).ok()?;
    if probe.format.as_deref() == Some(CHAT_EXPORT_FORMAT) {
        Some(Format::Ours)
    } else if probe.mapping.is_some() {
        Some(Format::ChatGpt)
    } else if probe.chat.is_some() {
        Some(Format::OpenWebui)
    } else if probe.history.is_some() && probe.title.is_some() {
        Some(Format::OpenWebuiChat)
    } else {
        None
    }
}

fn read_chat(item: &RawValue) -> Result<ImportedChat, ItemError> {
    let format =
        format_of(item).ok_or_else(|| ItemError::new("Not a chat of a known export format (rovertchat, ChatGPT, Open WebUI)"))?;
    let text = item.get();
    let read = match format {
        Format::Ours => serde_json::from_str::<OurChat>(text)
            .map_err(|e| format!("Not a valid rovertchat export: {e}"))
            .and_then(OurChat::draft),
        Format::ChatGpt => serde_json::from_str::<GptConversation>(text)
            .map_err(|e| format!("Not a valid ChatGPT conversation: {e}"))
            .and_then(GptConversation::draft),
        Format::OpenWebui => serde_json::from_str::<WebuiRecord>(text)
            .map_err(|e| format!("Not a valid Open WebUI chat: {e}"))
            .and_then(WebuiRecord::draft),
        Format::OpenWebuiChat => {
            serde_json::from_str::<WebuiChat>(text).map_err(|e| format!("Not a valid Open WebUI chat: {e}")).and_then(|chat| {
                WebuiRecord { id: None, title: None, created_at: None, updated_at: None, archived: None, chat }.draft()
            })
        }
    };
    let mut draft = read.map_err(|detail| {
        let titled: Option<Titled> = serde_json::from_str(item.get()).ok();
        let title = titled.and_then(|t| t.title.or_else(|| t.chat.and_then(|c| c.title)));
        ItemError { title, detail }
    })?;
    if draft.source_id.as_ref().is_none_or(|id| id.is_empty() || id.chars().count() > SOURCE_ID_MAX_CHARS) {
        draft.source_id = Some(format!("fnv:{:016x}", fingerprint(item.get())));
    }
    Ok(draft.finish())
}

/// FNV-1a: a stable fingerprint of an item that carries no usable id.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A chat as read from any format, before its times are put in order.
struct Draft {
    prefix: &'static str,
    source_id: Option<String>,
    title: Option<String>,
    created_at: Option<NaiveDateTime>,
    updated_at: Option<NaiveDateTime>,
    is_archived: bool,
    messages: Vec<(NewMessage, Option<NaiveDateTime>)>,
}

fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}

impl Draft {
    /// Gives every message a time after the one before it (the chat is ordered by time), and
    /// the chat a title and times.
    fn finish(self) -> ImportedChat {
        let first = self.messages.iter().find_map(|(_, at)| *at);
        let created_at = self.created_at.or(first).unwrap_or_else(store::now);
        let mut last: Option<NaiveDateTime> = None;
        let messages: Vec<(NewMessage, NaiveDateTime)> = self
            .messages
            .into_iter()
            .map(|(mut message, at)| {
                let next = last.map(|t| t + TimeDelta::microseconds(1));
                let at = match (at, next) {
                    (Some(at), Some(next)) => at.max(next),
                    (Some(at), None) => at,
                    (None, next) => next.unwrap_or(created_at),
                };
                last = Some(at);
                message.content = without_nul(&message.content);
                message.thinking = message.thinking.as_deref().map(without_nul);
                (message, at)
            })
            .collect();
        let title = self.title.map(|t| without_nul(t.trim())).filter(|t| !t.is_empty()).unwrap_or_else(|| UNTITLED.to_owned());
        ImportedChat {
            source: format!("{}{}", self.prefix, self.source_id.unwrap_or_default()),
            title: title.chars().take(CHAT_TITLE_MAX_CHARS).collect(),
            created_at,
            updated_at: self.updated_at.or(last).unwrap_or(created_at),
            is_archived: self.is_archived,
            messages,
        }
    }
}

/// Unix time in seconds (fractions kept to the microsecond); values too large for seconds are
/// read as milliseconds, microseconds or nanoseconds.
fn unix_time(value: f64) -> Option<NaiveDateTime> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let seconds = match value {
        v if v > 1e17 => v / 1e9,
        v if v > 1e14 => v / 1e6,
        v if v > 1e11 => v / 1e3,
        v => v,
    };
    DateTime::from_timestamp_micros((seconds * 1e6).round() as i64).map(|t| t.naive_utc())
}

fn rfc3339(text: &str) -> Option<NaiveDateTime> {
    let time = DateTime::parse_from_rfc3339(text).ok()?.naive_utc();
    DateTime::from_timestamp_micros(time.and_utc().timestamp_micros()).map(|t| t.naive_utc())
}

fn model_metadata(model: Option<String>) -> Option<Value> {
    model.filter(|m| !m.is_empty()).map(|m| json!({ "model": m }))
}

// ---- ours ----------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct OurChat {
    chat: OurChatFields,
    #[serde(default)]
    messages: Vec<OurMessage>,
}

#[derive(Deserialize)]
struct OurChatFields {
    id: Option<String>,
    title: Option<String>,
    is_archived: Option<bool>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct OurMessage {
    role: String,
    content: String,
    thinking: Option<String>,
    tool_calls: Option<Value>,
    images: Option<Value>,
    created_at: Option<String>,
    tokens_used: Option<i32>,
    extended_metadata: Option<Value>,
}

impl OurChat {
    fn draft(self) -> Result<Draft, String> {
        let messages = self
            .messages
            .into_iter()
            .map(|m| {
                let role = MessageRole::parse(&m.role).ok_or_else(|| format!("Unknown message role '{}'", m.role))?;
                let message = NewMessage {
                    role: role.as_str().into(),
                    content: m.content,
                    thinking: m.thinking,
                    tool_calls: m.tool_calls.filter(Value::is_array),
                    images: m.images.filter(|v| v.as_array().is_some_and(|images| images.iter().all(Value::is_string))),
                    model_id: None,
                    tokens_used: m.tokens_used.unwrap_or(0).max(0),
                    extended_metadata: m.extended_metadata.filter(Value::is_object),
                };
                Ok((message, m.created_at.as_deref().and_then(rfc3339)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Draft {
            prefix: OURS,
            source_id: self.chat.id,
            title: self.chat.title,
            created_at: self.chat.created_at.as_deref().and_then(rfc3339),
            updated_at: self.chat.updated_at.as_deref().and_then(rfc3339),
            is_archived: self.chat.is_archived.unwrap_or(false),
            messages,
        })
    }
}

// ---- ChatGPT -------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct GptConversation {
    id: Option<String>,
    conversation_id: Option<String>,
    title: Option<String>,
    create_time: Option<f64>,
    update_time: Option<f64>,
    is_archived: Option<bool>,
    current_node: Option<String>,
    mapping: HashMap<String, GptNode>,
}

#[derive(Deserialize)]
struct GptNode {
    message: Option<GptMessage>,
    parent: Option<String>,
    children: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct GptMessage {
    author: GptAuthor,
    create_time: Option<f64>,
    content: Option<GptContent>,
    metadata: Option<GptMetadata>,
    recipient: Option<String>,
}

#[derive(Deserialize)]
struct GptAuthor {
    role: String,
}

#[derive(Deserialize)]
struct GptContent {
    content_type: String,
    parts: Option<Vec<Value>>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct GptMetadata {
    is_visually_hidden_from_conversation: Option<bool>,
    model_slug: Option<String>,
}

impl GptConversation {
    /// The conversation as last seen: the path from the root to `current_node` (without one,
    /// the latest branch at every fork).
    fn path(&self) -> Result<Vec<&GptNode>, String> {
        let mut path = Vec::new();
        match self.current_node.as_ref().filter(|id| self.mapping.contains_key(*id)) {
            Some(current) => {
                let mut cursor = Some(current);
                while let Some(node) = cursor.and_then(|id| self.mapping.get(id)) {
                    if path.len() > self.mapping.len() {
                        return Err("The conversation's messages form a loop".into());
                    }
                    path.push(node);
                    cursor = node.parent.as_ref();
                }
                path.reverse();
            }
            None => {
                let mut cursor = self.mapping.values().find(|node| node.parent.is_none());
                while let Some(node) = cursor {
                    if path.len() > self.mapping.len() {
                        return Err("The conversation's messages form a loop".into());
                    }
                    path.push(node);
                    cursor = node.children.as_ref().and_then(|c| c.last()).and_then(|id| self.mapping.get(id));
                }
            }
        }
        Ok(path)
    }

    fn draft(self) -> Result<Draft, String> {
        let mut messages = Vec::new();
        for node in self.path()? {
            let Some(message) = &node.message else { continue };
            let metadata = message.metadata.as_ref();
            if metadata.and_then(|m| m.is_visually_hidden_from_conversation) == Some(true)
                || message.recipient.as_deref().is_some_and(|r| r != "all")
            {
                continue;
            }
            let Some(role) = MessageRole::parse(&message.author.role) else { continue };
            let Some(content) = message.content.as_ref().and_then(gpt_text).filter(|text| !text.trim().is_empty()) else {
                continue;
            };
            let model = if role == MessageRole::Assistant { metadata.and_then(|m| m.model_slug.clone()) } else { None };
            let new = NewMessage {
                role: role.as_str().into(),
                content,
                extended_metadata: model_metadata(model),
                ..NewMessage::default()
            };
            messages.push((new, message.create_time.and_then(unix_time)));
        }
        Ok(Draft {
            prefix: CHATGPT,
            source_id: self.id.or(self.conversation_id),
            title: self.title,
            created_at: self.create_time.and_then(unix_time),
            updated_at: self.update_time.and_then(unix_time),
            is_archived: self.is_archived.unwrap_or(false),
            messages,
        })
    }
}

/// A message's text: its string parts joined (on a new line unless a part ends with one);
/// images and other kinds of content are left out.
fn gpt_text(content: &GptContent) -> Option<String> {
    match content.content_type.as_str() {
        "text" | "multimodal_text" => {
            let mut text = String::new();
            for part in content.parts.iter().flatten().filter_map(Value::as_str) {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(part);
            }
            Some(text)
        }
        "code" | "execution_output" => content.text.clone(),
        _ => None,
    }
}

// ---- Open WebUI ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct WebuiRecord {
    id: Option<String>,
    title: Option<String>,
    created_at: Option<f64>,
    updated_at: Option<f64>,
    archived: Option<bool>,
    chat: WebuiChat,
}

#[derive(Deserialize)]
struct WebuiChat {
    title: Option<String>,
    history: Option<WebuiHistory>,
    messages: Option<Vec<WebuiMessage>>,
    timestamp: Option<f64>,
}

#[derive(Deserialize)]
struct WebuiHistory {
    messages: Option<HashMap<String, WebuiMessage>>,
    #[serde(rename = "currentId")]
    current_id: Option<String>,
}

#[derive(Deserialize, Clone)]
struct WebuiMessage {
    #[serde(rename = "parentId")]
    parent_id: Option<String>,
    role: Option<String>,
    content: Option<Value>,
    timestamp: Option<f64>,
    model: Option<String>,
}

impl WebuiRecord {
    /// The conversation as last seen: the chain from `currentId` back through `parentId`, or
    /// the linear `messages` of older exports.
    fn path(&self) -> Result<Vec<&WebuiMessage>, String> {
        let history = self.chat.history.as_ref();
        let tree = history.and_then(|h| h.messages.as_ref());
        let current = history.and_then(|h| h.current_id.as_ref());
        if let (Some(tree), Some(mut cursor)) = (tree, current.filter(|id| tree.is_some_and(|t| t.contains_key(*id)))) {
            let mut path = Vec::new();
            while let Some(message) = tree.get(cursor) {
                if path.len() > tree.len() {
                    return Err("The chat's messages form a loop".into());
                }
                path.push(message);
                let Some(parent) = &message.parent_id else { break };
                cursor = parent;
            }
            path.reverse();
            return Ok(path);
        }
        Ok(self.chat.messages.iter().flatten().collect())
    }

    fn draft(self) -> Result<Draft, String> {
        let mut messages = Vec::new();
        for message in self.path()? {
            let Some(role) = message.role.as_deref().and_then(MessageRole::parse) else { continue };
            let Some(content) = message.content.as_ref().and_then(webui_text).filter(|text| !text.trim().is_empty()) else {
                continue;
            };
            let model = if role == MessageRole::Assistant { message.model.clone() } else { None };
            let new = NewMessage {
                role: role.as_str().into(),
                content,
                extended_metadata: model_metadata(model),
                ..NewMessage::default()
            };
            messages.push((new, message.timestamp.and_then(unix_time)));
        }
        Ok(Draft {
            prefix: OPEN_WEBUI,
            source_id: self.id,
            title: self.title.or(self.chat.title),
            created_at: self.created_at.or(self.chat.timestamp).and_then(unix_time),
            updated_at: self.updated_at.and_then(unix_time),
            is_archived: self.archived.unwrap_or(false),
            messages,
        })
    }
}

/// A message's text: a string, or the text parts of a list.
fn webui_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            Some(texts.join("\n"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_keep_microseconds_and_accept_milliseconds() {
        assert_eq!(unix_time(1718000000.123456).unwrap().to_string(), "2024-06-10 06:13:20.123456");
        assert_eq!(unix_time(1718000000123.0).unwrap().to_string(), "2024-06-10 06:13:20.123");
        assert_eq!(unix_time(f64::NAN), None);
        assert_eq!(unix_time(1e300), None);
    }

    #[test]
    fn message_times_always_move_forward() {
        let at = unix_time(1718000000.0);
        let message = || NewMessage { role: "user".into(), content: "x".into(), ..NewMessage::default() };
        let draft = Draft {
            prefix: CHATGPT,
            source_id: Some("a".into()),
            title: None,
            created_at: None,
            updated_at: None,
            is_archived: false,
            messages: vec![(message(), at), (message(), None), (message(), at)],
        };
        let chat = draft.finish();
        let times: Vec<String> = chat.messages.iter().map(|(_, t)| t.to_string()).collect();
        assert_eq!(times, ["2024-06-10 06:13:20", "2024-06-10 06:13:20.000001", "2024-06-10 06:13:20.000002"]);
        assert_eq!(chat.title, UNTITLED);
        assert_eq!(chat.source, "chatgpt:a");
    }
}
