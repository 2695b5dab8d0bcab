//! Client of the Ollama API: typed requests, NDJSON streaming, timeouts for connect and first
//! byte, and failures mapped to clear, typed errors.

pub mod openai_upstream;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::config::OllamaConfig;
pub use types::{ChatChunk, ChatRequest, UpstreamMessage};

/// Why a call to Ollama failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OllamaError {
    /// The upstream's address is logged where this is made, never shown in an answer.
    #[error("Cannot connect to Ollama: {reason}")]
    Unreachable { reason: String },
    #[error("Ollama did not answer within {0:?}")]
    Timeout(Duration),
    /// Ollama answered an error (`{"error": ...}`), before or during a stream.
    #[error("{message}")]
    Upstream { status: StatusCode, message: String },
    #[error("Unexpected answer from Ollama: {0}")]
    Protocol(String),
    #[error("The connection to Ollama was lost: {0}")]
    Disconnected(String),
    /// No provider could take the request: none serves the model, or every one failed. The
    /// message names providers, never their addresses.
    #[error("{0}")]
    NoProvider(String),
}

#[derive(Clone)]
pub struct OllamaClient {
    http: reqwest::Client,
    base_url: String,
    /// `base_url` without any user or password in it: what the log names.
    logged_address: String,
    /// Sent as `Authorization: Bearer` (an Ollama behind an authenticating proxy).
    api_key: Option<Arc<str>>,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    cache: Arc<ModelCache>,
}

/// `/api/tags` with capabilities, and `/api/show` answers, kept for a while: listing models
/// would otherwise cost one `show` per model on every page load.
struct ModelCache {
    ttl: Duration,
    /// Shared, not copied: every model list and `/v1/models` reads it.
    tags: Mutex<Option<(Instant, Arc<Value>)>>,
    shows: Mutex<HashMap<String, (Instant, Value)>>,
}

impl ModelCache {
    async fn tags(&self) -> Option<Arc<Value>> {
        let guard = self.tags.lock().await;
        guard.as_ref().filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }
    async fn show(&self, model: &str) -> Option<Value> {
        let guard = self.shows.lock().await;
        guard.get(model).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }
    async fn clear(&self) {
        *self.tags.lock().await = None;
        self.shows.lock().await.clear();
    }
}

impl OllamaClient {
    /// A client of the Ollama at `base_url`, with the timeouts of `config`.
    pub fn new(config: &OllamaConfig, base_url: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.to_owned(),
            logged_address: without_credentials(base_url),
            api_key: api_key.map(Arc::from),
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
            cache: Arc::new(ModelCache { ttl: config.tags_cache_ttl, tags: Mutex::new(None), shows: Mutex::new(HashMap::new()) }),
        })
    }

    /// The upstream's address as the log names it (without credentials).
    pub fn address(&self) -> &str {
        &self.logged_address
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Sends a request and waits for the status line (Ollama sends it with the first chunk),
    /// at most the first-byte timeout. Error statuses become [`OllamaError::Upstream`].
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<reqwest::Response, OllamaError> {
        let url = self.url(path);
        let mut request = self.http.request(method, &url);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match tokio::time::timeout(self.first_byte_timeout, request.send()).await {
            Err(_) => return Err(OllamaError::Timeout(self.first_byte_timeout)),
            Ok(Err(err)) => return Err(transport_error(&self.logged_address, err)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                // Not Ollama's own error (a proxy's page, say): it may name hosts, so it goes to
                // the log and the answer says only the status.
                if !text.trim().is_empty() {
                    tracing::warn!(%status, address = %self.logged_address, body = %text.trim(), "Ollama answered an error that is not its own");
                }
                format!("Ollama answered {status}")
            });
        Err(OllamaError::Upstream { status, message })
    }

    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, OllamaError> {
        let response = self.send(method, path, body).await?;
        let text = tokio::time::timeout(self.idle_timeout, response.text())
            .await
            .map_err(|_| OllamaError::Timeout(self.idle_timeout))?
            .map_err(|e| OllamaError::Disconnected(e.without_url().to_string()))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| OllamaError::Protocol(format!("invalid JSON: {e}")))
    }

    pub async fn version(&self) -> Result<Value, OllamaError> {
        self.json(Method::GET, "/api/version", None).await
    }

    /// The names of the installed models (`name:tag`), uncached: a cheap probe of the upstream.
    pub async fn model_names(&self) -> Result<Vec<String>, OllamaError> {
        let tags = self.json(Method::GET, "/api/tags", None).await?;
        let models = tags.get("models").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(models.iter().filter_map(|m| model_name(m).map(str::to_owned)).collect())
    }

    /// The installed models' names and digests (`/api/tags`, uncached): what changes when a
    /// model is pulled, deleted or replaced.
    pub async fn installed(&self) -> Result<Vec<(String, String)>, OllamaError> {
        let tags = self.json(Method::GET, "/api/tags", None).await?;
        let models = tags.get("models").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(models
            .iter()
            .filter_map(|m| {
                let digest = m.get("digest").and_then(Value::as_str).unwrap_or_default();
                model_name(m).map(|name| (name.to_owned(), digest.to_owned()))
            })
            .collect())
    }

    /// The names of the models loaded in memory now (`/api/ps`).
    pub async fn loaded(&self) -> Result<Vec<String>, OllamaError> {
        let ps = self.json(Method::GET, "/api/ps", None).await?;
        let models = ps.get("models").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(models.iter().filter_map(|m| model_name(m).map(str::to_owned)).collect())
    }

    /// Installed models, each with its `capabilities` (from `/api/show`, fetched concurrently).
    pub async fn tags(&self) -> Result<Arc<Value>, OllamaError> {
        if let Some(cached) = self.cache.tags().await {
            return Ok(cached);
        }
        let tags = self.json(Method::GET, "/api/tags", None).await?;
        let models = tags.get("models").and_then(Value::as_array).cloned().unwrap_or_default();
        let shows = futures_util::future::join_all(models.iter().map(|m| async move {
            let name = model_name(m).unwrap_or_default();
            self.show(name).await.ok()
        }))
        .await;
        let listed: Vec<Value> = models
            .iter()
            .zip(shows)
            .map(|(model, show)| {
                let capabilities = show.and_then(|s| s.get("capabilities").cloned()).unwrap_or_else(|| json!([]));
                json!({
                    "model": model.get("model").cloned().unwrap_or(Value::Null),
                    "name": model.get("name").cloned().unwrap_or(Value::Null),
                    "modified_at": model.get("modified_at").map(normalise_time).unwrap_or(Value::Null),
                    "size": model.get("size").cloned().unwrap_or(Value::Null),
                    "digest": model.get("digest").cloned().unwrap_or(Value::Null),
                    "details": model.get("details").cloned().unwrap_or(Value::Null),
                    "capabilities": capabilities,
                })
            })
            .collect();
        let result = Arc::new(json!({ "models": listed }));
        *self.cache.tags.lock().await = Some((Instant::now(), result.clone()));
        Ok(result)
    }

    pub async fn show(&self, model: &str) -> Result<Value, OllamaError> {
        if let Some(cached) = self.cache.show(model).await {
            return Ok(cached);
        }
        let shown = self.json(Method::POST, "/api/show", Some(&json!({ "model": model }))).await?;
        self.cache.shows.lock().await.insert(model.to_owned(), (Instant::now(), shown.clone()));
        Ok(shown)
    }

    pub async fn delete(&self, model: &str) -> Result<(), OllamaError> {
        self.json(Method::DELETE, "/api/delete", Some(&json!({ "model": model }))).await?;
        self.cache.clear().await;
        Ok(())
    }

    pub async fn clear_cache(&self) {
        self.cache.clear().await;
    }

    /// Starts a pull; yields Ollama's progress lines as they arrive. An `{"error"}` line ends
    /// the stream with an error.
    pub async fn pull(
        &self,
        model: &str,
    ) -> Result<impl Stream<Item = Result<Value, OllamaError>> + Send + 'static, OllamaError> {
        let response = self.send(Method::POST, "/api/pull", Some(&json!({ "model": model, "stream": true }))).await?;
        self.cache.clear().await;
        Ok(ndjson_lines(response, self.idle_timeout))
    }

    /// `/api/embed`: one vector per input, and `prompt_eval_count`.
    pub async fn embed(&self, model: &str, input: &[String], dimensions: Option<u32>) -> Result<Value, OllamaError> {
        let mut body = json!({ "model": model, "input": input });
        if let Some(dimensions) = dimensions {
            body["dimensions"] = json!(dimensions);
        }
        self.json(Method::POST, "/api/embed", Some(&body)).await
    }

    /// Starts a streamed chat; yields chunks as they arrive. The request is dropped (and
    /// Ollama stops generating) when the stream is dropped.
    pub async fn chat(
        &self,
        request: &ChatRequest,
    ) -> Result<impl Stream<Item = Result<ChatChunk, OllamaError>> + Send + 'static, OllamaError> {
        let body = serde_json::to_value(request).map_err(|e| OllamaError::Protocol(e.to_string()))?;
        let response = self.send(Method::POST, "/api/chat", Some(&body)).await?;
        Ok(ndjson_lines(response, self.idle_timeout).map(|line| {
            line.and_then(|value| {
                serde_json::from_value::<ChatChunk>(value).map_err(|e| OllamaError::Protocol(format!("bad chat chunk: {e}")))
            })
        }))
    }
}

fn transport_error(logged_address: &str, err: reqwest::Error) -> OllamaError {
    // The client's only timeout of its own is the connect timeout (the others are ours).
    if err.is_timeout() {
        tracing::warn!(address = logged_address, "connecting to the upstream timed out");
        return OllamaError::Unreachable { reason: "connecting timed out".into() };
    }
    // The innermost cause ("Connection refused (os error 111)") names no address.
    let err = err.without_url();
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    tracing::warn!(address = logged_address, reason, "cannot connect to Ollama");
    OllamaError::Unreachable { reason }
}

/// The name of a model entry of `/api/tags` (`name`, or `model` in older answers).
pub fn model_name(model: &Value) -> Option<&str> {
    model.get("name").or_else(|| model.get("model")).and_then(Value::as_str)
}

/// `url` with any user and password taken out, for the log.
pub fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        _ => url.to_owned(),
    }
}

/// Pydantic re-serialised `modified_at` with microseconds; Ollama sends up to nanoseconds.
fn normalise_time(value: &Value) -> Value {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
        .unwrap_or_else(|| value.clone())
}

/// Splits a streamed body into JSON lines. A line with an `error` key ends the stream with
/// [`OllamaError::Upstream`]; a broken connection with [`OllamaError::Disconnected`].
fn ndjson_lines(
    response: reqwest::Response,
    idle_timeout: Duration,
) -> impl Stream<Item = Result<Value, OllamaError>> + Send + 'static {
    let status = response.status();
    let body = response.bytes_stream();
    futures_util::stream::unfold((Box::pin(body), BytesMut::new(), false), move |(mut body, mut buffer, finished)| async move {
        if finished {
            return None;
        }
        loop {
            if let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                let line = buffer.split_to(pos + 1);
                let text = String::from_utf8_lossy(&line[..pos]);
                if text.trim().is_empty() {
                    continue;
                }
                let item = parse_line(&text, status);
                let done = item.is_err();
                return Some((item, (body, buffer, done)));
            }
            match tokio::time::timeout(idle_timeout, body.next()).await {
                Err(_) => return Some((Err(OllamaError::Timeout(idle_timeout)), (body, buffer, true))),
                Ok(Some(Ok(chunk))) => buffer.extend_from_slice(chunk.chunk()),
                Ok(Some(Err(err))) => {
                    return Some((Err(OllamaError::Disconnected(err.without_url().to_string())), (body, buffer, true)))
                }
                Ok(None) => {
                    let rest = String::from_utf8_lossy(&buffer).trim().to_owned();
                    buffer.clear();
                    if rest.is_empty() {
                        return None;
                    }
                    let item = parse_line(&rest, status);
                    return Some((item, (body, buffer, true)));
                }
            }
        }
    })
}

fn parse_line(text: &str, status: StatusCode) -> Result<Value, OllamaError> {
    let value: Value = serde_json::from_str(text).map_err(|e| OllamaError::Protocol(format!("invalid NDJSON line: {e}")))?;
    if let Some(message) = value.get("error") {
        let message = message.as_str().map(str::to_owned).unwrap_or_else(|| message.to_string());
        let status = if status.is_success() { StatusCode::BAD_GATEWAY } else { status };
        return Err(OllamaError::Upstream { status, message });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn the_logged_address_carries_no_credentials() {
        assert_eq!(without_credentials("http://ollama:s3cret@gpu-box:11434"), "http://gpu-box:11434");
        assert_eq!(without_credentials("http://gpu-box:11434"), "http://gpu-box:11434");
    }
}
