//! The upstreams answers come from: providers (`model_providers`) of two kinds, Ollama's
//! native API and OpenAI-compatible servers, behind one client type; the in-memory registry of
//! their health, models and load ([`Upstreams`]); and the routing rules ([`routing`]).
//!
//! The engine speaks one request and chunk type ([`ChatRequest`], [`ChatChunk`]); each kind
//! translates to and from it.

pub mod keys;
mod registry;
pub mod routing;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::ollama::openai_upstream::OpenAiUpstream;
use crate::ollama::{ChatChunk, ChatRequest, OllamaClient, OllamaError};

pub use registry::{OpenedAnswer, Provider, ProviderStatus, PullTarget, Upstreams};

crate::text_enum! {
    /// What API a provider speaks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ProviderKind {
        Ollama = "ollama",
        OpenAi = "openai",
    }
}

/// An answer's chunks as they arrive.
pub type ChunkStream = BoxStream<'static, Result<ChatChunk, OllamaError>>;

/// A client of one provider.
#[derive(Clone)]
pub enum UpstreamClient {
    Ollama(OllamaClient),
    OpenAi(OpenAiUpstream),
}

impl UpstreamClient {
    /// Starts a streamed chat; dropping the stream drops the request.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChunkStream, OllamaError> {
        match self {
            UpstreamClient::Ollama(client) => Ok(client.chat(request).await?.boxed()),
            UpstreamClient::OpenAi(client) => Ok(client.chat(request).await?.boxed()),
        }
    }

    /// The address the log names (never credentials).
    pub fn address(&self) -> &str {
        match self {
            UpstreamClient::Ollama(client) => client.address(),
            UpstreamClient::OpenAi(client) => client.address(),
        }
    }
}

/// Whether an error before the first token lets the next provider try: anything but a refusal
/// of the request itself (a 4xx other than "no such model" and "too busy").
pub fn fails_over(err: &OllamaError) -> bool {
    match err {
        OllamaError::Upstream { status, .. } => status.is_server_error() || status.as_u16() == 404 || status.as_u16() == 429,
        OllamaError::NoProvider(_) => false,
        OllamaError::Unreachable { .. } | OllamaError::Timeout(_) | OllamaError::Protocol(_) | OllamaError::Disconnected(_) => {
            true
        }
    }
}

/// Whether an error says the provider itself is in trouble (cool it down): it cannot be
/// reached, does not answer in time, or answers 5xx.
pub fn cools_down(err: &OllamaError) -> bool {
    match err {
        OllamaError::Unreachable { .. } | OllamaError::Timeout(_) => true,
        OllamaError::Upstream { status, .. } => status.is_server_error(),
        _ => false,
    }
}
