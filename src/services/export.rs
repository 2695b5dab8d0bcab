//! A user's chats as files: one chat as JSON or Markdown, all of them as NDJSON (streamed).

use bytes::Bytes;
use futures_util::Stream;
use uuid::Uuid;

use super::chats::with_messages;
use super::ServiceResult;
use crate::schemas::chats::{ChatResponse, MessageResponse};
use crate::schemas::search::{ChatExport, CHAT_EXPORT_FORMAT};
use crate::schemas::utc_time;
use crate::store::chats::{Chat, DEFAULT_CHAT_TITLE};
use crate::store::messages::Message;
use crate::store::search::{fold, words};
use crate::store::users::User;
use crate::store::Store;

/// Chats read from the database at once while exporting all of them.
const EXPORT_PAGE_CHATS: i64 = 100;

fn export_of(chat: Chat, messages: Vec<Message>) -> ChatExport {
    ChatExport {
        format: CHAT_EXPORT_FORMAT,
        chat: ChatResponse::from(chat),
        messages: messages.into_iter().map(MessageResponse::from).collect(),
    }
}

/// One chat of the user (404 for another's).
pub async fn chat(store: &Store, user: &User, chat_id: Uuid) -> ServiceResult<ChatExport> {
    let (chat, messages) = with_messages(store, user, chat_id).await?;
    Ok(export_of(chat, messages))
}

/// The title, then each message with its author and time.
pub fn markdown(export: &ChatExport) -> String {
    let mut out = format!("# {}\n", export.chat.title.as_deref().unwrap_or(DEFAULT_CHAT_TITLE));
    for message in &export.messages {
        let mut role = message.role.clone();
        if let Some(first) = role.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let time = message.created_at.map(|t| format!(" · {}", utc_time(&t))).unwrap_or_default();
        out.push_str(&format!("\n**{role}**{time}\n\n{}\n", message.content.trim_end()));
    }
    out
}

/// A file name for a download: the title's letters and digits (accents dropped) joined by `-`,
/// at most 60 characters, so it is safe in a header and on every file system.
pub fn file_name(title: Option<&str>, extension: &str) -> String {
    let folded = fold(title.unwrap_or_default());
    let mut name = String::new();
    for (_, word) in words(&folded) {
        let ascii: String = word.chars().filter(char::is_ascii_alphanumeric).collect();
        if ascii.is_empty() || name.len() + ascii.len() + 1 > 60 {
            continue;
        }
        if !name.is_empty() {
            name.push('-');
        }
        name.push_str(&ascii);
    }
    if name.is_empty() {
        name.push_str("chat");
    }
    format!("{name}.{extension}")
}

/// Every chat of the user as NDJSON, one chat per line, read a page of chats (and their messages)
/// at a time: memory holds one page, however many chats there are.
pub fn all_chats(store: Store, user_id: Uuid) -> impl Stream<Item = anyhow::Result<Bytes>> {
    // (where the next page starts, whether there is one)
    futures_util::stream::try_unfold((None, true), move |(after, more): (Option<Uuid>, bool)| {
        let store = store.clone();
        async move {
            if !more {
                return Ok(None);
            }
            let page = store.chats_with_messages_by_id(user_id, after, EXPORT_PAGE_CHATS).await?;
            let Some((last, _)) = page.last() else { return Ok(None) };
            let next = (Some(last.id), page.len() == EXPORT_PAGE_CHATS as usize);
            let mut lines = Vec::new();
            for (chat, messages) in page {
                serde_json::to_writer(&mut lines, &export_of(chat, messages))?;
                lines.push(b'\n');
            }
            Ok(Some((Bytes::from(lines), next)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain_ascii() {
        assert_eq!(file_name(Some("Zürich weekend 🚆"), "md"), "zurich-weekend.md");
        assert_eq!(file_name(Some("../../etc/passwd\r\n"), "json"), "etc-passwd.json");
        assert_eq!(file_name(Some("東京"), "json"), "chat.json");
        assert_eq!(file_name(None, "json"), "chat.json");
    }
}
