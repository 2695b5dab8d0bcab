//! The binary as a person runs it: configuration errors, `migrate`, and limits that only a
//! real server process shows.

use std::process::Command;
use std::time::Duration;

use ollama_emulator::Knobs;

use crate::on_both_databases;
use crate::support::TestApp;

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
