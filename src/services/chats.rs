//! Chats and their messages, and starting a model's answer in a chat.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::admission::Admission;
use super::generation::{Generation, GenerationRequest, Generations, Question};
use super::{ServiceError, ServiceResult};
use crate::ollama::{ChatRequest, UpstreamMessage};
use crate::schemas::chats::{
    BulkDelete, BulkDeleted, ChatCreate, ChatListQuery, ChatUpdate, CompletionRequest, MessageCreate, MessageRole, MessageUpdate,
    ModelOptions, OllamaChatRequest,
};
use crate::store::chats::{Chat, ChatPage};
use crate::store::messages::{Message, NewMessage};
use crate::store::users::User;
use crate::store::{self, Store};

const CHAT_NOT_FOUND: ServiceError = ServiceError::NotFound("Chat not found");
const MESSAGE_NOT_FOUND: ServiceError = ServiceError::NotFound("Message not found");

pub async fn list(store: &Store, user: &User, query: &ChatListQuery) -> ServiceResult<ChatPage> {
    Ok(store.list_chats(user.id, query.include_archived, query.skip, query.limit).await?)
}

pub async fn create(store: &Store, user: &User, request: ChatCreate) -> ServiceResult<Chat> {
    Ok(store.create_chat(user.id, &request.title, store::now()).await?)
}

/// The chat when it is the user's; 404 otherwise (a foreign chat looks missing).
pub async fn user_chat(store: &Store, user: &User, chat_id: Uuid) -> ServiceResult<Chat> {
    store.user_chat(user.id, chat_id).await?.ok_or(CHAT_NOT_FOUND)
}

pub async fn with_messages(store: &Store, user: &User, chat_id: Uuid) -> ServiceResult<(Chat, Vec<Message>)> {
    let chat = user_chat(store, user, chat_id).await?;
    let messages = store.chat_messages(chat_id).await?;
    Ok((chat, messages))
}

/// Renames and/or (un)archives. An empty update changes nothing, not even `updated_at`.
pub async fn update(store: &Store, user: &User, chat_id: Uuid, update: ChatUpdate) -> ServiceResult<Chat> {
    if update.title.is_none() && update.is_archived.is_none() {
        return user_chat(store, user, chat_id).await;
    }
    store.update_chat(user.id, chat_id, update.title.as_deref(), update.is_archived, store::now()).await?.ok_or(CHAT_NOT_FOUND)
}

/// Deletes a chat and its messages; its running generation is stopped first.
pub async fn delete(store: &Store, generations: &Generations, user: &User, chat_id: Uuid) -> ServiceResult<()> {
    generations.stop_in_chats(user.id, &[chat_id]).await?;
    if !store.delete_chat(user.id, chat_id).await? {
        return Err(CHAT_NOT_FOUND);
    }
    Ok(())
}

pub async fn delete_all(store: &Store, generations: &Generations, user: &User) -> ServiceResult<()> {
    let deleted = store.delete_all_chats(user.id).await?;
    generations.stop_in_chats(user.id, &deleted).await
}

pub async fn add_message(store: &Store, user: &User, chat_id: Uuid, request: MessageCreate) -> ServiceResult<Message> {
    let new = NewMessage {
        role: request.role.as_str().into(),
        content: request.content,
        images: request.images.map(Value::from),
        extended_metadata: request.extended_metadata.map(Value::Object),
        ..NewMessage::default()
    };
    store.add_message(user.id, chat_id, &new, store::now()).await?.ok_or(CHAT_NOT_FOUND)
}

pub async fn message(store: &Store, user: &User, chat_id: Uuid, message_id: Uuid) -> ServiceResult<Message> {
    user_chat(store, user, chat_id).await?;
    store.chat_message(chat_id, message_id).await?.ok_or(MESSAGE_NOT_FOUND)
}

/// Only the user's own words can be edited.
pub async fn edit_message(
    store: &Store,
    user: &User,
    chat_id: Uuid,
    message_id: Uuid,
    update: MessageUpdate,
) -> ServiceResult<Message> {
    let current = message(store, user, chat_id, message_id).await?;
    if current.role != "user" {
        return Err(ServiceError::Forbidden("Only user messages can be edited"));
    }
    let content = update.content.unwrap_or(current.content);
    let metadata = match update.extended_metadata.into_update() {
        None => current.extended_metadata,
        Some(value) => value.map(Value::Object),
    };
    store.edit_message(user.id, chat_id, message_id, &content, metadata.as_ref(), store::now()).await?.ok_or(MESSAGE_NOT_FOUND)
}

pub async fn delete_message(store: &Store, user: &User, chat_id: Uuid, message_id: Uuid) -> ServiceResult<()> {
    let deleted = store.delete_messages(user.id, chat_id, &[message_id], store::now()).await?.ok_or(CHAT_NOT_FOUND)?;
    if deleted.is_empty() {
        return Err(MESSAGE_NOT_FOUND);
    }
    Ok(())
}

/// Deletes the listed messages of the chat; ids that are missing or belong elsewhere are
/// reported as failed, not deleted.
pub async fn delete_messages(store: &Store, user: &User, chat_id: Uuid, request: BulkDelete) -> ServiceResult<BulkDeleted> {
    let mut ids = request.message_ids;
    ids.sort();
    ids.dedup();
    let deleted = store.delete_messages(user.id, chat_id, &ids, store::now()).await?.ok_or(CHAT_NOT_FOUND)?;
    let failed: Vec<Uuid> = ids.iter().filter(|id| !deleted.contains(id)).copied().collect();
    Ok(BulkDeleted {
        success: failed.is_empty(),
        message: format!("Deleted {} of {} messages", deleted.len(), ids.len()),
        deleted_count: deleted.len(),
        failed_deletions: failed,
    })
}

fn upstream_request(model: String, messages: Vec<UpstreamMessage>, options: ModelOptions) -> ChatRequest {
    ChatRequest {
        model,
        messages,
        stream: true,
        think: options.think,
        options: options.options.map(Value::Object),
        format: options.format,
        keep_alive: options.keep_alive,
        tools: None,
    }
}

const KEEP_ALIVE_FOR_ADMINS: ServiceError =
    ServiceError::Forbidden("Only admins can set keep_alive: it keeps or unloads the model for everyone");

/// What a user may ask of the model: `keep_alive` only as an admin, options within the
/// configured bounds.
fn check_model_options(generations: &Generations, user: &User, options: &ModelOptions) -> ServiceResult<()> {
    if options.keep_alive.is_some() && !user.is_admin() {
        return Err(KEEP_ALIVE_FOR_ADMINS);
    }
    options.check_limits(generations.limits()).map_err(ServiceError::Invalid)
}

fn refuse_while_running(generations: &Generations, user: &User, chat_id: Uuid) -> ServiceResult<()> {
    if generations.running(user.id, chat_id).is_some() {
        return Err(ServiceError::Conflict("A reply is already being generated for this chat"));
    }
    Ok(())
}

/// Starts the model's answer to the stored conversation plus the user's new message. The
/// message is stored by the generation while the answer starts (it is kept before the answer,
/// or the generation fails and keeps neither). When Ollama refuses the request before its
/// first token, the message is removed again: sent again, it would be in the chat twice.
pub async fn start_completion(
    store: &Store,
    generations: &Generations,
    admission: &Admission,
    user: &User,
    chat_id: Uuid,
    request: CompletionRequest,
) -> ServiceResult<Arc<Generation>> {
    let options =
        ModelOptions { think: request.think, options: request.options, format: request.format, keep_alive: request.keep_alive };
    check_model_options(generations, user, &options)?;
    // Both reads at once: they are on the way to the first token. The history is only used
    // once the chat is known to be the user's.
    let (_, history) = tokio::try_join!(user_chat(store, user, chat_id), async { Ok(store.chat_messages(chat_id).await?) })?;
    refuse_while_running(generations, user, chat_id)?;
    let title_source = history
        .iter()
        .find(|m| m.role == MessageRole::User.as_str())
        .map_or_else(|| request.content.clone(), |m| m.content.clone());
    let asked = UpstreamMessage {
        role: MessageRole::User.as_str().into(),
        content: request.content.clone(),
        thinking: None,
        images: request.images.clone().filter(|images| !images.is_empty()),
        tool_calls: None,
        tool_name: None,
    };
    let messages = history.into_iter().map(upstream_message).chain([asked]).collect();
    let mut upstream = upstream_request(request.model, messages, options);
    let admitted = admission.admit(user, None, &mut upstream).await?;
    let question = Question {
        id: Uuid::new_v4(),
        message: NewMessage {
            role: MessageRole::User.as_str().into(),
            content: request.content,
            images: request.images.map(Value::from),
            ..NewMessage::default()
        },
        at: store::now(),
    };
    generations
        .start(GenerationRequest {
            user_id: user.id,
            chat_id: Some(chat_id),
            api_key_id: None,
            max_running: admitted.max_running,
            question: Some(question),
            upstream,
            title_source: Some(title_source),
        })
        .await
}

/// The SPA's `/ollama/chat`: the client sends the conversation (its user message is already
/// stored through `POST /chats/{id}/messages`); the answer is stored in the chat.
pub async fn start_ollama_chat(
    store: &Store,
    generations: &Generations,
    admission: &Admission,
    user: &User,
    request: OllamaChatRequest,
) -> ServiceResult<Arc<Generation>> {
    let options =
        ModelOptions { think: request.think, options: request.options, format: request.format, keep_alive: request.keep_alive };
    check_model_options(generations, user, &options)?;
    user_chat(store, user, request.chat_id).await?;
    refuse_while_running(generations, user, request.chat_id)?;
    let title_source = request.messages.iter().find(|m| m.role == MessageRole::User).map(|m| m.content.clone());
    let messages = request
        .messages
        .into_iter()
        .map(|turn| UpstreamMessage {
            role: turn.role.as_str().into(),
            content: turn.content,
            thinking: None,
            images: turn.images,
            tool_calls: turn.tool_calls,
            tool_name: turn.tool_name,
        })
        .collect();
    let mut upstream = upstream_request(request.model, messages, options);
    let admitted = admission.admit(user, None, &mut upstream).await?;
    generations
        .start(GenerationRequest {
            user_id: user.id,
            chat_id: Some(request.chat_id),
            api_key_id: None,
            max_running: admitted.max_running,
            question: None,
            upstream,
            title_source,
        })
        .await
}

/// A stored message as Ollama expects it in a conversation.
fn upstream_message(message: Message) -> UpstreamMessage {
    let images = message.images.and_then(|v| serde_json::from_value::<Vec<String>>(v).ok()).filter(|i| !i.is_empty());
    UpstreamMessage {
        role: message.role,
        content: message.content,
        thinking: None,
        images,
        tool_calls: message.tool_calls.filter(|v| !v.is_null()),
        tool_name: None,
    }
}
