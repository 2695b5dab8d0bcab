//! The real binary as a separate process, for what only a process shows: its memory, its
//! signals, its sockets.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `rovertchat` process serving on a free port of 127.0.0.1, stopped when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
    pub dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary with a fresh SQLite database and these extra variables, and waits until
    /// it answers `/api/v1/health`.
    pub async fn start(extra: &[(&str, &str)]) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_rovertchat"));
        command
            .current_dir(dir.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("DATA_DIR", dir.path().join("data"))
            .env("LOG_DIR", dir.path().join("logs"))
            .env("LOG_LEVEL", "warn")
            .env("OLLAMA_BASE_URL", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("the binary starts");
        let server = ServerProcess { child, address: format!("http://127.0.0.1:{port}"), dir };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client.get(server.url("/health")).send().await.is_ok_and(|r| r.status() == 200) {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.address, path)
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`: the peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
