//! Search, export and import of chats on the wire.

use chrono::NaiveDateTime;
use serde::Serialize;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::chats::{ChatPageLimit, ChatResponse, MessageResponse};
use super::serialize_utc;
use crate::store::search::{SearchTerms, SEARCH_RANKED_MATCHES};
use crate::validation::{boolean, string, Fields, FromFields, Problem, Skip, Text};

/// The longest search query, in characters.
pub const SEARCH_QUERY_MAX_CHARS: usize = 200;
/// The most words (and phrases) one query may hold.
pub const SEARCH_QUERY_MAX_TERMS: usize = 16;
pub type SearchQueryText = Text<1, SEARCH_QUERY_MAX_CHARS>;

/// `GET /chats/search?q=&skip=&limit=&include_archived=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words (each matches words starting with it) and `"quoted phrases"`; all must match.
    /// Case never matters; accents do not matter on SQLite.
    #[param(inline, value_type = SearchQueryText, example = "sourdough \"whole wheat\"")]
    pub q: SearchTerms,
    #[param(inline, value_type = Skip)]
    pub skip: i64,
    #[param(inline, value_type = ChatPageLimit)]
    pub limit: i64,
    #[param(default = false)]
    pub include_archived: bool,
}

fn search_terms(value: &serde_json::Value) -> Result<SearchTerms, Problem> {
    let text = string(1, SEARCH_QUERY_MAX_CHARS)(value)?;
    let terms = SearchTerms::parse(&text)
        .ok_or_else(|| Problem::new("no_words", "The query should hold at least one word (letters or digits)"))?;
    if terms.terms().len() > SEARCH_QUERY_MAX_TERMS {
        return Err(Problem::new("too_many_words", format!("The query should hold at most {SEARCH_QUERY_MAX_TERMS} words")));
    }
    Ok(terms)
}

impl FromFields for SearchQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let q = f.required("q", search_terms);
        Some(SearchQuery {
            q: q?,
            skip: Skip::read(f, "skip"),
            limit: ChatPageLimit::read(f, "limit"),
            include_archived: f.optional("include_archived", boolean).unwrap_or(false),
        })
    }
}

/// One match: in a chat's title (`message_id` and `role` are null) or in one of its messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub chat_id: Uuid,
    pub chat_title: Option<String>,
    pub message_id: Option<Uuid>,
    pub role: Option<String>,
    /// Plain text around the match, HTML-escaped, with the matched words in `<mark>…</mark>`.
    #[schema(example = "…keep the starter at 24 °C; <mark>rye</mark> ferments fastest…")]
    pub snippet: String,
    /// The message's time, or the chat's for a title.
    #[serde(serialize_with = "serialize_utc")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<NaiveDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    /// Best first: title matches, then messages by relevance.
    pub results: Vec<SearchResult>,
    #[schema(schema_with = ranked_total_schema)]
    pub total: i64,
}

fn ranked_total_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0.0))
        .maximum(Some(SEARCH_RANKED_MATCHES as f64))
        .description(Some(format!(
            "How many matches there are to page through, at most {SEARCH_RANKED_MATCHES}: a query found more often is \
             answered from its title matches and its newest messages, {SEARCH_RANKED_MATCHES} in all, ranked best first."
        )))
        .build()
}

crate::text_enum! {
    /// What a single chat is exported as.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum ExportFormat {
        Json = "json",
        Markdown = "markdown",
    }
}

/// `GET /chats/{id}/export?format=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    #[param(inline, value_type = Option<ExportFormat>, default = "json")]
    pub format: ExportFormat,
}

impl FromFields for ExportQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ExportQuery { format: f.optional("format", ExportFormat::from_value).unwrap_or(ExportFormat::Json) })
    }
}

/// The name of our export format, in every exported chat.
pub const CHAT_EXPORT_FORMAT: &str = "rovertchat.chat.v1";

/// A chat as exported (and imported again): the shapes of `GET /chats/chat/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatExport {
    /// Always `rovertchat.chat.v1`.
    #[schema(example = "rovertchat.chat.v1")]
    pub format: &'static str,
    pub chat: ChatResponse,
    pub messages: Vec<MessageResponse>,
}

/// `POST /chats/import` as a form: the export file in the field `file`.
#[derive(ToSchema)]
pub struct ImportUpload {
    /// ChatGPT's `conversations.json`, Open WebUI's chat export, or ours (NDJSON or a JSON list).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A chat of the file that could not be imported; the others were.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportFailure {
    /// Its position in the file, from 0.
    pub index: usize,
    pub title: Option<String>,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    pub imported: usize,
    /// Chats imported before (the same source), left as they are.
    pub skipped: usize,
    pub failed: Vec<ImportFailure>,
    /// The new chats' ids, in the file's order.
    pub chat_ids: Vec<Uuid>,
}
