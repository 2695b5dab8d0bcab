//! What an emulator is started with: where it listens, which models it has, and the knobs that
//! shape how it answers.

use std::time::Duration;

use crate::text::hex_digest;

/// Start-up configuration of an [`Emulator`](crate::Emulator).
#[derive(Clone, Debug, Default)]
pub struct EmulatorConfig {
    /// Interface or host name to bind; `None` means `127.0.0.1`.
    pub host: Option<String>,
    /// Port to bind; `None` (or `Some(0)`) lets the OS pick a free one.
    pub port: Option<u16>,
    /// Initial knobs (can be changed later with [`Emulator::set_knobs`](crate::Emulator::set_knobs)).
    pub knobs: Knobs,
    /// Installed models; `None` means [`ModelSpec::defaults`] (`llama3.2:1b` and `qwen3:0.6b`).
    /// Every model given here can also be pulled again after a delete.
    pub models: Option<Vec<ModelSpec>>,
    /// Print one line per request to stderr (the binary turns this on).
    pub log_requests: bool,
    /// OpenAI-compatible mode (like vLLM or llama.cpp's server): `/v1/models`,
    /// `/v1/chat/completions` and `/health` are served, and everything else, `/api/*`
    /// included, is a 404 in OpenAI's error shape. Off: the native Ollama API only.
    pub openai: bool,
    /// When set, every request (but `/health`) needs `Authorization: Bearer <api_key>`, else
    /// 401 (in OpenAI's error shape in OpenAI mode, `{"error": "unauthorized"}` otherwise).
    pub api_key: Option<String>,
}

/// Behaviour switches for generation requests (`/api/chat`, `/api/generate`).
///
/// A request reads the knobs once, when it starts, so changing them does not affect requests
/// already in progress.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// Waited before the first chunk, only when the model is "cold" (first use since start, after
    /// an unload or after its keep-alive expired). Reported as `load_duration`.
    pub load_delay: Duration,
    /// Prompt evaluation time, waited before the first chunk of every request.
    pub first_token_delay: Duration,
    /// Waited between two chunks.
    pub per_token_delay: Duration,
    /// Answer with this status and `{"error": msg}` instead of generating (status and headers
    /// are sent at once; an invalid status code becomes 500).
    pub fail_before_first_byte: Option<(u16, String)>,
    /// After N content chunks, write a `{"error": msg}` line and end the body: status stays 200
    /// and no `done` chunk is sent. With `stream: false` (or when nothing at all was sent yet,
    /// as in real Ollama) the answer is an HTTP 500 `{"error": msg}` instead.
    pub error_after_tokens: Option<(usize, String)>,
    /// After N content chunks, abort the TCP connection in the middle of the chunked body (no
    /// error line, no `done` chunk).
    pub drop_after_tokens: Option<usize>,
    /// Never send anything; the request ends only when the client goes away.
    pub hang: bool,
    /// Reply text; the default is `Echo: <content of the last user message>`.
    pub reply: Option<String>,
    /// Repeat or cut the reply to exactly this many content chunks (e.g. 100 for benchmarks).
    pub tokens: Option<usize>,
    /// Answer in full whatever `options.num_predict` says, as OpenAI-compatible servers that
    /// ignore a length limit do.
    pub ignore_num_predict: bool,
    /// Number of generation requests served at the same time (like `OLLAMA_NUM_PARALLEL`, but
    /// for the whole server). Extra requests wait silently. `None` = unlimited.
    pub parallel: Option<usize>,
    /// With `parallel`, how many requests may wait for a slot; one more gets 503
    /// `server busy, please try again.  maximum pending requests exceeded`. `None` = unlimited.
    pub max_queue: Option<usize>,
}

/// A model the emulator knows: installed ones are listed by `/api/tags`, and any model of the
/// catalog can be pulled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Full name with tag, e.g. `llama3.2:1b` (a name without tag gets `:latest`).
    pub name: String,
    /// `completion`, `tools`, `thinking`, `vision`, ...: decides what chat accepts.
    pub capabilities: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// 64 hex characters, without `sha256:`.
    pub digest: String,
    /// Architecture family, e.g. `llama`, `qwen3`.
    pub family: String,
    /// Human-readable parameter count, e.g. `1.2B`, `751.63M`.
    pub parameter_size: String,
    /// e.g. `Q4_K_M`, `Q8_0`.
    pub quantization_level: String,
    /// Exact parameter count (`general.parameter_count` in `/api/show`).
    pub parameter_count: u64,
    /// `<family>.context_length` in `/api/show`.
    pub context_length: u64,
    /// `<family>.embedding_length` in `/api/show` (0 = left out).
    pub embedding_length: u64,
    /// `<family>.block_count` in `/api/show` (0 = left out).
    pub block_count: u64,
    /// Go-style RFC 3339 timestamp with offset, as `/api/tags` shows it.
    pub modified_at: String,
}

impl ModelSpec {
    /// A model with plausible made-up details: family from the name, a digest derived from the
    /// name, 1B parameters in Q4_K_M. Adjust fields with struct update syntax if needed.
    pub fn new(name: &str, capabilities: &[&str]) -> Self {
        let base = name.rsplit('/').next().unwrap_or(name);
        let base = base.split(':').next().unwrap_or(base);
        let family: String = base.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        ModelSpec {
            name: name.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            size: 1_000_000_000,
            digest: hex_digest(name),
            family: if family.is_empty() { "llama".into() } else { family.to_lowercase() },
            parameter_size: "1B".into(),
            quantization_level: "Q4_K_M".into(),
            parameter_count: 1_000_000_000,
            context_length: 4096,
            embedding_length: 2048,
            block_count: 16,
            modified_at: "2025-06-01T10:00:00.123456789+02:00".into(),
        }
    }

    /// `llama3.2:1b`: capabilities `["completion"]` (as in the captured contract).
    pub fn llama3_2_1b() -> Self {
        ModelSpec {
            size: 1_321_098_329,
            digest: "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878".into(),
            family: "llama".into(),
            parameter_size: "1.2B".into(),
            quantization_level: "Q8_0".into(),
            parameter_count: 1_235_814_432,
            context_length: 131_072,
            embedding_length: 2048,
            block_count: 16,
            modified_at: "2025-05-28T09:14:31.51288412+02:00".into(),
            ..ModelSpec::new("llama3.2:1b", &["completion"])
        }
    }

    /// `qwen3:0.6b`: capabilities `["completion","tools","thinking"]`.
    pub fn qwen3_0_6b() -> Self {
        ModelSpec {
            size: 522_653_767,
            digest: "7df6b6e09427a769808717c0a93cadc4ae99ed4eb8bf5ca557c90846becea435".into(),
            family: "qwen3".into(),
            parameter_size: "751.63M".into(),
            quantization_level: "Q4_K_M".into(),
            parameter_count: 751_632_384,
            context_length: 40_960,
            embedding_length: 1024,
            block_count: 28,
            modified_at: "2025-05-30T18:02:47.205935417+02:00".into(),
            ..ModelSpec::new("qwen3:0.6b", &["completion", "tools", "thinking"])
        }
    }

    /// `tinyllama:latest`: not installed at start, but can be pulled.
    pub fn tinyllama() -> Self {
        ModelSpec {
            size: 637_700_138,
            digest: "7d852460809bcf2b0d847597f62f2e7bb5007669a1b2c3d4e5f60718293a4b5c".into(),
            family: "llama".into(),
            parameter_size: "1B".into(),
            quantization_level: "Q4_0".into(),
            parameter_count: 1_100_048_384,
            context_length: 2048,
            embedding_length: 2048,
            block_count: 22,
            ..ModelSpec::new("tinyllama:latest", &["completion"])
        }
    }

    /// The models installed when no list is configured: `llama3.2:1b` and `qwen3:0.6b`.
    pub fn defaults() -> Vec<ModelSpec> {
        vec![ModelSpec::llama3_2_1b(), ModelSpec::qwen3_0_6b()]
    }

    /// Whether the model has the given capability (`"tools"`, `"thinking"`, ...).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}
