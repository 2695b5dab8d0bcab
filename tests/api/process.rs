//! The binary as a person runs it: configuration errors, `migrate`, and limits that only a
//! real server process shows.

use std::process::Command;
use std::time::{Duration, Instant};

use ollama_emulator::Knobs;
use serde_json::Value;

use crate::on_both_databases;
use crate::support::{Backend, SseEvent, StreamReader, TestApp, PASSWORD};

fn deltas(events: &[SseEvent]) -> String {
    events.iter().filter(|e| e.event == "delta").filter_map(|e| e.data["content"].as_str()).collect()
}

fn rovertchat(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rovertchat"));
    command.current_dir(dir).env_clear().env("DATA_DIR", dir.join("data")).env("LOG_DIR", dir.join("logs"));
    command
}

#[test]
fn a_bad_setting_stops_startup_with_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value, expected) in [
        ("PORT", "eighty", "configuration error: PORT: expected a port number (0-65535), got \"eighty\""),
        ("DATABASE_URL", "mysql://localhost/x", "configuration error: DATABASE_URL: unsupported scheme \"mysql\""),
        ("JWT_ALGORITHM", "RS256", "configuration error: JWT_ALGORITHM: only HMAC algorithms"),
    ] {
        let output = rovertchat(dir.path()).env(name, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with(expected), "{name}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    }
    let production = rovertchat(dir.path()).env("ENVIRONMENT", "production").output().unwrap();
    assert_eq!(production.status.code(), Some(2));
    assert!(String::from_utf8(production.stderr).unwrap().contains("JWT_SECRET_KEY: is required in production"));
}

#[test]
fn migrate_prepares_an_embedded_database_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = rovertchat(dir.path()).arg("migrate").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("data/rovertchat.db").exists());
    let again = rovertchat(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success(), "migrating twice is a no-op");
}

on_both_databases!(slow_non_streaming_requests_are_cut_off, oversized_headers_are_refused);

async fn slow_non_streaming_requests_are_cut_off(app: TestApp) {
    // An "Ollama" that accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = black_hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    let stuck = TestApp::spawn_with(
        app.backend,
        vec![("REQUEST_TIMEOUT_SECS", "1".into()), ("OLLAMA_BASE_URL", format!("http://{address}"))],
    )
    .await;
    let (_, session) = stuck.signed_up("bob_user").await;
    let started = std::time::Instant::now();
    stuck.get("/ollama/version").session(&session).send().await.assert_detail(503, "Request timed out");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Streaming routes are not cut: the answer's length is the model's.
    let patient = TestApp::spawn_with(app.backend, vec![("REQUEST_TIMEOUT_SECS", "1".into())]).await;
    let (_, s) = patient.signed_up("bob_user").await;
    patient.emulator.set_knobs(Knobs { first_token_delay: Duration::from_millis(1500), ..Knobs::default() });
    let chat = patient.new_chat(&s, None).await;
    let answer = patient
        .post("/ollama/chat")
        .session(&s)
        .json(&serde_json::json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "slow"}]}))
        .send()
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

async fn oversized_headers_are_refused(app: TestApp) {
    let response = app.get("/health").header("x-padding", &"a".repeat(512 * 1024)).builder().send().await;
    // Either an error status, or the server closed the connection: both are refusals.
    if let Ok(r) = response {
        assert!(r.status() == 431 || r.status() == 400, "{}", r.status());
    }
    assert_eq!(app.get("/health").send().await.status, 200, "the server is still fine");
}

on_both_databases!(a_long_answer_costs_the_server_memory_of_its_text_only);

/// The server binary, started on a free port; killed when dropped.
struct ServerProcess {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
    _database: Option<crate::support::PgDatabase>,
}

impl ServerProcess {
    async fn start(app: &TestApp, vars: &[(&str, &str)]) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let database = match app.backend {
            Backend::Postgres => Some(crate::support::create_pg_database().await),
            Backend::Sqlite => None,
        };
        let mut command = rovertchat(dir.path());
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("JWT_SECRET_KEY", crate::support::ACCESS_SECRET)
            .env("JWT_REFRESH_SECRET_KEY", crate::support::REFRESH_SECRET)
            .env("OLLAMA_BASE_URL", app.emulator.base_url())
            .env("RATE_LIMITS", "off")
            .env("LOG_LEVEL", "warn")
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(database) = &database {
            command.env("DATABASE_URL", &database.url);
        }
        let server = ServerProcess {
            child: command.spawn().expect("the server binary starts"),
            address: format!("http://127.0.0.1:{port}/api/v1"),
            _dir: dir,
            _database: database,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = format!("{}/health", server.address);
        while !reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the server did not answer /health within a minute");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc/<pid>/status");
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
        line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("a number of kB")
    }

    fn rss_kb(&self) -> u64 {
        self.status_kb("VmRSS:")
    }

    /// Starts measuring the peak (VmHWM) anew; false where the kernel does not allow it.
    fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").is_ok()
    }

    /// The resident size once it has stopped moving (e.g. after freed buffers are returned),
    /// waiting at most ten seconds.
    async fn settled_rss_kb(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut last, mut steady_since) = (self.rss_kb(), Instant::now());
        while Instant::now() < deadline && steady_since.elapsed() < Duration::from_millis(1500) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.rss_kb();
            if now.abs_diff(last) > 256 {
                steady_since = Instant::now();
            }
            last = now;
        }
        last
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 200,000-token answer, followed live by a watcher that stops reading: the server's memory
/// grows by about the answer's text (not per chunk), and returns near where it was at the end.
async fn a_long_answer_costs_the_server_memory_of_its_text_only(app: TestApp) {
    const TOKENS: usize = 200_000;
    let server = ServerProcess::start(&app, &[("MAX_ANSWER_TOKENS", "1000000")]).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.address);
    let account = serde_json::json!({"username": "bob_user", "email": "bob@example.com", "password": PASSWORD});
    assert_eq!(client.post(url("/auth/register")).json(&account).send().await.unwrap().status(), 201);
    let login = client.post(url("/auth/login")).form(&[("username", "bob_user"), ("password", PASSWORD)]).send().await.unwrap();
    let token = login.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let new_chat = || async {
        let chat = client.post(url("/chats/my")).bearer_auth(&token).send().await.unwrap().json::<Value>().await.unwrap();
        chat["id"].as_str().unwrap().to_owned()
    };
    let complete = |chat: String| {
        let request = client.post(url(&format!("/chats/{chat}/completions"))).bearer_auth(&token);
        async move {
            StreamReader::open_request(request.json(&serde_json::json!({"model": "llama3.2:1b", "content": "long answer"}))).await
        }
    };

    // A first answer warms up every path an answer takes (pools, buffers, code).
    app.emulator.set_knobs(Knobs { tokens: Some(1000), ..Knobs::default() });
    let warm_up = complete(new_chat().await).await.rest().await;
    assert_eq!(warm_up.last().unwrap().event, "done");
    let chat = new_chat().await;
    let baseline = server.settled_rss_kb().await;
    let hwm_measured = server.reset_peak();

    app.emulator.set_knobs(Knobs { tokens: Some(TOKENS), ..Knobs::default() });
    let mut stream = complete(chat.clone()).await;
    assert_eq!(stream.next_event().await.unwrap().event, "start");
    let mut joined = deltas(&[stream.next_event().await.unwrap()]);
    // The client reads nothing more until the answer is stored.
    let mut sampled_peak = baseline;
    let deadline = Instant::now() + Duration::from_secs(300);
    let generation = url(&format!("/chats/{chat}/generation"));
    while client.get(&generation).bearer_auth(&token).send().await.unwrap().status() == 200 {
        sampled_peak = sampled_peak.max(server.rss_kb());
        assert!(Instant::now() < deadline, "the answer took more than five minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest = stream.rest().await;
    drop(stream);
    joined.push_str(&deltas(&rest));
    let done = rest.last().unwrap();
    assert_eq!((done.event.as_str(), done.data["status"].as_str()), ("done", Some("completed")));
    assert_eq!(done.data["message"]["content"].as_str(), Some(joined.as_str()), "every piece once, in order");
    assert_eq!(joined.split_whitespace().count(), TOKENS);

    let peak = if hwm_measured { server.status_kb("VmHWM:").max(sampled_peak) } else { sampled_peak };
    let after = server.settled_rss_kb().await;
    let text_kb = joined.len() as u64 / 1024;
    eprintln!(
        "answer text {text_kb} kB; server RSS: baseline {baseline} kB, peak +{} kB, after +{} kB",
        peak.saturating_sub(baseline),
        after.saturating_sub(baseline)
    );
    // Kept chunk by chunk, this answer cost ~80 MB, never returned.
    assert!(peak.saturating_sub(baseline) < 24 * 1024, "peak grew by {} kB for {text_kb} kB of text", peak - baseline);
    assert!(after.saturating_sub(baseline) < 12 * 1024, "{} kB still held after the end", after - baseline);
}
