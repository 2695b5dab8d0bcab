//! The binary as a person runs it: configuration errors, `migrate`, and limits that only a
//! real server process shows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    let started = std::time::Instant::now();
    stuck.get("/ollama/version").send().await.assert_detail(503, "Request timed out");
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

/// A server process on a free port, its log lines (stdout) collected as they come.
struct ServerProcess {
    child: Option<Child>,
    address: SocketAddr,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Longest wait for a log line, a response or the server closing a connection.
const PROCESS_WAIT: Duration = Duration::from_secs(30);

impl ServerProcess {
    /// Starts the binary with `settings`, and with at most `open_files` descriptors if given.
    fn start(settings: &[(&str, &str)], open_files: Option<u64>) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut command = rovertchat(dir.path());
        command
            .envs([("HOST", "127.0.0.1"), ("PORT", "0"), ("NO_COLOR", "1"), ("RATE_LIMITS", "off")])
            .envs(settings.iter().copied())
            .stdout(Stdio::piped());
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe, as code between fork and exec must be.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    match libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
            }
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server =
            ServerProcess { child: Some(child), address: ([127, 0, 0, 1], 0).into(), log, seen: Vec::new(), _dir: dir };
        let listening = server.wait_for_log("rovertchat listening");
        server.address = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("address="))
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no address in {listening:?}"));
        server
    }

    /// The first log line containing `text`, waiting for it if needed.
    fn wait_for_log(&mut self, text: &str) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + PROCESS_WAIT;
        loop {
            match self.log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {text:?} within {PROCESS_WAIT:?}; log: {:#?}", self.seen),
            }
        }
    }

    fn connect(&self) -> TcpStream {
        let connection = TcpStream::connect(self.address).unwrap();
        connection.set_read_timeout(Some(PROCESS_WAIT)).unwrap();
        connection
    }

    /// A connection that sends part of a request head and stops.
    fn half_sent_request(&self) -> TcpStream {
        let mut connection = self.connect();
        connection.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Waiting: ").unwrap();
        connection
    }

    /// `GET /api/v1/health` on a new connection: the whole response.
    fn health(&self) -> String {
        let mut connection = self.connect();
        connection.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).expect("a response within the wait");
        response
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit.
    fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().unwrap();
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (exited, exit) = mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait().unwrap();
            let _ = exited.send(status);
        });
        let status = exit.recv_timeout(within).ok();
        if status.is_none() {
            // SAFETY: as above; the waiting thread reaps the child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        status
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (at most [`PROCESS_WAIT`]) for the server to close `connection`.
fn assert_closed_by_server(connection: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    loop {
        match connection.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the connection is still open after {PROCESS_WAIT:?}")
            }
            Err(_) => return,
        }
    }
}

#[test]
fn at_the_connection_cap_new_clients_wait_for_a_free_slot() {
    let mut server = ServerProcess::start(
        &[("MAX_CONNECTIONS", "8"), ("HEADER_READ_TIMEOUT_SECS", "2"), ("KEEP_ALIVE_IDLE_SECS", "600")],
        None,
    );
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
    let mut server = ServerProcess::start(
        &[("MAX_CONNECTIONS", "1000"), ("HEADER_READ_TIMEOUT_SECS", "2"), ("KEEP_ALIVE_IDLE_SECS", "600")],
        Some(40),
    );
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
    let mut server = ServerProcess::start(
        &[
            ("SHUTDOWN_GRACE_SECS", "2"),
            ("HEADER_READ_TIMEOUT_SECS", "600"),
            ("KEEP_ALIVE_IDLE_SECS", "600"),
            ("OLLAMA_BASE_URL", &ollama),
        ],
        None,
    );
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
    let mut waiting = server.connect();
    waiting.write_all(b"GET /api/v1/ollama/version HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    ollama_asked.recv_timeout(PROCESS_WAIT).expect("the request reaches Ollama");

    let status = server.terminate(grace + Duration::from_secs(5)).expect("the server exits within its grace period");
    assert!(status.success(), "{status:?}");
}
