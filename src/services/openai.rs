//! The OpenAI-compatible API: OpenAI's chat requests become Ollama's native `/api/chat`
//! (so thinking is kept) run by the generation engine, not stored in any chat; embeddings go
//! through `/api/embed`. What a key may use is decided here, once, for every `/v1` route.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::admission::Admission;
use super::api_keys::key_models;
use super::generation::{Generation, GenerationRequest, Generations};
use super::model_access::ModelAccess;
use super::{ServiceError, ServiceResult};
use crate::ollama::{model_name, ChatRequest, UpstreamMessage};
use crate::schemas::openai::{ChatCompletionRequest, ChatMessage, EmbeddingsRequest, ModelObject, Stop};
use crate::store::api_keys::ApiKeyRecord;
use crate::store::users::User;
use crate::upstream::Upstreams;

/// Inputs one embeddings request may carry (OpenAI's own limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Stop sequences one request may set.
pub const MAX_STOP_SEQUENCES: usize = 16;

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::Refused(message.into())
}

/// Whether the key's own list lets it name `model` (its owner's rights are checked apart).
fn key_allows(key: &ApiKeyRecord, model: &str) -> bool {
    key_models(key).is_none_or(|allowed| allowed.iter().any(|m| m == model))
}

/// Whether the key and its owner may use `model`: the key's list, then the model's policy.
async fn check_model(access: &ModelAccess, user: &User, key: &ApiKeyRecord, model: &str) -> ServiceResult<()> {
    if !key_allows(key, model) {
        return Err(ServiceError::ModelNotAllowed(model.to_owned()));
    }
    access.check(user, model).await.map(drop)
}

/// The models the key and its owner may use, as `/v1/models` lists them.
pub async fn models(
    upstreams: &Upstreams,
    access: &ModelAccess,
    user: &User,
    key: &ApiKeyRecord,
) -> ServiceResult<Vec<ModelObject>> {
    let tags = upstreams.tags()?;
    let listed: &[Value] = tags.get("models").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let names: Vec<String> = listed.iter().map(|model| model_name(model).unwrap_or_default().to_owned()).collect();
    let usable = access.usable(user, &names).await?;
    Ok(listed
        .iter()
        .zip(usable)
        .filter_map(|(model, usable)| {
            let id = model_name(model)?;
            (usable && key_allows(key, id)).then_some(())?;
            let created = model
                .get("modified_at")
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(0, |t| t.timestamp());
            // Ollama's namespace: `library` for official models, `user` of `user/model`.
            let owned_by = id.split_once('/').map_or("library", |(namespace, _)| namespace).to_owned();
            Some(ModelObject { id: id.to_owned(), object: "model", created, owned_by })
        })
        .collect())
}

pub async fn model(
    upstreams: &Upstreams,
    access: &ModelAccess,
    user: &User,
    key: &ApiKeyRecord,
    id: &str,
) -> ServiceResult<Option<ModelObject>> {
    Ok(models(upstreams, access, user, key).await?.into_iter().find(|m| m.id == id))
}

/// Starts the answer; it is streamed back and never stored in a chat.
pub async fn start_chat(
    generations: &Generations,
    admission: &Admission,
    user: &User,
    key: &ApiKeyRecord,
    request: ChatCompletionRequest,
) -> ServiceResult<Arc<Generation>> {
    if !key_allows(key, &request.model) {
        return Err(ServiceError::ModelNotAllowed(request.model));
    }
    let mut upstream = upstream_request(request)?;
    let admitted = admission.admit(user, Some(key), &mut upstream).await?;
    generations
        .start(GenerationRequest {
            user_id: user.id,
            chat_id: None,
            api_key_id: Some(key.id),
            max_running: admitted.max_running,
            question: None,
            upstream,
            title_source: None,
        })
        .await
}

/// OpenAI's request in Ollama's terms.
fn upstream_request(request: ChatCompletionRequest) -> ServiceResult<ChatRequest> {
    if request.messages.is_empty() {
        return Err(invalid("messages must not be empty"));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(invalid("Only n=1 is supported"));
    }
    let mut options = Map::new();
    let mut bounded = |name: &str, option: &str, value: Option<f64>, min: f64, max: f64| -> ServiceResult<()> {
        if let Some(value) = value {
            if !(min..=max).contains(&value) {
                return Err(invalid(format!("{name} must be between {min} and {max}")));
            }
            options.insert(option.into(), json!(value));
        }
        Ok(())
    };
    bounded("temperature", "temperature", request.temperature, 0.0, 2.0)?;
    bounded("top_p", "top_p", request.top_p, 0.0, 1.0)?;
    bounded("presence_penalty", "presence_penalty", request.presence_penalty, -2.0, 2.0)?;
    bounded("frequency_penalty", "frequency_penalty", request.frequency_penalty, -2.0, 2.0)?;
    if let Some(limit) = request.max_completion_tokens.or(request.max_tokens) {
        if limit == 0 {
            return Err(invalid("max_tokens must be at least 1"));
        }
        // The engine lowers it to MAX_ANSWER_TOKENS when it asks for more.
        options.insert("num_predict".into(), json!(limit));
    }
    if let Some(seed) = request.seed {
        options.insert("seed".into(), json!(seed));
    }
    if let Some(stop) = request.stop {
        let stop = match stop {
            Stop::One(one) => vec![one],
            Stop::Many(many) => many,
        };
        if stop.len() > MAX_STOP_SEQUENCES {
            return Err(invalid(format!("At most {MAX_STOP_SEQUENCES} stop sequences")));
        }
        options.insert("stop".into(), json!(stop));
    }
    let tools_off = request.tool_choice.as_ref().and_then(Value::as_str) == Some("none");
    Ok(ChatRequest {
        model: request.model,
        messages: upstream_messages(request.messages)?,
        stream: true,
        think: request.reasoning_effort.as_deref().map(think).transpose()?,
        options: (!options.is_empty()).then_some(Value::Object(options)),
        format: request.response_format.as_ref().map(format).transpose()?.flatten(),
        keep_alive: None,
        tools: request.tools.filter(|tools| !tools.is_empty() && !tools_off),
    })
}

/// `reasoning_effort` as Ollama's `think`: off, or a level.
fn think(effort: &str) -> ServiceResult<Value> {
    match effort {
        "none" | "minimal" => Ok(json!(false)),
        "low" | "medium" | "high" => Ok(json!(effort)),
        other => Err(invalid(format!("reasoning_effort must be none, minimal, low, medium or high, not {other:?}"))),
    }
}

/// `response_format` as Ollama's `format`: nothing, `"json"`, or the JSON schema.
fn format(response_format: &Value) -> ServiceResult<Option<Value>> {
    match response_format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => match response_format.pointer("/json_schema/schema") {
            Some(schema @ Value::Object(_)) => Ok(Some(schema.clone())),
            _ => Err(invalid("response_format.json_schema.schema must be a JSON schema object")),
        },
        _ => Err(invalid("response_format.type must be text, json_object or json_schema")),
    }
}

fn upstream_messages(messages: Vec<ChatMessage>) -> ServiceResult<Vec<UpstreamMessage>> {
    // A tool's answer names its call's id; Ollama wants the function's name.
    let mut call_names: HashMap<String, String> = HashMap::new();
    messages
        .into_iter()
        .map(|message| {
            let role = match message.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => "tool",
                other => return Err(invalid(format!("Unknown message role {other:?}"))),
            };
            let (content, images) = content(message.content.as_ref())?;
            let tool_calls = match message.tool_calls {
                Some(calls) if role == "assistant" && !calls.is_empty() => Some(upstream_tool_calls(&calls, &mut call_names)?),
                _ => None,
            };
            let tool_name = message
                .tool_call_id
                .as_ref()
                .and_then(|id| call_names.get(id).cloned())
                .or(message.name.filter(|_| role == "tool"));
            Ok(UpstreamMessage {
                role: role.into(),
                content,
                thinking: None,
                images: (!images.is_empty()).then_some(images),
                tool_calls,
                tool_name,
            })
        })
        .collect()
}

/// A message's text and images: a string, or parts (text joined by new lines, images as
/// base64 from `data:` URLs; Ollama cannot fetch other URLs).
fn content(content: Option<&Value>) -> ServiceResult<(String, Vec<String>)> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(text)) => Ok((text.clone(), Vec::new())),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        texts.push(part.get("text").and_then(Value::as_str).ok_or_else(|| invalid("A text part needs its text"))?)
                    }
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .or_else(|| part.get("image_url"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid("An image_url part needs image_url.url"))?;
                        images.push(data_url_base64(url)?);
                    }
                    _ => return Err(invalid("Content parts must be of type text or image_url")),
                }
            }
            Ok((texts.join("\n"), images))
        }
        Some(_) => Err(invalid("content must be a string or a list of parts")),
    }
}

fn data_url_base64(url: &str) -> ServiceResult<String> {
    let base64 = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .filter(|(media_type, _)| media_type.starts_with("image/"))
        .map(|(_, data)| data)
        .ok_or_else(|| invalid("Images must be data: URLs (data:image/png;base64,...); other URLs are not fetched"))?;
    Ok(base64.to_owned())
}

/// OpenAI's calls (`arguments` a JSON string) as Ollama's (`arguments` an object).
fn upstream_tool_calls(calls: &[Value], call_names: &mut HashMap<String, String>) -> ServiceResult<Value> {
    let converted: ServiceResult<Vec<Value>> = calls
        .iter()
        .map(|call| {
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("A tool call needs function.name"))?;
            let arguments = match call.pointer("/function/arguments") {
                Some(Value::String(text)) if text.trim().is_empty() => json!({}),
                Some(Value::String(text)) => {
                    serde_json::from_str(text).map_err(|_| invalid("Tool call arguments must be a JSON object as a string"))?
                }
                Some(object @ Value::Object(_)) => object.clone(),
                _ => json!({}),
            };
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                call_names.insert(id.to_owned(), name.to_owned());
            }
            Ok(json!({ "function": { "name": name, "arguments": arguments } }))
        })
        .collect();
    Ok(Value::Array(converted?))
}

/// A tool call of the answer in OpenAI's shape: an id (Ollama's when it sent one), and the
/// arguments as a JSON string.
pub fn openai_tool_call(call: &Value, index: usize) -> Value {
    let id =
        call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple()), str::to_owned);
    let function = call.get("function").unwrap_or(&Value::Null);
    let arguments = match function.get("arguments") {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "{}".into(),
    };
    json!({
        "index": index,
        "id": id,
        "type": "function",
        "function": { "name": function.get("name").cloned().unwrap_or(Value::Null), "arguments": arguments },
    })
}

/// Vectors for the inputs, and the tokens Ollama counted.
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

pub async fn embed(
    upstreams: &Upstreams,
    access: &ModelAccess,
    user: &User,
    key: &ApiKeyRecord,
    request: &EmbeddingsRequest,
) -> ServiceResult<Embeddings> {
    check_model(access, user, key, &request.model).await?;
    let inputs: Vec<String> = match &request.input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Value::Array(items) if items.is_empty() => return Err(invalid("input must not be empty")),
        _ => return Err(invalid("input must be a string or a list of strings (token arrays are not supported)")),
    };
    if inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(invalid(format!("At most {MAX_EMBEDDING_INPUTS} inputs per request")));
    }
    let (ollama, model) = upstreams.ollama_for(&request.model)?;
    let answer = ollama.embed(&model, &inputs, request.dimensions).await?;
    let vectors: Vec<Vec<f32>> = answer
        .get("embeddings")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| ServiceError::Upstream(crate::ollama::OllamaError::Protocol("no embeddings in the answer".into())))?;
    let prompt_tokens = answer.get("prompt_eval_count").and_then(Value::as_u64).unwrap_or(0);
    Ok(Embeddings { vectors, prompt_tokens })
}
