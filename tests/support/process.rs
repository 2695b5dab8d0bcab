//! The real binary as a separate process, for what only a process shows: its memory, its
//! signals, its sockets and descriptors, its log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{create_pg_database, Backend, PgDatabase};

/// Longest wait for a log line, a response or the server closing a connection.
pub const PROCESS_WAIT: Duration = Duration::from_secs(30);

/// The binary with a clean environment, working in `dir`.
pub fn rovertchat(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rovertchat"));
    command.current_dir(dir).env_clear().env("DATA_DIR", dir.join("data")).env("LOG_DIR", dir.join("logs"));
    command
}

/// How to start a [`ServerProcess`].
#[derive(Default)]
pub struct ProcessOptions<'a> {
    pub settings: &'a [(&'a str, &'a str)],
    /// At most this many open file descriptors (`ulimit -n`).
    pub open_files: Option<u64>,
    /// A PostgreSQL database of its own, instead of SQLite in a temporary directory.
    pub database: Option<PgDatabase>,
    pub ollama_url: Option<String>,
}

/// A `rovertchat` process serving on a free port of 127.0.0.1 (rate limits off), its log lines
/// (stdout) collected as they come; killed when dropped.
pub struct ServerProcess {
    child: Option<Child>,
    pub address: SocketAddr,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
    _database: Option<PgDatabase>,
}

impl ServerProcess {
    /// Starts the binary on SQLite with these extra variables.
    pub fn start(settings: &[(&str, &str)]) -> ServerProcess {
        Self::start_with(ProcessOptions { settings, ..ProcessOptions::default() })
    }

    /// Starts the binary on `backend`'s database, talking to the Ollama at `ollama_url`.
    pub async fn start_on(backend: Backend, ollama_url: String, settings: &[(&str, &str)]) -> ServerProcess {
        let database = match backend {
            Backend::Postgres => Some(create_pg_database().await),
            Backend::Sqlite => None,
        };
        Self::start_with(ProcessOptions { settings, database, ollama_url: Some(ollama_url), ..ProcessOptions::default() })
    }

    pub fn start_with(options: ProcessOptions<'_>) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut command = rovertchat(dir.path());
        command
            .envs([("HOST", "127.0.0.1"), ("PORT", "0"), ("NO_COLOR", "1"), ("RATE_LIMITS", "off")])
            .env("JWT_SECRET_KEY", super::ACCESS_SECRET)
            .env("JWT_REFRESH_SECRET_KEY", super::REFRESH_SECRET)
            .env("OLLAMA_BASE_URL", options.ollama_url.as_deref().unwrap_or("http://127.0.0.1:9"))
            .envs(options.settings.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(database) = &options.database {
            command.env("DATABASE_URL", &database.url);
        }
        if let Some(limit) = options.open_files {
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
        let mut child = command.spawn().expect("the server binary starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child: Some(child),
            address: ([127, 0, 0, 1], 0).into(),
            log,
            seen: Vec::new(),
            _dir: dir,
            _database: options.database,
        };
        let listening = server.wait_for_log("rovertchat listening");
        // `address=…` in a text line, `"address":"…"` in a JSON one.
        server.address = listening
            .split([' ', ','])
            .find_map(|field| field.strip_prefix("address=").or_else(|| field.strip_prefix("\"address\":")))
            .and_then(|address| address.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no address in {listening:?}"));
        server
    }

    /// `http://<address>/api/v1<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.address)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process is running").id()
    }

    /// The first log line containing `text`, waiting for it if needed.
    pub fn wait_for_log(&mut self, text: &str) -> String {
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

    pub fn connect(&self) -> TcpStream {
        let connection = TcpStream::connect(self.address).unwrap();
        connection.set_read_timeout(Some(PROCESS_WAIT)).unwrap();
        connection
    }

    /// A connection that sends part of a request head and stops.
    pub fn half_sent_request(&self) -> TcpStream {
        let mut connection = self.connect();
        connection.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Waiting: ").unwrap();
        connection
    }

    /// `GET /api/v1/health` on a new connection: the whole response.
    pub fn health(&self) -> String {
        let mut connection = self.connect();
        connection.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).expect("a response within the wait");
        response
    }

    /// One exchange on a new connection (`Connection: close` in `request`): the whole response.
    pub fn exchange(&self, request: &str) -> String {
        let mut connection = self.connect();
        connection.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).unwrap();
        response
    }

    /// Registers `username` (password [`super::PASSWORD`]) and logs in over plain sockets, so
    /// tests without an async runtime can use it too; the access token.
    pub fn sign_up(&self, username: &str) -> String {
        let password = super::PASSWORD;
        let account = serde_json::json!({"username": username, "email": format!("{username}@example.com"), "password": password});
        let account = account.to_string();
        let registered = self.exchange(&format!(
            "POST /api/v1/auth/register HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{account}",
            account.len()
        ));
        assert!(registered.starts_with("HTTP/1.1 201"), "{registered}");
        let form = format!("username={username}&password={password}");
        let login = self.exchange(&format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ));
        let body = login.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{login}"));
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Kills the process at once (SIGKILL, as a crash or `kill -9` would) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the process is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("the killed process is reaped");
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
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

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS:`, or `VmHWM:` for the peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/<pid>/status");
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {status}"));
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of kB")
    }

    pub fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS:")
    }

    /// Starts measuring the peak (`VmHWM`) anew; false where the kernel does not allow it.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// The resident size once it has stopped moving (e.g. after freed buffers are returned),
    /// waiting at most ten seconds.
    pub async fn settled_rss_kib(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut last, mut steady_since) = (self.rss_kib(), Instant::now());
        while Instant::now() < deadline && steady_since.elapsed() < Duration::from_millis(1500) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.rss_kib();
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (at most [`PROCESS_WAIT`]) for the server to close `connection`.
pub fn assert_closed_by_server(connection: &mut TcpStream) {
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
