//! Prometheus metrics, served at `GET /metrics` to the holders of `METRICS_TOKEN` or, without
//! one, to the addresses of `METRICS_ALLOW`.
//!
//! Counters and histograms go to the process's `metrics` recorder as things happen; the gauges
//! of the server's own state (generations running, pool connections, upstream health) are read
//! when the page is rendered. Every label value comes from a fixed set: routes as declared
//! (never the raw path), models from the upstream's own list (else `other`).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::background::BackgroundTasks;
use crate::config::MetricsAccess;
use crate::error::ApiError;
use crate::services::generation::{EndStatus, Ending};
use crate::state::AppState;
use crate::store::Pool;

const HTTP_REQUESTS: &str = "rovertchat_http_requests_total";
const HTTP_DURATION: &str = "rovertchat_http_request_duration_seconds";
const GENERATIONS_ACTIVE: &str = "rovertchat_generations_active";
const TIME_TO_FIRST_TOKEN: &str = "rovertchat_generation_time_to_first_token_seconds";
const GENERATION_TOKENS: &str = "rovertchat_generation_tokens_total";
const GENERATIONS: &str = "rovertchat_generations_total";
const UPSTREAM_UP: &str = "rovertchat_upstream_up";
const DB_POOL_CONNECTIONS: &str = "rovertchat_db_pool_connections";
const RATE_LIMITED: &str = "rovertchat_rate_limited_total";
const LOGINS: &str = "rovertchat_logins_total";

/// The route label of requests no route matched (the SPA's files have their own).
const UNMATCHED_ROUTE: &str = "unmatched";
/// The route label of the SPA's files (`FRONTEND_DIR`).
pub const FRONTEND_ROUTE: &str = "frontend";
/// The model label of a model the upstream does not list.
const OTHER_MODEL: &str = "other";

const HTTP_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const TTFT_BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The model names the providers listed last (as `name:tag`).
static KNOWN_MODELS: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(RwLock::default);

/// Installs the process's recorder (once; later calls return the same handle).
pub fn install() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &HTTP_BUCKETS)
            .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(TIME_TO_FIRST_TOKEN.into()), &TTFT_BUCKETS))
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics shows only the gauges");
        }
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, matched route and status.");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request (to its first byte for streams), by route."
    );
    describe_gauge!(GENERATIONS_ACTIVE, "Model answers being generated now.");
    describe_histogram!(TIME_TO_FIRST_TOKEN, Unit::Seconds, "Time from a generation's start to its first token, by model.");
    describe_counter!(GENERATION_TOKENS, "Tokens of ended generations, by model and kind (prompt or completion).");
    describe_counter!(GENERATIONS, "Ended generations, by model and status (completed, length, stopped, failed).");
    describe_gauge!(UPSTREAM_UP, "1 when the provider answered its last probe (and no request failed on it since), else 0.");
    describe_gauge!(DB_POOL_CONNECTIONS, "Database pool connections, by state (idle, in_use).");
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by limit.");
    describe_counter!(LOGINS, "Login attempts, by result.");
}

/// Replaces the models that get their own label.
pub fn know_models(names: impl IntoIterator<Item = String>) {
    let names: HashSet<String> = names.into_iter().collect();
    *KNOWN_MODELS.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = names;
}

/// The label of `model`: its name as the upstream lists it (`llama3` is `llama3:latest`), or
/// `other` for a name the upstream does not list, so that clients cannot grow the label set.
pub fn model_label(model: &str) -> String {
    let known = KNOWN_MODELS.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    if known.contains(model) {
        return model.to_owned();
    }
    if !model.contains(':') {
        let tagged = format!("{model}:latest");
        if known.contains(&tagged) {
            return tagged;
        }
    }
    OTHER_MODEL.to_owned()
}

/// Counts a generation's end and its tokens (the upstream's counts; without them, the pieces
/// it sent), times its first token, and logs a failure with its cause.
pub fn generation_ended(model: &str, ending: &Ending, pieces: u64, first_token_after: Option<Duration>) {
    let model = model_label(model);
    if let Some(after) = first_token_after {
        histogram!(TIME_TO_FIRST_TOKEN, "model" => model.clone()).record(after.as_secs_f64());
    }
    let counts = ending.final_chunk.as_ref();
    let prompt = counts.and_then(|c| c.prompt_eval_count).unwrap_or(0);
    let completion = counts.and_then(|c| c.eval_count).unwrap_or(pieces);
    counter!(GENERATIONS, "model" => model.clone(), "status" => ending.status.as_str()).increment(1);
    counter!(GENERATION_TOKENS, "model" => model.clone(), "kind" => "prompt").increment(prompt);
    counter!(GENERATION_TOKENS, "model" => model, "kind" => "completion").increment(completion);
    if let (EndStatus::Failed, Some(err)) = (ending.status, &ending.error) {
        tracing::warn!(cause = %err, produced_anything = ending.produced_anything, "a generation failed");
    }
}

/// A request refused by `limit` (a rate limit's name).
pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// A login attempt's result: `success`, `incorrect`, `inactive`, `rate_limited` or `error`.
pub fn login(result: &'static str) {
    counter!(LOGINS, "result" => result).increment(1);
}

/// Marks a response as one of the SPA's files, for its route label.
#[derive(Clone, Copy)]
pub struct FrontendFile;

/// Counts and times every request by its matched route.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    let route = route.unwrap_or_else(|| {
        let frontend = response.extensions().get::<FrontendFile>().is_some();
        if frontend { FRONTEND_ROUTE } else { UNMATCHED_ROUTE }.to_owned()
    });
    let status = response.status().as_u16().to_string();
    histogram!(HTTP_DURATION, "route" => route.clone()).record(started.elapsed().as_secs_f64());
    counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status).increment(1);
    response
}

/// The standard methods by name; any other is `other` (a client can send any word).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`: the Prometheus text format, for the allowed callers only.
pub async fn render(State(state): State<AppState>, request: Request) -> Response {
    let peer =
        request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    if let Err(refusal) = admit(&state, request.headers(), peer) {
        return refusal.into_response();
    }
    gauge!(GENERATIONS_ACTIVE).set(state.generations.running_count() as f64);
    // Provider names are set by admins: a bounded set.
    for (provider, healthy) in state.upstreams.health_by_name() {
        gauge!(UPSTREAM_UP, "provider" => provider).set(if healthy { 1.0 } else { 0.0 });
    }
    let (size, idle) = match state.store.pool() {
        Pool::Postgres(pool) => (pool.size(), pool.num_idle()),
        Pool::Sqlite(pool) => (pool.size(), pool.num_idle()),
    };
    let idle = idle as f64;
    gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set((f64::from(size) - idle).max(0.0));
    let body = install().render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body).into_response()
}

/// With a token, its holders; else the allowed client addresses, reached directly or through a
/// trusted proxy (a request forwarded by any other proxy is refused: to a proxy on the same
/// host, every client would look like loopback).
fn admit(state: &AppState, headers: &HeaderMap, peer: IpAddr) -> Result<(), ApiError> {
    match &state.config.metrics_access {
        MetricsAccess::Token(token) => {
            let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            if sent.is_some_and(|sent| same_secret(sent.trim().as_bytes(), token.expose().as_bytes())) {
                return Ok(());
            }
            Err(ApiError::NotAuthenticated)
        }
        MetricsAccess::Addresses(allowed) => {
            let forwarded = ["x-forwarded-for", "x-real-ip", "forwarded"].iter().any(|name| headers.contains_key(*name));
            let limits = &state.rate_limits;
            let client = limits.client_ip(headers, peer);
            let through_unknown_proxy = forwarded && !limits.is_trusted_proxy(&peer);
            if !through_unknown_proxy && allowed.iter().any(|net| net.contains(&client)) {
                return Ok(());
            }
            Err(ApiError::Forbidden("Forbidden"))
        }
    }
}

/// Compares in time that depends only on the lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// Keeps the histograms' memory bounded between scrapes.
pub fn spawn_upkeep(tasks: &BackgroundTasks) {
    tasks.every(Duration::from_secs(5), || install().run_upkeep());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_the_upstream_does_not_list_share_one_label() {
        know_models(["tiny-test:latest".to_owned(), "big:7b".to_owned()]);
        assert_eq!(model_label("tiny-test"), "tiny-test:latest");
        assert_eq!(model_label("big:7b"), "big:7b");
        assert_eq!(model_label("big"), "other");
        assert_eq!(model_label("made-up-by-a-client\n"), "other");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
