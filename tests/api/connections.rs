//! Clients that open connections and do not use them: they are closed after the header or
//! idle timeout, while requests in progress (streams included) are never cut.

use std::time::Duration;

use ollama_emulator::Knobs;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::on_both_databases;
use crate::support::{Backend, StreamReader, TestApp};

on_both_databases!(
    a_request_head_that_stops_halfway_is_dropped_after_the_header_timeout,
    an_idle_kept_alive_connection_is_closed_after_the_idle_timeout,
    streams_outlast_the_header_and_idle_timeouts,
);

const HEALTH: &[u8] = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Longest wait for the server to close a connection in these tests (a few timeouts' worth).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://")).await.expect("the server accepts")
}

/// Reads one response with a `content-length` body; returns its head and body.
async fn read_response(connection: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a content-length header");
            if received.len() >= head_end + 4 + length {
                return text;
            }
        }
        let read = tokio::time::timeout(CLOSE_WAIT, connection.read(&mut chunk)).await.expect("the response arrives");
        match read.expect("the connection stays open for the response") {
            0 => panic!("the connection closed mid-response: {text}"),
            n => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the server closes `connection` (end of stream or reset), at most [`CLOSE_WAIT`].
async fn assert_closed_by_server(connection: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    let closed = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match connection.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is still open after {CLOSE_WAIT:?}");
}

async fn a_request_head_that_stops_halfway_is_dropped_after_the_header_timeout(backend: Backend) {
    let app =
        TestApp::spawn_with(backend, vec![("HEADER_READ_TIMEOUT_SECS", "1".into()), ("KEEP_ALIVE_IDLE_SECS", "600".into())])
            .await;
    let mut half_head = connect(&app).await;
    half_head.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Waiting: ").await.unwrap();
    let mut silent = connect(&app).await;
    assert_closed_by_server(&mut half_head).await;
    assert_closed_by_server(&mut silent).await;

    let mut prompt = connect(&app).await;
    prompt.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut prompt).await.starts_with("HTTP/1.1 200"));
}

async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(backend: Backend) {
    let app =
        TestApp::spawn_with(backend, vec![("HEADER_READ_TIMEOUT_SECS", "1".into()), ("KEEP_ALIVE_IDLE_SECS", "4".into())]).await;
    let mut connection = connect(&app).await;
    connection.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut connection).await.starts_with("HTTP/1.1 200"));
    // Waiting for the next request is not a slow head: longer than the header timeout is fine.
    tokio::time::sleep(Duration::from_secs(2)).await;
    connection.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut connection).await.starts_with("HTTP/1.1 200"));
    assert_closed_by_server(&mut connection).await;
}

async fn streams_outlast_the_header_and_idle_timeouts(backend: Backend) {
    let app =
        TestApp::spawn_with(backend, vec![("HEADER_READ_TIMEOUT_SECS", "1".into()), ("KEEP_ALIVE_IDLE_SECS", "1".into())]).await;
    let (_, s) = app.signed_up("bob_user").await;
    let (sse_chat, ndjson_chat) = (app.new_chat(&s, None).await, app.new_chat(&s, None).await);
    // Silences longer than both timeouts, before and between the tokens.
    app.emulator.set_knobs(Knobs {
        first_token_delay: Duration::from_millis(1500),
        per_token_delay: Duration::from_millis(1200),
        tokens: Some(2),
        ..Knobs::default()
    });
    let sse = async {
        let mut stream = StreamReader::open(
            app.post(&format!("/chats/{sse_chat}/completions"))
                .session(&s)
                .json(&json!({"model": "llama3.2:1b", "content": "take your time"})),
        )
        .await;
        assert_eq!(stream.status, 200);
        stream.rest().await
    };
    let ndjson = async {
        let mut stream = StreamReader::open(app.post("/ollama/chat").session(&s).json(&json!({
            "model": "llama3.2:1b", "chatId": ndjson_chat, "stream": true,
            "messages": [{"role": "user", "content": "take your time"}]
        })))
        .await;
        assert_eq!(stream.status, 200);
        let mut lines = Vec::new();
        while let Some(line) = stream.next_line().await {
            lines.push(line);
        }
        lines
    };
    let (events, lines) = tokio::join!(sse, ndjson);
    let done = events.last().expect("events");
    assert_eq!(done.event, "done");
    assert_eq!(done.data["status"], "completed");
    assert_eq!(done.data["message"]["tokens_used"], 2);
    let last = lines.last().expect("lines");
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"], 2);
}
