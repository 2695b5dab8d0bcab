//! `loadgen`: the parts of rovertchat's benchmark that wrk and pgbench cannot do.
//!
//! - `ttft`: time to first token, directly against the Ollama emulator and through rovertchat
//!   (`POST /api/v1/chats/{id}/completions`, first `event: delta`), interleaved.
//! - `openai-ttft`: the same through the OpenAI-compatible API (`POST /v1/chat/completions`,
//!   `stream: true`, with an API key; first `data:` chunk carrying content).
//! - `reattach-latency`: a generation started on one replica and watched on another
//!   (`GET /api/v1/chats/{id}/generation`): per token, the delay between the owner's stream and the
//!   other replica's stream receiving it (both read here, one clock).
//! - `streams`: N concurrent SSE completions (one chat each), with the server's CPU time and RSS
//!   read from /proc before, during (every 100 ms) and after.
//! - `monitor`: CPU time and RSS of groups of processes over a window, from /proc (used around
//!   wrk and pgbench runs to show who uses the 2 cores).
//! - `startup`: time from spawning the server to a 200 from `/api/v1/health`, tight poll loop.
//! - `argon2`: how many argon2id (19 MiB, t=2, p=1) verifications per second the cores allow.
//! - `pglog`: p50/p99 of pgbench per-transaction logs (`pgbench -l`).
//!
//! Every subcommand prints one machine-readable line `RESULT key=value ...` on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "loadgen", about = "rovertchat benchmark helper (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time to first token: emulator directly vs through rovertchat, N sequential requests each.
    Ttft {
        /// rovertchat root, e.g. http://127.0.0.1:18080
        #[arg(long)]
        server: String,
        /// Ollama emulator root, e.g. http://127.0.0.1:18434
        #[arg(long)]
        emulator: String,
        /// access_token cookie value of the user whose chats are used
        #[arg(long, env = "TOKEN")]
        token: String,
        #[arg(long, default_value = "llama3.2:1b")]
        model: String,
        /// measured requests of each kind
        #[arg(short, default_value_t = 200)]
        n: usize,
        /// unrecorded requests of each kind first
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        #[arg(long, default_value = "Hello there, how are you today?")]
        content: String,
        /// write every measured pair (direct_ms,server_ms) here as CSV
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Time to first token: emulator directly vs through `POST /v1/chat/completions` (stream: true).
    OpenaiTtft {
        /// rovertchat root, e.g. http://127.0.0.1:18080
        #[arg(long)]
        server: String,
        /// Ollama emulator root, e.g. http://127.0.0.1:18434
        #[arg(long)]
        emulator: String,
        /// API key (rc-...), sent as `Authorization: Bearer`
        #[arg(long, env = "API_KEY")]
        key: String,
        #[arg(long, default_value = "llama3.2:1b")]
        model: String,
        /// measured requests of each kind
        #[arg(short, default_value_t = 200)]
        n: usize,
        /// unrecorded requests of each kind first
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        #[arg(long, default_value = "Hello there, how are you today?")]
        content: String,
        /// write every measured pair (direct_ms,server_ms) here as CSV
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Per-token delay between a generation's stream on the replica that runs it and a watcher's
    /// stream (`GET /api/v1/chats/{id}/generation`) on another replica; N generations, one at a time.
    ReattachLatency {
        /// the replica the generations start on (owner), e.g. http://127.0.0.1:18180
        #[arg(long)]
        owner: String,
        /// the other replica, where the watcher re-attaches, e.g. http://127.0.0.1:18181
        #[arg(long)]
        watcher: String,
        #[arg(long, env = "TOKEN")]
        token: String,
        #[arg(long, default_value = "llama3.2:1b")]
        model: String,
        /// measured generations
        #[arg(short, default_value_t = 10)]
        n: usize,
        /// unrecorded generations first
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// the watcher re-attaches once the owner's stream has had this many content deltas
        #[arg(long, default_value_t = 20)]
        attach_after: usize,
        /// the target: every token reaches the watcher within this many ms
        #[arg(long, default_value_t = 250.0)]
        target_ms: f64,
        /// give up on a generation after this long
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// every measured token (generation,offset,owner_ms,watcher_ms,delay_ms) goes here as CSV
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// N concurrent completions through rovertchat, one chat each; CPU and RSS of the server.
    Streams {
        #[arg(long)]
        server: String,
        #[arg(long, env = "TOKEN")]
        token: String,
        #[arg(long, default_value = "llama3.2:1b")]
        model: String,
        #[arg(short, default_value_t = 1000)]
        n: usize,
        /// delta events every answer must have (the emulator's --tokens)
        #[arg(long)]
        expect_deltas: Option<usize>,
        /// pid of the server (CPU and RSS are read from /proc)
        #[arg(long)]
        pid: u32,
        /// pid of the emulator (its CPU time is reported too)
        #[arg(long)]
        emulator_pid: Option<u32>,
        /// chats created at the same time before the run
        #[arg(long, default_value_t = 16)]
        create_concurrency: usize,
        #[arg(long, default_value_t = 100)]
        sample_ms: u64,
        /// give up on a stream after this long
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// RSS samples (ms since start, KiB) go here
        #[arg(long)]
        rss_out: Option<PathBuf>,
        /// ids of the chats used, one a line
        #[arg(long)]
        chat_ids_out: Option<PathBuf>,
    },
    /// CPU seconds and max RSS of process groups over a window, e.g. --group server=123 --group pg=4,5,6
    Monitor {
        /// name=pid[,pid...]
        #[arg(long = "group")]
        groups: Vec<String>,
        /// seconds to wait before the CPU window opens
        #[arg(long, default_value_t = 2.0)]
        skip_s: f64,
        /// length of the CPU window (it also closes when --while-pid exits)
        #[arg(long, default_value_t = 16.0)]
        window_s: f64,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// stop when this process exits
        #[arg(long)]
        while_pid: Option<u32>,
        /// RSS samples of every group (ms, KiB per group) go here
        #[arg(long)]
        rss_out: Option<PathBuf>,
    },
    /// Time from spawning the server to a healthy /api/v1/health, on SQLite in a fresh DATA_DIR.
    Startup {
        /// the server binary
        #[arg(long)]
        bin: PathBuf,
        #[arg(long, default_value_t = 10)]
        runs: usize,
        #[arg(long, default_value_t = 18090)]
        port: u16,
        /// a fresh DATA_DIR and LOG_DIR per run are made under this directory
        #[arg(long)]
        workdir: PathBuf,
        /// pause between two attempts to connect, in microseconds
        #[arg(long, default_value_t = 100)]
        poll_us: u64,
    },
    /// argon2id m=19 MiB, t=2, p=1 verifications per second, on 1..=threads threads.
    Argon2 {
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// seconds per measurement
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// p50/p99 latency of pgbench per-transaction log files (pgbench -l).
    Pglog { files: Vec<PathBuf> },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Ttft { server, emulator, token, model, n, warmup, content, csv } => {
            runtime().block_on(ttft(server, emulator, Through::Chats { token }, model, n, warmup, content, csv))
        }
        Command::OpenaiTtft { server, emulator, key, model, n, warmup, content, csv } => {
            runtime().block_on(ttft(server, emulator, Through::OpenAi { key }, model, n, warmup, content, csv))
        }
        Command::ReattachLatency { owner, watcher, token, model, n, warmup, attach_after, target_ms, timeout_s, csv } => {
            runtime().block_on(reattach_latency(ReattachArgs {
                owner,
                watcher,
                token,
                model,
                n,
                warmup,
                attach_after,
                target_ms,
                timeout: Duration::from_secs(timeout_s),
                csv,
            }))
        }
        Command::Streams {
            server,
            token,
            model,
            n,
            expect_deltas,
            pid,
            emulator_pid,
            create_concurrency,
            sample_ms,
            timeout_s,
            rss_out,
            chat_ids_out,
        } => runtime().block_on(streams(StreamsArgs {
            server,
            token,
            model,
            n,
            expect_deltas,
            pid,
            emulator_pid,
            create_concurrency,
            sample_ms,
            timeout: Duration::from_secs(timeout_s),
            rss_out,
            chat_ids_out,
        })),
        Command::Monitor { groups, skip_s, window_s, interval_ms, while_pid, rss_out } => {
            monitor(groups, skip_s, window_s, interval_ms, while_pid, rss_out)
        }
        Command::Startup { bin, runs, port, workdir, poll_us } => startup(bin, runs, port, workdir, poll_us),
        Command::Argon2 { threads, seconds } => argon2_rate(threads, seconds),
        Command::Pglog { files } => pglog(files),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // One worker thread: the load generator shares the 2 cores with the server and PostgreSQL,
    // and one thread is plenty for waiting on sockets.
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime")
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1)
}

// ---------------------------------------------------------------------------------------------
// statistics

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

fn result_line(kind: &str, fields: &BTreeMap<&str, String>) -> String {
    let mut line = format!("RESULT {kind}");
    for (k, v) in fields {
        let _ = write!(line, " {k}={v}");
    }
    line
}

// ---------------------------------------------------------------------------------------------
// /proc

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (all its threads), in ticks; `None` once it is gone.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// (VmRSS, VmHWM) in KiB.
fn proc_rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// Number of threads of a process.
fn proc_threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("Threads:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// (busy, total) jiffies of the whole machine.
fn sys_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

fn ncpus() -> f64 {
    std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

fn client() -> reqwest::Client {
    reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(usize::MAX).build().expect("reqwest client")
}

async fn create_chats(http: &reqwest::Client, server: &str, token: &str, n: usize, concurrency: usize) -> Vec<String> {
    use futures_util::StreamExt;
    let url = format!("{server}/api/v1/chats/my");
    let cookie = format!("access_token={token}");
    let ids: Vec<Result<String, String>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let (http, url, cookie) = (http.clone(), url.clone(), cookie.clone());
            async move {
                let resp = http
                    .post(&url)
                    .header("cookie", cookie)
                    .json(&json!({"title": format!("bench stream {i}")}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let body: Value = resp.json().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}: {body}"));
                }
                body["id"].as_str().map(str::to_owned).ok_or_else(|| format!("no id in {body}"))
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    ids.into_iter().map(|r| r.unwrap_or_else(|e| die(format!("creating a chat failed: {e}")))).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    count(hay, needle) > 0
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    if hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// What one streamed request saw.
#[derive(Debug, Default, Clone)]
struct StreamOutcome {
    status: u16,
    /// ms from sending the request to the first token (first NDJSON line / first `event: delta`)
    first_token_ms: Option<f64>,
    total_ms: f64,
    deltas: usize,
    done: bool,
    error: Option<String>,
}

/// Directly against Ollama: time to the first NDJSON line, then read to the end.
async fn direct_chat(http: &reqwest::Client, emulator: &str, model: &str, content: &str) -> StreamOutcome {
    let started = Instant::now();
    let body = json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": true});
    let mut out = StreamOutcome::default();
    let mut resp = match http.post(format!("{emulator}/api/chat")).json(&body).send().await {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("send: {e}"));
            return out;
        }
    };
    out.status = resp.status().as_u16();
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if out.first_token_ms.is_none() && buf.contains(&b'\n') {
                    out.first_token_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Ok(None) => break,
            Err(e) => {
                out.error = Some(format!("read: {e}"));
                break;
            }
        }
    }
    out.total_ms = started.elapsed().as_secs_f64() * 1000.0;
    out.deltas = buf.iter().filter(|b| **b == b'\n').count().saturating_sub(1);
    out.done = contains(&buf, b"\"done\":true");
    out
}

/// Reads a streamed answer (or records why it could not be sent) until `finished` says so or the
/// body ends, noting when `first_token` first appears. Answers the outcome so far and the bytes.
async fn read_stream(
    resp: reqwest::Result<reqwest::Response>,
    started: Instant,
    first_token: &[u8],
    finished: impl Fn(&[u8]) -> bool,
) -> (StreamOutcome, Vec<u8>) {
    let mut out = StreamOutcome::default();
    let mut buf = Vec::new();
    let mut resp = match resp {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("send: {e}"));
            out.total_ms = started.elapsed().as_secs_f64() * 1000.0;
            return (out, buf);
        }
    };
    out.status = resp.status().as_u16();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if out.first_token_ms.is_none() && contains(&buf, first_token) {
                    out.first_token_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                }
                if finished(&buf) {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                out.error = Some(format!("read: {e}"));
                break;
            }
        }
    }
    out.total_ms = started.elapsed().as_secs_f64() * 1000.0;
    (out, buf)
}

/// Through rovertchat: time to the first `event: delta`, then read to `done`/`error`.
async fn server_completion(
    http: &reqwest::Client,
    server: &str,
    token: &str,
    chat_id: &str,
    model: &str,
    content: &str,
    started: Instant,
) -> StreamOutcome {
    let resp = http
        .post(format!("{server}/api/v1/chats/{chat_id}/completions"))
        .header("cookie", format!("access_token={token}"))
        .json(&json!({"model": model, "content": content}))
        .send()
        .await;
    // The end event may span chunks: read until the blank line after it.
    let ended = |buf: &[u8]| (contains(buf, b"event: done") || contains(buf, b"event: error")) && buf.ends_with(b"\n\n");
    let (mut out, buf) = read_stream(resp, started, b"event: delta", ended).await;
    out.deltas = count(&buf, b"event: delta");
    out.done = contains(&buf, b"event: done");
    if out.status != 200 {
        out.error.get_or_insert_with(|| format!("HTTP {}: {}", out.status, String::from_utf8_lossy(&buf)));
    } else if contains(&buf, b"event: error") {
        out.error.get_or_insert_with(|| format!("error event: {}", String::from_utf8_lossy(&buf)));
    }
    out
}

/// Through rovertchat's OpenAI-compatible API: time to the first `data:` chunk with `"content"`
/// (the server holds the status line until the first token), then read to `data: [DONE]`.
async fn openai_completion(http: &reqwest::Client, server: &str, key: &str, model: &str, content: &str) -> StreamOutcome {
    let started = Instant::now();
    let body = json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": true});
    let resp = http.post(format!("{server}/v1/chat/completions")).bearer_auth(key).json(&body).send().await;
    let (mut out, buf) = read_stream(resp, started, b"\"content\":", |_| false).await;
    out.deltas = count(&buf, b"\"content\":");
    out.done = contains(&buf, b"data: [DONE]");
    if out.status != 200 {
        out.error.get_or_insert_with(|| format!("HTTP {}: {}", out.status, String::from_utf8_lossy(&buf)));
    } else if contains(&buf, b"\"error\":") {
        out.error.get_or_insert_with(|| format!("error chunk: {}", String::from_utf8_lossy(&buf)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// ttft

/// The rovertchat path a `ttft` run measures.
enum Through {
    /// `POST /api/v1/chats/{id}/completions` as the SPA does (a fresh chat each), with a session token.
    Chats { token: String },
    /// `POST /v1/chat/completions`, `stream: true`, with an API key.
    OpenAi { key: String },
}

#[allow(clippy::too_many_arguments)]
async fn ttft(
    server: String,
    emulator: String,
    through: Through,
    model: String,
    n: usize,
    warmup: usize,
    content: String,
    csv: Option<PathBuf>,
) {
    let http = client();
    let chats = match &through {
        Through::Chats { token } => create_chats(&http, &server, token, n + warmup, 4).await,
        Through::OpenAi { .. } => Vec::new(),
    };
    let via_server = |i: usize| {
        let (http, server, model, content) = (&http, &server, &model, &content);
        let (through, chats) = (&through, &chats);
        async move {
            match through {
                Through::Chats { token } => {
                    server_completion(http, server, token, &chats[i], model, content, Instant::now()).await
                }
                Through::OpenAi { key } => openai_completion(http, server, key, model, content).await,
            }
        }
    };
    let (mut direct, mut through_ms, mut errors) = (Vec::new(), Vec::new(), 0usize);
    let mut pairs = String::from("direct_ms,server_ms\n");
    for i in 0..n + warmup {
        // Alternate which goes first so drift (other load, caches) hits both alike.
        let (d, s) = if i % 2 == 0 {
            let d = direct_chat(&http, &emulator, &model, &content).await;
            let s = via_server(i).await;
            (d, s)
        } else {
            let s = via_server(i).await;
            let d = direct_chat(&http, &emulator, &model, &content).await;
            (d, s)
        };
        let ok = |o: &StreamOutcome| o.status == 200 && o.error.is_none() && o.done && o.first_token_ms.is_some();
        if !ok(&d) || !ok(&s) {
            errors += 1;
            if errors <= 5 {
                eprintln!("ttft: request {i} failed: direct {:?} / server {:?}", d.error, s.error);
            }
            continue;
        }
        if i >= warmup {
            let (dm, sm) = (d.first_token_ms.unwrap(), s.first_token_ms.unwrap());
            direct.push(dm);
            through_ms.push(sm);
            let _ = writeln!(pairs, "{dm:.3},{sm:.3}");
        }
    }
    if let Some(path) = csv {
        std::fs::write(&path, pairs).unwrap_or_else(|e| die(format!("cannot write {}: {e}", path.display())));
    }
    let paired: Vec<f64> = direct.iter().zip(&through_ms).map(|(d, s)| s - d).collect();
    let (direct, through, paired) = (sorted(direct), sorted(through_ms), sorted(paired));
    let mut f = BTreeMap::new();
    f.insert("n", direct.len().to_string());
    f.insert("errors", errors.to_string());
    for (name, v) in [("direct", &direct), ("server", &through), ("paired_diff", &paired)] {
        f.insert(leak(format!("{name}_p50_ms")), format!("{:.3}", percentile(v, 50.0)));
        f.insert(leak(format!("{name}_p99_ms")), format!("{:.3}", percentile(v, 99.0)));
    }
    f.insert("added_p50_ms", format!("{:.3}", percentile(&through, 50.0) - percentile(&direct, 50.0)));
    f.insert("added_p99_ms", format!("{:.3}", percentile(&through, 99.0) - percentile(&direct, 99.0)));
    println!("{}", result_line("ttft", &f));
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

// ---------------------------------------------------------------------------------------------
// reattach-latency

struct ReattachArgs {
    owner: String,
    watcher: String,
    token: String,
    model: String,
    n: usize,
    warmup: usize,
    attach_after: usize,
    target_ms: f64,
    timeout: Duration,
    csv: Option<PathBuf>,
}

/// Server-sent events of a response, each with the time its last byte arrived.
struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

/// One event: its name (`message` when it has none) and its data lines joined.
struct SseEvent {
    at: Instant,
    name: String,
    data: String,
}

impl SseReader {
    /// The next event; `Ok(None)` when the body ends.
    async fn next(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block[..end]).into_owned();
                let (mut name, mut data) = (String::from("message"), Vec::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                return Ok(Some(SseEvent { at: Instant::now(), name, data: data.join("\n") }));
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// What one side (owner or watcher) of a generation saw.
#[derive(Default)]
struct Timeline {
    /// when the response's status line arrived, ms since the generation started
    headers_ms: f64,
    /// (ms since the generation started, bytes of content received so far), per content delta
    deltas: Vec<(f64, usize)>,
    content: String,
    end: Option<String>,
    error: Option<String>,
}

impl Timeline {
    /// Reads `resp` to its end event, calling `on_delta` with the number of content deltas so far.
    async fn read(resp: reqwest::Result<reqwest::Response>, t0: Instant, mut on_delta: impl FnMut(usize)) -> Timeline {
        let mut t = Timeline::default();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                t.error = Some(format!("send: {e}"));
                return t;
            }
        };
        t.headers_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let status = resp.status();
        if !status.is_success() {
            t.error = Some(format!("HTTP {status}: {}", resp.text().await.unwrap_or_default()));
            return t;
        }
        let mut events = SseReader { resp, buf: Vec::new() };
        loop {
            match events.next().await {
                Ok(Some(event)) => match event.name.as_str() {
                    "delta" => {
                        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                        if let Some(piece) = data["content"].as_str() {
                            t.content.push_str(piece);
                            t.deltas.push(((event.at - t0).as_secs_f64() * 1000.0, t.content.len()));
                            on_delta(t.deltas.len());
                        }
                    }
                    "done" | "error" => {
                        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                        t.end = Some(data["status"].as_str().unwrap_or(&event.name).to_owned());
                        if event.name == "error" {
                            t.error = Some(format!("error event: {}", event.data));
                        }
                        return t;
                    }
                    _ => {}
                },
                Ok(None) => {
                    t.error = Some("the stream ended without done".into());
                    return t;
                }
                Err(e) => {
                    t.error = Some(e);
                    return t;
                }
            }
        }
    }
}

/// One generation started on the owner, watched on the other replica once the owner's stream
/// has had `attach_after` deltas.
async fn reattached_generation(http: &reqwest::Client, a: &ReattachArgs, chat: &str) -> (Timeline, Timeline) {
    let cookie = format!("access_token={}", a.token);
    let t0 = Instant::now();
    let (attach_tx, attach_rx) = tokio::sync::oneshot::channel::<()>();
    let owner = async {
        let resp = http
            .post(format!("{}/api/v1/chats/{chat}/completions", a.owner))
            .header("cookie", &cookie)
            .json(&json!({"model": a.model, "content": "Tell me a long story about replicas"}))
            .send()
            .await;
        let mut attach_tx = Some(attach_tx);
        let timeline = Timeline::read(resp, t0, |deltas| {
            if deltas >= a.attach_after {
                if let Some(tx) = attach_tx.take() {
                    let _ = tx.send(());
                }
            }
        })
        .await;
        drop(attach_tx); // an owner stream that ended early releases the watcher
        timeline
    };
    let watcher = async {
        if attach_rx.await.is_err() {
            return Timeline {
                error: Some("the owner's stream ended before the watcher re-attached".into()),
                ..Timeline::default()
            };
        }
        let resp = http.get(format!("{}/api/v1/chats/{chat}/generation", a.watcher)).header("cookie", &cookie).send().await;
        Timeline::read(resp, t0, |_| {}).await
    };
    tokio::join!(owner, watcher)
}

async fn reattach_latency(a: ReattachArgs) {
    let http = client();
    let chats = create_chats(&http, &a.owner, &a.token, a.n + a.warmup, 4).await;
    let (mut delays, mut catchups, mut errors) = (Vec::new(), Vec::new(), 0usize);
    let mut csv = String::from("generation,offset,owner_ms,watcher_ms,delay_ms\n");
    for (i, chat) in chats.iter().enumerate() {
        let (owner, watcher) = match tokio::time::timeout(a.timeout, reattached_generation(&http, &a, chat)).await {
            Ok(pair) => pair,
            Err(_) => {
                errors += 1;
                eprintln!("reattach-latency: generation {i} timed out");
                continue;
            }
        };
        let problem = owner
            .error
            .as_ref()
            .map(|e| format!("owner: {e}"))
            .or_else(|| watcher.error.as_ref().map(|e| format!("watcher: {e}")))
            .or_else(|| (watcher.content != owner.content).then(|| "the watcher's answer differs from the owner's".into()))
            .or_else(|| (watcher.end != owner.end).then(|| format!("ends differ: {:?} vs {:?}", owner.end, watcher.end)));
        if let Some(problem) = problem {
            errors += 1;
            eprintln!("reattach-latency: generation {i}: {problem}");
            continue;
        }
        if i < a.warmup {
            continue;
        }
        // The watcher's first delta holds everything so far; its time to arrive after the
        // watcher's status line is the catch-up.
        if let Some((first, _)) = watcher.deltas.first() {
            catchups.push(first - watcher.headers_ms);
        }
        // Tokens the owner's stream received after the watcher was attached (its status line
        // arrived): when did the watcher's stream hold as many bytes?
        for &(owner_ms, offset) in owner.deltas.iter().filter(|(ms, _)| *ms >= watcher.headers_ms) {
            let Some(&(watcher_ms, _)) = watcher.deltas.iter().find(|(_, len)| *len >= offset) else { continue };
            delays.push(watcher_ms - owner_ms);
            let _ = writeln!(csv, "{i},{offset},{owner_ms:.3},{watcher_ms:.3},{:.3}", watcher_ms - owner_ms);
        }
    }
    if let Some(path) = &a.csv {
        std::fs::write(path, csv).unwrap_or_else(|e| die(format!("cannot write {}: {e}", path.display())));
    }
    let (delays, catchups) = (sorted(delays), sorted(catchups));
    let within = delays.iter().filter(|d| **d <= a.target_ms).count();
    let max = delays.last().copied().unwrap_or(f64::NAN);
    let mut f = BTreeMap::new();
    f.insert("n", a.n.to_string());
    f.insert("errors", errors.to_string());
    f.insert("tokens", delays.len().to_string());
    for (name, p) in [("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0)] {
        f.insert(name, format!("{:.2}", percentile(&delays, p)));
    }
    f.insert("max_ms", format!("{max:.2}"));
    f.insert("mean_ms", format!("{:.2}", delays.iter().sum::<f64>() / delays.len().max(1) as f64));
    f.insert("catchup_p50_ms", format!("{:.2}", percentile(&catchups, 50.0)));
    f.insert("catchup_max_ms", format!("{:.2}", catchups.last().copied().unwrap_or(f64::NAN)));
    f.insert("target_ms", format!("{}", a.target_ms));
    f.insert("within_target_pct", format!("{:.2}", within as f64 * 100.0 / delays.len().max(1) as f64));
    f.insert("met", (if errors == 0 && !delays.is_empty() && max <= a.target_ms { "yes" } else { "no" }).into());
    println!("{}", result_line("reattach", &f));
}

// ---------------------------------------------------------------------------------------------
// streams

struct StreamsArgs {
    server: String,
    token: String,
    model: String,
    n: usize,
    expect_deltas: Option<usize>,
    pid: u32,
    emulator_pid: Option<u32>,
    create_concurrency: usize,
    sample_ms: u64,
    timeout: Duration,
    rss_out: Option<PathBuf>,
    chat_ids_out: Option<PathBuf>,
}

async fn streams(a: StreamsArgs) {
    let http = client();
    let chats = create_chats(&http, &a.server, &a.token, a.n, a.create_concurrency).await;
    if let Some(path) = &a.chat_ids_out {
        std::fs::write(path, chats.join("\n") + "\n").unwrap_or_else(|e| die(format!("cannot write {}: {e}", path.display())));
    }
    eprintln!("streams: {} chats created; starting {} streams at once", chats.len(), a.n);
    // Let the server settle after the chat creation burst, then take the "before" readings.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_before, _) = proc_rss(a.pid).unwrap_or_else(|| die(format!("no process {}", a.pid)));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, pid, every) = (stop.clone(), a.pid, Duration::from_millis(a.sample_ms));
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((rss, _)) = proc_rss(pid) {
                    samples.push((started.elapsed().as_millis() as u64, rss));
                }
                std::thread::sleep(every);
            }
            samples
        })
    };

    let cpu_before = proc_ticks(a.pid).unwrap_or(0);
    let emu_before = a.emulator_pid.and_then(proc_ticks).unwrap_or(0);
    let sys_before = sys_ticks();
    let barrier = Arc::new(tokio::sync::Barrier::new(a.n + 1));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.n);
    for chat in chats.iter().take(a.n) {
        let (http, server, token, model, chat, barrier) =
            (http.clone(), a.server.clone(), a.token.clone(), a.model.clone(), chat.clone(), barrier.clone());
        let timeout = a.timeout;
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t0 = Instant::now();
            let content = "Tell me a story about a benchmark";
            match tokio::time::timeout(timeout, server_completion(&http, &server, &token, &chat, &model, content, t0)).await {
                Ok(outcome) => outcome,
                Err(_) => StreamOutcome {
                    error: Some("timeout".into()),
                    total_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    ..Default::default()
                },
            }
        }));
    }
    barrier.wait().await;
    let launch = Instant::now();
    let mut outcomes = Vec::with_capacity(a.n);
    for t in tasks {
        outcomes.push(t.await.unwrap_or_else(|e| StreamOutcome { error: Some(format!("task: {e}")), ..Default::default() }));
    }
    let wall = launch.elapsed().as_secs_f64();
    let cpu_after = proc_ticks(a.pid).unwrap_or(cpu_before);
    let emu_after = a.emulator_pid.and_then(proc_ticks).unwrap_or(emu_before);
    let sys_after = sys_ticks();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().expect("sampler thread");
    let (rss_after, hwm) = proc_rss(a.pid).unwrap_or((0, 0));
    let _ = started;

    if let Some(path) = &a.rss_out {
        let text: String = samples.iter().map(|(ms, kib)| format!("{ms} {kib}\n")).collect();
        let _ = std::fs::write(path, text);
    }
    let rss_max = samples.iter().map(|(_, k)| *k).max().unwrap_or(0).max(rss_before).max(rss_after);

    let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
    let (mut ok, mut wrong_deltas, mut http_errors, mut incomplete) = (0, 0, 0, 0);
    let (mut firsts, mut totals) = (Vec::new(), Vec::new());
    for o in &outcomes {
        if o.status != 200 && o.status != 0 {
            http_errors += 1;
        }
        if let Some(e) = &o.error {
            let key: String = e.chars().take(120).collect();
            *by_error.entry(key).or_default() += 1;
        }
        if !o.done {
            incomplete += 1;
        }
        let deltas_ok = a.expect_deltas.is_none_or(|d| d == o.deltas);
        if !deltas_ok && o.done {
            wrong_deltas += 1;
        }
        if o.error.is_none() && o.done && deltas_ok {
            ok += 1;
        }
        if let Some(f) = o.first_token_ms {
            firsts.push(f);
        }
        totals.push(o.total_ms);
    }
    for (e, c) in &by_error {
        eprintln!("streams: {c} x {e}");
    }
    let (firsts, totals) = (sorted(firsts), sorted(totals));
    let tck = clock_ticks();
    let server_cpu = (cpu_after - cpu_before) as f64 / tck;
    let emu_cpu = (emu_after.saturating_sub(emu_before)) as f64 / tck;
    let sys_busy = (sys_after.0 - sys_before.0) as f64 / (sys_after.1 - sys_before.1).max(1) as f64 * ncpus();
    let mut f = BTreeMap::new();
    f.insert("n", a.n.to_string());
    f.insert("ok", ok.to_string());
    f.insert("errors", (a.n - ok).to_string());
    f.insert("http_errors", http_errors.to_string());
    f.insert("incomplete", incomplete.to_string());
    f.insert("wrong_deltas", wrong_deltas.to_string());
    f.insert("wall_s", format!("{wall:.3}"));
    f.insert("server_cpu_s", format!("{server_cpu:.3}"));
    f.insert("server_cores", format!("{:.3}", server_cpu / wall));
    f.insert("emulator_cpu_s", format!("{emu_cpu:.3}"));
    f.insert("sys_busy_cores", format!("{sys_busy:.2}"));
    f.insert("rss_before_mib", mib(rss_before));
    f.insert("rss_max_mib", mib(rss_max));
    f.insert("rss_after_mib", mib(rss_after));
    f.insert("rss_hwm_mib", mib(hwm));
    f.insert("first_token_p50_ms", format!("{:.1}", percentile(&firsts, 50.0)));
    f.insert("first_token_p99_ms", format!("{:.1}", percentile(&firsts, 99.0)));
    f.insert("total_p50_ms", format!("{:.1}", percentile(&totals, 50.0)));
    f.insert("total_p99_ms", format!("{:.1}", percentile(&totals, 99.0)));
    f.insert("total_max_ms", format!("{:.1}", totals.last().copied().unwrap_or(f64::NAN)));
    println!("{}", result_line("streams", &f));
}

// ---------------------------------------------------------------------------------------------
// monitor

fn monitor(groups: Vec<String>, skip_s: f64, window_s: f64, interval_ms: u64, while_pid: Option<u32>, rss_out: Option<PathBuf>) {
    let groups: Vec<(String, Vec<u32>)> = groups
        .iter()
        .map(|g| {
            let (name, pids) = g.split_once('=').unwrap_or_else(|| die(format!("--group {g}: expected name=pid,pid")));
            let pids = pids
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.trim().parse().unwrap_or_else(|_| die(format!("bad pid {p}"))))
                .collect();
            (name.to_owned(), pids)
        })
        .collect();
    let read_cpu = |pids: &[u32], last: &mut BTreeMap<u32, u64>| {
        for &p in pids {
            if let Some(t) = proc_ticks(p) {
                last.insert(p, t);
            }
        }
    };
    let started = Instant::now();
    let (skip, end) = (Duration::from_secs_f64(skip_s), Duration::from_secs_f64(skip_s + window_s));
    let every = Duration::from_millis(interval_ms);
    // (when, machine (busy, total) ticks, per group: ticks by pid)
    type Snapshot = (Instant, (u64, u64), Vec<BTreeMap<u32, u64>>);
    let mut first: Option<Snapshot> = None;
    let mut last: Option<Snapshot> = None;
    let mut rss_max = vec![0u64; groups.len()];
    let mut threads_max = vec![0u64; groups.len()];
    let mut rss_lines = String::new();
    loop {
        let now = started.elapsed();
        let alive = while_pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists() && !is_zombie(p));
        if !alive {
            break;
        }
        let mut line = format!("{}", now.as_millis());
        for (i, (_, pids)) in groups.iter().enumerate() {
            let rss: u64 = pids.iter().filter_map(|&p| proc_rss(p)).map(|(r, _)| r).sum();
            rss_max[i] = rss_max[i].max(rss);
            if let Some(t) = pids.first().and_then(|&p| proc_threads(p)) {
                threads_max[i] = threads_max[i].max(t);
            }
            let _ = write!(line, " {rss}");
        }
        rss_lines.push_str(&line);
        rss_lines.push('\n');
        if now >= skip && now <= end {
            let mut cpu: Vec<BTreeMap<u32, u64>> = Vec::new();
            for (i, (_, pids)) in groups.iter().enumerate() {
                let mut m = last.as_ref().map(|l| l.2[i].clone()).unwrap_or_default();
                read_cpu(pids, &mut m);
                cpu.push(m);
            }
            let snap = (Instant::now(), sys_ticks(), cpu);
            if first.is_none() {
                first = Some(snap.clone());
            }
            last = Some(snap);
        }
        if now > end && while_pid.is_none() {
            break;
        }
        std::thread::sleep(every);
    }
    if let Some(path) = rss_out {
        let header = format!("# ms {}\n", groups.iter().map(|(n, _)| format!("{n}_kib")).collect::<Vec<_>>().join(" "));
        let _ = std::fs::write(path, header + &rss_lines);
    }
    let mut f = BTreeMap::new();
    let tck = clock_ticks();
    match (first, last) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let secs = (b.0 - a.0).as_secs_f64();
            f.insert("window_s", format!("{secs:.2}"));
            let sys = (b.1 .0 - a.1 .0) as f64 / (b.1 .1 - a.1 .1).max(1) as f64 * ncpus();
            f.insert("sys_busy_cores", format!("{sys:.2}"));
            let mut known = 0.0;
            for (i, (name, _)) in groups.iter().enumerate() {
                let ticks: u64 = b.2[i].iter().map(|(p, t)| t.saturating_sub(a.2[i].get(p).copied().unwrap_or(*t))).sum();
                let cores = ticks as f64 / tck / secs;
                known += cores;
                f.insert(leak(format!("{name}_cores")), format!("{cores:.2}"));
            }
            f.insert("other_cores", format!("{:.2}", (sys - known).max(0.0)));
        }
        _ => {
            f.insert("window_s", "0".into());
        }
    }
    for (i, (name, _)) in groups.iter().enumerate() {
        f.insert(leak(format!("{name}_rss_max_mib")), mib(rss_max[i]));
        f.insert(leak(format!("{name}_threads_max")), threads_max[i].to_string());
    }
    println!("{}", result_line("monitor", &f));
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

// ---------------------------------------------------------------------------------------------
// startup

fn startup(bin: PathBuf, runs: usize, port: u16, workdir: PathBuf, poll_us: u64) {
    let mut times = Vec::new();
    let mut rss_ready = Vec::new();
    let mut rss_idle = Vec::new();
    let mut attempts_total = 0u64;
    for run in 0..runs {
        let dir = workdir.join(format!("startup-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(format!("cannot create {}: {e}", dir.display())));
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        let mut cmd = Process::new(&bin);
        cmd.env_remove("DATABASE_URL")
            .env("DATA_DIR", dir.join("data"))
            .env("LOG_DIR", dir.join("logs"))
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| die(format!("cannot start {}: {e}", bin.display())));
        let pid = child.id();
        let mut attempts = 0u64;
        let elapsed = loop {
            attempts += 1;
            if health_ok(port) {
                break started.elapsed();
            }
            if let Ok(Some(status)) = child.try_wait() {
                die(format!("server exited with {status} before it was healthy; see {}", dir.join("server.log").display()));
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                die("server not healthy within 30 s");
            }
            std::thread::sleep(Duration::from_micros(poll_us));
        };
        attempts_total += attempts;
        let ms = elapsed.as_secs_f64() * 1000.0;
        rss_ready.push(proc_rss(pid).map(|r| r.0).unwrap_or(0) as f64);
        std::thread::sleep(Duration::from_millis(500));
        rss_idle.push(proc_rss(pid).map(|r| r.0).unwrap_or(0) as f64);
        eprintln!("startup run {run}: healthy after {ms:.2} ms ({attempts} attempts)");
        times.push(ms);
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let all: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    let times = sorted(times);
    let (rss_ready, rss_idle) = (sorted(rss_ready), sorted(rss_idle));
    let mut f = BTreeMap::new();
    f.insert("runs", runs.to_string());
    f.insert("median_ms", format!("{:.2}", percentile(&times, 50.0)));
    f.insert("min_ms", format!("{:.2}", times.first().copied().unwrap_or(f64::NAN)));
    f.insert("max_ms", format!("{:.2}", times.last().copied().unwrap_or(f64::NAN)));
    f.insert("all_ms", all.join(","));
    f.insert("poll_attempts", attempts_total.to_string());
    f.insert("rss_ready_mib", format!("{:.1}", percentile(&rss_ready, 50.0) / 1024.0));
    f.insert("rss_idle_mib", format!("{:.1}", percentile(&rss_idle, 50.0) / 1024.0));
    println!("{}", result_line("startup", &f));
}

/// One blocking GET /api/v1/health; true on a 200.
fn health_ok(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    &head == b"HTTP/1.1 200"
}

// ---------------------------------------------------------------------------------------------
// argon2

fn argon2_rate(max_threads: usize, seconds: f64) {
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(19 * 1024, 2, 1, None).expect("params");
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::encode_b64(b"benchmark-salt-16").expect("salt");
    let hash = hasher.hash_password(b"Bench-pass-2024!", &salt).expect("hash").to_string();
    let mut f = BTreeMap::new();
    for threads in 1..=max_threads.max(1) {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let hash = hash.clone();
                std::thread::spawn(move || {
                    let parsed = PasswordHash::new(&hash).expect("parse");
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        Argon2::default().verify_password(b"Bench-pass-2024!", &parsed).expect("verify");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let n: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        let secs = started.elapsed().as_secs_f64();
        f.insert(leak(format!("t{threads}_per_s")), format!("{:.1}", n as f64 / secs));
        f.insert(leak(format!("t{threads}_ms_each")), format!("{:.1}", secs * 1000.0 * threads as f64 / n.max(1) as f64));
    }
    println!("{}", result_line("argon2", &f));
}

// ---------------------------------------------------------------------------------------------
// pgbench logs

fn pglog(files: Vec<PathBuf>) {
    let mut lat = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| die(format!("cannot read {}: {e}", path.display())));
        // client_id transaction_no time(us) script_no time_epoch time_us [schedule_lag]
        lat.extend(
            text.lines().filter_map(|l| l.split_whitespace().nth(2)).filter_map(|v| v.parse::<f64>().ok()).map(|us| us / 1000.0),
        );
    }
    let lat = sorted(lat);
    let mut f = BTreeMap::new();
    f.insert("transactions", lat.len().to_string());
    f.insert("p50_ms", format!("{:.2}", percentile(&lat, 50.0)));
    f.insert("p99_ms", format!("{:.2}", percentile(&lat, 99.0)));
    println!("{}", result_line("pglog", &f));
}
