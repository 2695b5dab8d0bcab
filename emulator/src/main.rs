//! `ollama-emulator`: serves the emulated Ollama API until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ollama_emulator::{Emulator, EmulatorConfig, Knobs, ModelSpec};

/// A stand-in for Ollama that answers "Echo: <your message>" (no GPU, no model files).
#[derive(Parser, Debug)]
#[command(name = "ollama-emulator", version, about)]
struct Args {
    /// Interface to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 11434)]
    port: u16,
    /// Prompt evaluation time before the first token of every answer, in ms.
    #[arg(long, default_value_t = 0)]
    first_token_delay_ms: u64,
    /// Time between two streamed tokens, in ms.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Model load time on the first use of a model (and after it unloads), in ms.
    #[arg(long, default_value_t = 0)]
    load_delay_ms: u64,
    /// Repeat or cut every answer to exactly this many tokens.
    #[arg(long)]
    tokens: Option<usize>,
    /// Answer this text instead of echoing the last user message.
    #[arg(long)]
    reply: Option<String>,
    /// Do not print a line per request.
    #[arg(long)]
    quiet: bool,
    /// Serve the OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`, `/health`)
    /// instead of Ollama's; `/api/*` then answers 404.
    #[arg(long)]
    openai: bool,
    /// Require `Authorization: Bearer <KEY>` on every request.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// An installed model instead of the defaults (repeatable): `NAME` or
    /// `NAME=CAPABILITY,...`, e.g. `--model mistral:7b=completion,tools`. A known model
    /// (`llama3.2:1b`, `qwen3:0.6b`, `tinyllama`) named without capabilities keeps its own.
    #[arg(long = "model", value_name = "NAME[=CAPABILITIES]")]
    models: Vec<String>,
}

/// A `--model` value as a model.
fn model_spec(arg: &str) -> ModelSpec {
    let (name, capabilities) = match arg.split_once('=') {
        Some((name, capabilities)) => (name, Some(capabilities)),
        None => (arg, None),
    };
    let known = [ModelSpec::llama3_2_1b(), ModelSpec::qwen3_0_6b(), ModelSpec::tinyllama()];
    let with_tag = if name.contains(':') { name.to_string() } else { format!("{name}:latest") };
    match (capabilities, known.into_iter().find(|spec| spec.name == with_tag)) {
        (None, Some(spec)) => spec,
        (None, None) => ModelSpec::new(name, &["completion"]),
        (Some(capabilities), _) => ModelSpec::new(name, &capabilities.split(',').map(str::trim).collect::<Vec<_>>()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let knobs = Knobs {
        first_token_delay: Duration::from_millis(args.first_token_delay_ms),
        per_token_delay: Duration::from_millis(args.token_delay_ms),
        load_delay: Duration::from_millis(args.load_delay_ms),
        tokens: args.tokens,
        reply: args.reply,
        ..Knobs::default()
    };
    let models = (!args.models.is_empty()).then(|| args.models.iter().map(|arg| model_spec(arg)).collect());
    let config = EmulatorConfig {
        host: Some(args.host.clone()),
        port: Some(args.port),
        knobs,
        models,
        log_requests: !args.quiet,
        openai: args.openai,
        api_key: args.api_key,
    };
    let emulator = match Emulator::try_start_with(config).await {
        Ok(emulator) => emulator,
        Err(error) => {
            eprintln!("ollama-emulator: cannot listen on {}:{}: {error}", args.host, args.port);
            return ExitCode::FAILURE;
        }
    };
    let kind = if args.openai { " (OpenAI-compatible, /v1)" } else { "" };
    println!("ollama-emulator listening on {}{kind}", emulator.base_url());
    println!("models: {}", emulator.models().join(", "));
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("ollama-emulator: cannot wait for Ctrl-C: {error}");
    }
    emulator.shutdown().await;
    ExitCode::SUCCESS
}
