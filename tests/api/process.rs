//! The binary as a person runs it: configuration errors, `migrate`, and limits that only a
//! real server process shows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ollama_emulator::Knobs;
use serde_json::Value;

use crate::on_both_databases;
use crate::support::process::{assert_closed_by_server, rovertchat, ProcessOptions, ServerProcess, PROCESS_WAIT};
use crate::support::{SseEvent, StreamReader, TestApp};

fn deltas(events: &[SseEvent]) -> String {
    events.iter().filter(|e| e.event == "delta").filter_map(|e| e.data["content"].as_str()).collect()
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
fn serve_help_lists_every_variable_with_its_default_and_meaning_but_no_value() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef-for-no-eyes";
    let output = rovertchat(dir.path()).env("JWT_SECRET_KEY", secret).args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let help = String::from_utf8(output.stdout).unwrap();
    for wanted in [
        "--port <PORT>",
        "Port to listen on (0: any free port). [default: 8000] [env: PORT]",
        "[default: 10/minute] [env: RATE_LIMIT_LOGIN]",
        "[default: http://127.0.0.1:11434] [env: OLLAMA_BASE_URL]",
        "[default: 2 per core, at least 4] [env: DATABASE_MAX_CONNECTIONS]",
    ] {
        assert!(help.contains(wanted), "{wanted:?} not in:\n{help}");
    }
    for variable in rovertchat::config::VARIABLES {
        let line = format!("{} [default: {}] [env: {}]", variable.meaning, variable.default_text(), variable.name);
        assert!(help.contains(&line), "{line:?} not in:\n{help}");
    }
    assert!(!help.contains(secret), "--help shows the values set");
}

#[test]
fn a_flag_sets_a_variable_and_wins_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let output = rovertchat(dir.path()).env("PORT", "8001").args(["migrate", "--port", "eighty"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end(), "configuration error: PORT: expected a port number (0-65535), got \"eighty\"");
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
    let timed_out = stuck.get("/ollama/version").session(&session).send().await;
    timed_out.assert_detail(503, "Request timed out");
    assert!(timed_out.header("x-request-id").is_some(), "a timed-out request has its id too");
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

/// A 200,000-token answer, followed live by a watcher that stops reading: the server's memory
/// grows by about the answer's text (not per chunk), and returns near where it was at the end.
async fn a_long_answer_costs_the_server_memory_of_its_text_only(app: TestApp) {
    const TOKENS: usize = 200_000;
    let server = ServerProcess::start_on(app.backend, app.emulator.base_url(), &[("MAX_ANSWER_TOKENS", "1000000")]).await;
    let client = reqwest::Client::new();
    let url = |path: &str| server.url(path);
    let token = server.sign_up("bob_user");
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
    let baseline = server.settled_rss_kib().await;
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
        sampled_peak = sampled_peak.max(server.rss_kib());
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

    let peak = if hwm_measured { server.memory_kib("VmHWM:").max(sampled_peak) } else { sampled_peak };
    let after = server.settled_rss_kib().await;
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

#[test]
fn at_the_connection_cap_new_clients_wait_for_a_free_slot() {
    let mut server =
        ServerProcess::start(&[("MAX_CONNECTIONS", "8"), ("HEADER_READ_TIMEOUT_SECS", "2"), ("KEEP_ALIVE_IDLE_SECS", "600")]);
    let mut stalled: Vec<TcpStream> = (0..8).map(|_| server.half_sent_request()).collect();
    let warning = server.wait_for_log("connection limit reached");
    assert!(warning.contains("WARN") && warning.contains("MAX_CONNECTIONS"), "{warning}");
    // Queued in the backlog until the stalled connections time out.
    assert!(server.health().starts_with("HTTP/1.1 200"));
    for connection in &mut stalled {
        assert_closed_by_server(connection);
    }
}

#[test]
fn out_of_file_descriptors_the_server_keeps_accepting() {
    // About 16 descriptors are taken at startup (database, log, runtime): 24 are left.
    let mut server = ServerProcess::start_with(ProcessOptions {
        settings: &[("MAX_CONNECTIONS", "1000"), ("HEADER_READ_TIMEOUT_SECS", "2"), ("KEEP_ALIVE_IDLE_SECS", "600")],
        open_files: Some(40),
        ..ProcessOptions::default()
    });
    let stalled: Vec<TcpStream> = (0..40).map(|_| server.half_sent_request()).collect();
    server.wait_for_log("Too many open files");
    assert!(server.health().starts_with("HTTP/1.1 200"), "served once the stalled connections timed out");
    drop(stalled);
    assert!(server.health().starts_with("HTTP/1.1 200"));
}

#[test]
fn sigterm_ends_the_server_within_the_grace_period_whatever_the_clients_do() {
    // An "Ollama" that accepts connections and never answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ollama = format!("http://{}", black_hole.local_addr().unwrap());
    let (asked, ollama_asked) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in black_hole.incoming().map_while(Result::ok) {
            held.push(connection);
            let _ = asked.send(());
        }
    });
    let grace = Duration::from_secs(2);
    let mut server = ServerProcess::start(&[
        ("SHUTDOWN_GRACE_SECS", "2"),
        ("HEADER_READ_TIMEOUT_SECS", "600"),
        ("KEEP_ALIVE_IDLE_SECS", "600"),
        ("OLLAMA_BASE_URL", &ollama),
    ]);
    let _half_heads: Vec<TcpStream> = (0..3).map(|_| server.half_sent_request()).collect();
    let mut kept_alive = server.connect();
    kept_alive.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&response).ends_with("\"healthy\"}") {
        let n = kept_alive.read(&mut chunk).expect("the health response");
        assert!(n > 0, "the kept-alive connection closed early");
        response.extend_from_slice(&chunk[..n]);
    }
    // A request that would wait for Ollama until REQUEST_TIMEOUT_SECS (30).
    let token = server.sign_up("bob_user");
    let mut waiting = server.connect();
    waiting
        .write_all(
            format!("GET /api/v1/ollama/version HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    ollama_asked.recv_timeout(PROCESS_WAIT).expect("the request reaches Ollama");

    let status = server.terminate(grace + Duration::from_secs(5)).expect("the server exits within its grace period");
    assert!(status.success(), "{status:?}");
}

/// A request's log line names its matched route (never the raw path) and, once known, its user.
#[test]
fn request_lines_carry_the_route_and_the_user() {
    let mut server = ServerProcess::start(&[]);
    let token = server.sign_up("bob_user");
    let mut connection = server.connect();
    let chat = "00000000-0000-4000-8000-000000000000";
    connection
        .write_all(
            format!("GET /api/v1/chats/chat/{chat} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut response = String::new();
    connection.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    let line = server.wait_for_log("status=404");
    assert!(line.contains("route=/api/v1/chats/chat/{chat_id}") && !line.contains(chat), "{line}");
    assert!(line.contains("method=GET") && line.contains("user_id=") && line.contains("latency_us="), "{line}");
}
