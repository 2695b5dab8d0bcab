//! What an operator watches: `/metrics` after a known sequence of requests, request ids in the
//! responses and the log, JSON logs, and `rovertchat check`.

use std::collections::HashSet;

use ollama_emulator::Emulator;
use reqwest::StatusCode;
use serde_json::{json, Value};

use rovertchat::config::{DatabaseConfig, Secret};

use crate::on_both_databases;
use crate::support::process::{rovertchat, ServerProcess};
use crate::support::{create_pg_database, Backend, StreamReader, TestApp};

/// The value of the sample `name{labels}` of a Prometheus text page (labels in any order).
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, "}"));
        let series_labels: HashSet<&str> = series_labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
        let wanted: HashSet<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let same = series_name == name
            && series_labels.len() == wanted.len()
            && wanted.iter().all(|label| series_labels.contains(label.as_str()));
        same.then(|| value.parse().ok()).flatten()
    })
}

#[track_caller]
fn assert_sample(page: &str, name: &str, labels: &[(&str, &str)], expected: f64) {
    assert_eq!(sample(page, name, labels), Some(expected), "{name}{labels:?} in:\n{page}");
}

async fn metrics_count_a_known_sequence_of_requests(backend: Backend) {
    let emulator = Emulator::start().await;
    let settings = [("RATE_LIMITS", "on"), ("RATE_LIMIT_PROFILE_READ", "1/minute")];
    let server = ServerProcess::start_on(backend, emulator.base_url(), &settings).await;
    let client = reqwest::Client::new();
    let url = |path: &str| server.url(path);

    let token = server.sign_up("bob_user");
    let wrong = client.post(url("/auth/login")).form(&[("username", "bob_user"), ("password", "wrong-Password-1")]).send().await;
    assert_eq!(wrong.unwrap().status(), StatusCode::UNAUTHORIZED);
    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        assert_eq!(client.get(url("/users/me")).bearer_auth(&token).send().await.unwrap().status(), expected);
    }
    let missing_chat = "00000000-0000-4000-8000-00000000abcd";
    let missing = client.get(url(&format!("/chats/chat/{missing_chat}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(client.get(url("/no/such/route")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let chat = client.post(url("/chats/my")).bearer_auth(&token).send().await.unwrap().json::<Value>().await.unwrap();
    let chat = chat["id"].as_str().unwrap().to_owned();
    let completions = url(&format!("/chats/{chat}/completions"));
    let answer = StreamReader::open_request(
        client.post(&completions).bearer_auth(&token).json(&json!({"model": "llama3.2:1b", "content": "hello"})),
    )
    .await
    .rest()
    .await;
    assert_eq!(answer.last().unwrap().data["status"], "completed");
    // A model the upstream does not have: the client's name must not become a label.
    let refused = client
        .post(url("/ollama/chat"))
        .bearer_auth(&token)
        .json(&json!({"model": "made-up-by-a-client:1b", "chatId": chat, "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);

    let page = client.get(format!("http://{}/metrics", server.address)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let page = page.text().await.unwrap();

    let requests = "rovertchat_http_requests_total";
    assert_sample(&page, requests, &[("method", "POST"), ("route", "/api/v1/auth/register"), ("status", "201")], 1.0);
    assert_sample(&page, requests, &[("method", "POST"), ("route", "/api/v1/auth/login"), ("status", "401")], 1.0);
    assert_sample(&page, requests, &[("method", "GET"), ("route", "/api/v1/users/me"), ("status", "429")], 1.0);
    assert_sample(&page, requests, &[("method", "GET"), ("route", "/api/v1/chats/chat/{chat_id}"), ("status", "404")], 1.0);
    assert_sample(&page, requests, &[("method", "GET"), ("route", "unmatched"), ("status", "404")], 1.0);
    assert_sample(&page, "rovertchat_http_request_duration_seconds_count", &[("route", "/api/v1/users/me")], 2.0);
    assert!(!page.contains(missing_chat) && !page.contains(&chat) && !page.contains("/no/such/route"), "raw paths in:\n{page}");

    assert_sample(&page, "rovertchat_logins_total", &[("result", "success")], 1.0);
    assert_sample(&page, "rovertchat_logins_total", &[("result", "incorrect")], 1.0);
    assert_sample(&page, "rovertchat_rate_limited_total", &[("limit", "profile_read")], 1.0);

    let model = [("model", "llama3.2:1b")];
    assert_sample(&page, "rovertchat_generations_total", &[model[0], ("status", "completed")], 1.0);
    assert_sample(&page, "rovertchat_generations_total", &[("model", "other"), ("status", "failed")], 1.0);
    assert!(!page.contains("made-up-by-a-client"), "{page}");
    assert_sample(&page, "rovertchat_generation_time_to_first_token_seconds_count", &model, 1.0);
    let completion = sample(&page, "rovertchat_generation_tokens_total", &[model[0], ("kind", "completion")]).unwrap();
    let prompt = sample(&page, "rovertchat_generation_tokens_total", &[model[0], ("kind", "prompt")]).unwrap();
    assert!(completion > 0.0 && prompt > 0.0, "{page}");
    assert_sample(&page, "rovertchat_generations_active", &[], 0.0);
    assert_sample(&page, "rovertchat_upstream_up", &[("provider", "default")], 1.0);
    assert!(sample(&page, "rovertchat_db_pool_connections", &[("state", "idle")]).is_some(), "{page}");
    assert!(sample(&page, "rovertchat_db_pool_connections", &[("state", "in_use")]).is_some(), "{page}");
    assert!(page.contains("# TYPE rovertchat_http_request_duration_seconds histogram"), "{page}");
    assert!(page.contains("# TYPE rovertchat_generation_time_to_first_token_seconds histogram"), "{page}");
}

async fn metrics_need_the_token_when_one_is_set(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("METRICS_TOKEN", "scrape-secret-0123456789".into())]).await;
    let metrics = format!("{}/metrics", app.address);
    let anonymous = app.client.get(&metrics).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = app.client.get(&metrics).bearer_auth("scrape-secret-wrong").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = app.client.get(&metrics).bearer_auth("scrape-secret-0123456789").send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.unwrap().contains("rovertchat_upstream_up{provider=\"default\"} 1"));
}

async fn metrics_without_a_token_answer_only_the_allowed_addresses(backend: Backend) {
    let loopback = TestApp::spawn(backend).await;
    let metrics = format!("{}/metrics", loopback.address);
    assert_eq!(loopback.client.get(&metrics).send().await.unwrap().status(), StatusCode::OK);
    // Forwarded by a proxy that is not trusted: the client could be anyone.
    let forwarded = loopback.client.get(&metrics).header("x-forwarded-for", "127.0.0.1").send().await.unwrap();
    assert_eq!(forwarded.status(), StatusCode::FORBIDDEN);

    let elsewhere = TestApp::spawn_with(backend, vec![("METRICS_ALLOW", "10.0.0.0/8".into())]).await;
    let refused = elsewhere.client.get(format!("{}/metrics", elsewhere.address)).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({"detail": "Forbidden"}));
    // Through a trusted proxy, the client it names counts.
    let behind_proxy =
        TestApp::spawn_with(backend, vec![("METRICS_ALLOW", "10.0.0.0/8".into()), ("TRUSTED_PROXIES", "127.0.0.1".into())]).await;
    let via_proxy =
        behind_proxy.client.get(format!("{}/metrics", behind_proxy.address)).header("x-real-ip", "10.1.2.3").send().await;
    assert_eq!(via_proxy.unwrap().status(), StatusCode::OK);
}

on_both_databases!(
    metrics_count_a_known_sequence_of_requests,
    metrics_need_the_token_when_one_is_set,
    metrics_without_a_token_answer_only_the_allowed_addresses,
);

#[tokio::test]
async fn every_response_carries_a_request_id_a_fresh_one_unless_a_trusted_proxy_sent_it() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut seen = HashSet::new();
    for response in [
        app.get("/health").send().await,
        app.get("/no/such/route").send().await,
        app.patch("/health").send().await,
        app.get("/users/me").send().await,
        app.post("/auth/register").json(&json!({})).send().await,
        app.get("/health").header("x-request-id", "made-up-by-the-client").send().await,
    ] {
        let id = response.header("x-request-id").unwrap_or_else(|| panic!("no request id on {}", response.status));
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert!(seen.insert(id.to_owned()), "ids are unique");
    }

    let behind_proxy = TestApp::spawn_with(Backend::Sqlite, vec![("TRUSTED_PROXIES", "127.0.0.1".into())]).await;
    let kept = behind_proxy.get("/health").header("x-request-id", "edge-42.a_b:c").send().await;
    assert_eq!(kept.header("x-request-id"), Some("edge-42.a_b:c"));
    let not_plain = behind_proxy.get("/health").header("x-request-id", "a b\"c").send().await;
    assert!(uuid::Uuid::parse_str(not_plain.header("x-request-id").unwrap()).is_ok());
}

/// A request's lines, its failure's cause included, carry its id: from a response's header to
/// the log lines that explain it.
#[test]
fn the_request_id_of_a_response_is_on_each_log_line_of_its_request() {
    let mut server = ServerProcess::start(&[("TRUSTED_PROXIES", "127.0.0.1")]);
    let token = server.sign_up("bob_user");
    let response = server.exchange(&format!(
        "GET /api/v1/ollama/tags HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         X-Request-Id: trace-from-the-edge-1\r\n\r\n"
    ));
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(response.to_ascii_lowercase().contains("x-request-id: trace-from-the-edge-1"), "{response}");
    let cause = server.wait_for_log("the upstream failed");
    assert!(cause.contains("WARN") && cause.contains("request_id=trace-from-the-edge-1"), "{cause}");
    assert!(cause.contains("Cannot connect to Ollama"), "{cause}");
    let end = server.wait_for_log("status=502");
    assert!(end.contains("WARN") && end.contains("request_id=trace-from-the-edge-1") && end.contains("user_id="), "{end}");

    let generated = server.exchange("GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let id = generated
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("x-request-id: ").map(str::to_owned))
        .expect("a request id");
    let line = server.wait_for_log(&format!("request_id={id}"));
    assert!(line.contains("status=200"), "{line}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_fields() {
    let mut server = ServerProcess::start(&[("LOG_FORMAT", "json"), ("TRUSTED_PROXIES", "127.0.0.1")]);
    let token = server.sign_up("bob_user");
    let response = server.exchange(&format!(
        "GET /api/v1/users/me HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         X-Request-Id: json-trace-7\r\n\r\n"
    ));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let line = server.wait_for_log("json-trace-7");
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["message"], "request");
    assert_eq!(event["fields"]["status"], 200);
    assert!(event["fields"]["latency_us"].is_u64(), "{line}");
    assert_eq!(event["span"]["request_id"], "json-trace-7");
    assert_eq!(event["span"]["route"], "/api/v1/users/me");
    assert!(uuid::Uuid::parse_str(event["span"]["user_id"].as_str().unwrap_or_default()).is_ok(), "{line}");
    for earlier in [server.wait_for_log("rovertchat starting"), server.wait_for_log("upstream unreachable")] {
        let event: Value = serde_json::from_str(&earlier).unwrap_or_else(|err| panic!("{err}: {earlier}"));
        assert!(event["fields"]["message"].is_string(), "{earlier}");
    }
}

#[test]
fn startup_says_what_a_newcomer_needs() {
    let mut server = ServerProcess::start(&[]);
    let version = server.wait_for_log("rovertchat starting");
    assert!(version.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{version}");
    let database = server.wait_for_log("database ready");
    assert!(database.contains("backend=\"sqlite\"") && database.contains("rovertchat.db"), "{database}");
    let upstream = server.wait_for_log("upstream unreachable");
    assert!(upstream.contains("WARN") && upstream.contains("http://127.0.0.1:9"), "{upstream}");
    let address = server.address;
    assert!(server.wait_for_log("rovertchat listening").contains(&format!("url=http://{address}")));
    assert!(server.wait_for_log("API documentation").contains(&format!("http://{address}/docs")));
    server.wait_for_log("no web UI served");
}

/// `rovertchat check` against a fresh and a migrated database; a dead upstream fails it.
async fn check_reports_one_line_each_and_fails_for_a_dead_upstream(backend: Backend) {
    let emulator = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Postgres => Some(create_pg_database().await),
        Backend::Sqlite => None,
    };
    let run = |ollama: &str, args: &[&str]| {
        let mut command = rovertchat(dir.path());
        command.env("OLLAMA_BASE_URL", ollama).env("OLLAMA_CONNECT_TIMEOUT_SECS", "2").args(args);
        if let Some(database) = &database {
            command.env("DATABASE_URL", &database.url);
        }
        let output = command.output().unwrap();
        (output.status.code(), String::from_utf8(output.stdout).unwrap())
    };

    let (code, fresh) = run(&emulator.base_url(), &["check"]);
    assert_eq!(code, Some(0), "{fresh}");
    let lines: Vec<&str> = fresh.lines().collect();
    assert!(lines[0].starts_with("ok   config: valid"), "{fresh}");
    assert!(lines[1].starts_with("ok   database: "), "{fresh}");
    assert_eq!(lines.len(), 4, "{fresh}");
    assert!(lines[2].starts_with("ok   migrations: ") && lines[2].contains(" pending; applied at the "), "{fresh}");
    assert!(lines.last().unwrap().starts_with("ok   upstream default: reachable at"), "{fresh}");

    assert_eq!(run(&emulator.base_url(), &["migrate"]).0, Some(0));
    let (code, migrated) = run(&emulator.base_url(), &["check"]);
    assert_eq!(code, Some(0), "{migrated}");
    assert_eq!(migrated.lines().count(), 4, "{migrated}");
    assert!(migrated.contains("ok   migrations: none pending"), "{migrated}");

    let (code, dead) = run("http://127.0.0.1:9", &["check"]);
    assert_eq!(code, Some(1), "{dead}");
    let last = dead.lines().last().unwrap();
    assert!(last.starts_with("FAIL upstream default: Cannot connect to Ollama") && last.contains("127.0.0.1:9"), "{dead}");

    // The providers of the database are checked as the server sees them.
    let store = match &database {
        Some(database) => {
            rovertchat::store::Store::connect(&DatabaseConfig::Postgres { url: Secret::new(&database.url) }, 1).await
        }
        None => {
            rovertchat::store::Store::connect(&DatabaseConfig::Sqlite { path: dir.path().join("data/rovertchat.db") }, 1).await
        }
    }
    .unwrap();
    store.ensure_ollama_provider(&emulator.base_url(), ["default".to_owned()]).await.unwrap();
    store.ensure_ollama_provider("http://127.0.0.1:9", ["spare".to_owned()]).await.unwrap();
    store.close().await;
    let (code, providers) = run(&emulator.base_url(), &["check"]);
    assert_eq!(code, Some(1), "{providers}");
    let upstreams: Vec<&str> = providers.lines().skip(3).collect();
    assert_eq!(upstreams.len(), 2, "{providers}");
    assert!(upstreams.iter().any(|l| l.starts_with("ok   upstream default: reachable at")), "{providers}");
    assert!(upstreams.iter().any(|l| l.starts_with("FAIL upstream spare: ") && l.contains("127.0.0.1:9")), "{providers}");

    let (code, bad) = run(&emulator.base_url(), &["check", "--port", "eighty"]);
    assert_eq!((code, bad.trim_end()), (Some(1), "FAIL config: PORT: expected a port number (0-65535), got \"eighty\""));
}

on_both_databases!(check_reports_one_line_each_and_fails_for_a_dead_upstream);
