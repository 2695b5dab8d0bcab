//! Test support: start the real server on a random port with its own database (SQLite
//! always, PostgreSQL when `TEST_DATABASE_URL` is set) and an Ollama emulator, and talk HTTP.
//! Tests that need PostgreSQL carry `#[postgres_gate::needs_test_database_url]`.

#![allow(dead_code)]

pub mod process;

use std::future::Future;
use std::time::Duration;

use ollama_emulator::Emulator;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use rovertchat::config::Config;
use rovertchat::store::{Pool, Store};
use rovertchat::Application;
use serde_json::{json, Value};
use sqlx::Connection;

pub const PASSWORD: &str = "Correct-horse-1";
pub const ACCESS_SECRET: &str = "test-access-secret-0123456789abcdef0123456789";
pub const REFRESH_SECRET: &str = "test-refresh-secret-0123456789abcdef012345678";

/// Tests are silent unless `TEST_LOG` is set (to a `tracing` filter such as `info`).
fn init_test_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$body` with `$pool` bound to the test database's pool, whichever backend it is.
#[macro_export]
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            rovertchat::store::Pool::Postgres($pool) => $body,
            rovertchat::store::Pool::Sqlite($pool) => $body,
        }
    };
}

/// Runs one test body on SQLite and on PostgreSQL; the PostgreSQL variant is reported as ignored
/// when the tests were built without `TEST_DATABASE_URL` (see tests/postgres-gate). A body takes
/// a started server (`app: TestApp`), or only the backend (`backend: Backend`) when it starts its
/// own servers with other settings.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::support::{Backend, TestSubject};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(TestSubject::for_backend(Backend::Sqlite).await).await;
            }
            #[postgres_gate::needs_test_database_url]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(TestSubject::for_backend(Backend::Postgres).await).await;
            }
        }
    )*};
}

/// What an `on_both_databases!` body receives.
pub trait TestSubject: Sized {
    fn for_backend(backend: Backend) -> std::pin::Pin<Box<dyn std::future::Future<Output = Self>>>;
}

impl TestSubject for TestApp {
    fn for_backend(backend: Backend) -> std::pin::Pin<Box<dyn std::future::Future<Output = Self>>> {
        Box::pin(TestApp::spawn(backend))
    }
}

impl TestSubject for Backend {
    fn for_backend(backend: Backend) -> std::pin::Pin<Box<dyn std::future::Future<Output = Self>>> {
        Box::pin(std::future::ready(backend))
    }
}

/// A PostgreSQL database made for one test and dropped after it.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot await; a short-lived runtime on another thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

pub fn pg_admin_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())
}

/// Creates an empty database.
pub async fn create_pg_database() -> PgDatabase {
    let admin_url =
        pg_admin_url().expect("TEST_DATABASE_URL was set when these tests were built: set it when running them too, or rebuild");
    let name = format!("rovertchat_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("TEST_DATABASE_URL must reach PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create test database");
    let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    PgDatabase { url: url.to_string(), admin_url, name }
}

pub struct TestApp {
    pub address: String,
    pub backend: Backend,
    pub store: Store,
    pub database: rovertchat::config::DatabaseConfig,
    pub emulator: Emulator,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    pub log_dir: std::path::PathBuf,
    server: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _pg: Option<PgDatabase>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, Vec::new()).await
    }

    /// Starts a server with extra configuration variables.
    pub async fn spawn_with(backend: Backend, extra: Vec<(&str, String)>) -> TestApp {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(create_pg_database().await),
        };
        Self::spawn_on(backend, pg, extra).await
    }

    /// Starts a server on a PostgreSQL database prepared by the test (e.g. a loaded fixture).
    pub async fn spawn_on_postgres(database: PgDatabase) -> TestApp {
        Self::spawn_on(Backend::Postgres, Some(database), Vec::new()).await
    }

    async fn spawn_on(backend: Backend, pg: Option<PgDatabase>, extra: Vec<(&str, String)>) -> TestApp {
        init_test_logging();
        let emulator = Emulator::start().await;
        let data_dir = tempfile::tempdir().expect("temp dir");
        let log_dir = data_dir.path().join("logs");
        let mut vars: Vec<(String, String)> = vec![
            ("HOST".into(), "127.0.0.1".into()),
            ("PORT".into(), "0".into()),
            ("DATA_DIR".into(), data_dir.path().join("data").display().to_string()),
            ("LOG_DIR".into(), log_dir.display().to_string()),
            ("JWT_SECRET_KEY".into(), ACCESS_SECRET.into()),
            ("JWT_REFRESH_SECRET_KEY".into(), REFRESH_SECRET.into()),
            ("OLLAMA_BASE_URL".into(), emulator.base_url()),
            ("DATABASE_MAX_CONNECTIONS".into(), "5".into()),
            // Tests log in far more often than a person; the rate-limit tests switch them on.
            ("RATE_LIMITS".into(), "off".into()),
        ];
        if let Some(database) = &pg {
            vars.push(("DATABASE_URL".into(), database.url.clone()));
        }
        vars.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let config = Config::from_vars(vars).expect("test configuration is valid");
        let app = Application::build(config).await.expect("server starts");
        let address = format!("http://{}", app.local_addr());
        let store = app.state().store.clone();
        let database = app.state().config.database.clone();
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app.run(async move {
                let _ = signal.await;
            })
            .await
            .expect("server runs");
        });
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        TestApp {
            address,
            backend,
            store,
            database,
            emulator,
            client,
            data_dir,
            log_dir,
            server,
            shutdown: Some(shutdown),
            _pg: pg,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.address, path)
    }

    /// The URL of this app's PostgreSQL database.
    pub fn database_url(&self) -> String {
        self._pg.as_ref().expect("a PostgreSQL test database").url.clone()
    }

    /// Another server on this app's PostgreSQL database and emulator: a replica, with `extra`
    /// settings.
    pub async fn replica(&self, extra: Vec<(&str, String)>) -> TestApp {
        let mut vars = vec![("DATABASE_URL", self.database_url()), ("OLLAMA_BASE_URL", self.emulator.base_url())];
        vars.extend(extra);
        Self::spawn_on(Backend::Postgres, None, vars).await
    }

    /// A request to the OpenAI-compatible API (`/v1{path}`) with an API key.
    pub fn openai(&self, method: Method, path: &str, key: &str) -> TestRequest<'_> {
        let builder = self.client.request(method, format!("{}/v1{path}", self.address));
        TestRequest { _app: self, builder }.bearer(key)
    }

    /// Makes an API key for the session's user (asserting 201) and returns the answer.
    pub async fn api_key(&self, session: &Session, body: Value) -> Value {
        let response = self.post("/api-keys").session(session).json(&body).send().await;
        assert_eq!(response.status, StatusCode::CREATED, "create API key: {}", response.body);
        response.body
    }

    pub fn request(&self, method: Method, path: &str) -> TestRequest<'_> {
        TestRequest { _app: self, builder: self.client.request(method, self.url(path)) }
    }
    pub fn get(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::GET, path)
    }
    pub fn post(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::POST, path)
    }
    pub fn put(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::PUT, path)
    }
    pub fn patch(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::PATCH, path)
    }
    pub fn delete(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::DELETE, path)
    }

    /// Registers an account (asserting 201) and returns its JSON.
    pub async fn register(&self, username: &str) -> Value {
        let response = self
            .post("/auth/register")
            .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD}))
            .send()
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "register {username}: {}", response.body);
        response.body
    }

    /// Logs in (asserting 200) and returns the session.
    pub async fn login(&self, username: &str, password: &str) -> Session {
        let response = self.post("/auth/login").form(&[("username", username), ("password", password)]).send().await;
        assert_eq!(response.status, StatusCode::OK, "login {username}: {}", response.body);
        Session {
            access_token: response.body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: response.body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// An account with the role `guest`, made by `admin`, and its session.
    pub async fn guest_made_by(&self, admin: &Session, username: &str) -> (Value, Session) {
        let body =
            json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD, "role": "guest"});
        let response = self.post("/auth/register").session(admin).json(&body).send().await;
        assert_eq!(response.status, StatusCode::CREATED, "register {username}: {}", response.body);
        (response.body, self.login(username, PASSWORD).await)
    }

    /// Registers and logs in.
    pub async fn signed_up(&self, username: &str) -> (Value, Session) {
        let user = self.register(username).await;
        let session = self.login(username, PASSWORD).await;
        (user, session)
    }

    /// Runs SQL statements against the test's database (to set up a fault).
    pub async fn execute(&self, sql: &str) {
        crate::on_pool!(self.store, pool => sqlx::raw_sql(sql).execute(pool).await.map(|_| ())).expect(sql);
    }

    /// Runs `while_held` while another transaction holds the write lock on `table` (on SQLite,
    /// on the whole database): the server's writes to it wait until `while_held` is done.
    pub async fn with_writes_held<T>(&self, table: &str, while_held: impl Future<Output = T>) -> T {
        let lock = if self.is_postgres() { format!("BEGIN; LOCK TABLE {table} IN SHARE MODE") } else { "BEGIN IMMEDIATE".into() };
        crate::on_pool!(self.store, pool => async {
            let mut connection = pool.acquire().await.expect("a connection to hold the lock on");
            sqlx::raw_sql(&lock).execute(&mut *connection).await.expect(&lock);
            let value = while_held.await;
            sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await.expect("ROLLBACK");
            value
        }
        .await)
    }

    /// Runs SQL against the test's database and returns one integer.
    pub async fn count(&self, sql: &str) -> i64 {
        crate::on_pool!(self.store, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).expect(sql)
    }

    /// Sends the shutdown signal (as SIGTERM would) and waits until the server has stopped.
    pub async fn shut_down(&mut self) {
        if let Some(signal) = self.shutdown.take() {
            let _ = signal.send(());
        }
        (&mut self.server).await.expect("server task ends cleanly");
        // The server closed its pool; look at the database through a new one.
        self.store = Store::connect(&self.database, 2).await.expect("reconnect to the test database");
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.store.pool(), Pool::Postgres(_))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
}

/// A request being built; it borrows its app, so the server outlives it.
pub struct TestRequest<'a> {
    _app: &'a TestApp,
    builder: reqwest::RequestBuilder,
}

impl<'a> TestRequest<'a> {
    /// Authenticates with the access token as the SPA does: the `access_token` cookie.
    pub fn session(self, session: &Session) -> Self {
        self.cookie(&format!("access_token={}", session.access_token))
    }
    pub fn cookie(self, cookie: &str) -> Self {
        self.header("cookie", cookie)
    }
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn header(self, name: &str, value: &str) -> Self {
        Self { builder: self.builder.header(name, value), ..self }
    }
    pub fn json(self, body: &Value) -> Self {
        Self { builder: self.builder.json(body), ..self }
    }
    pub fn form(self, form: &[(&str, &str)]) -> Self {
        Self { builder: self.builder.form(form), ..self }
    }
    pub fn raw(self, content_type: &str, body: impl Into<reqwest::Body>) -> Self {
        Self { builder: self.builder.header("content-type", content_type).body(body), ..self }
    }
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { builder: self.builder.timeout(timeout), ..self }
    }
    pub fn builder(self) -> reqwest::RequestBuilder {
        self.builder
    }

    pub async fn send(self) -> TestResponse {
        let response = self.builder.send().await.expect("request reaches the server");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        TestResponse { status, headers, body }
    }
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok())
    }
    /// Asserts the status and a `{"detail": "<message>"}` body.
    #[track_caller]
    pub fn assert_detail(&self, status: u16, detail: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body, json!({ "detail": detail }));
    }
    /// Asserts a 422 whose issues have these `(type, loc)` pairs, in order.
    #[track_caller]
    pub fn assert_validation(&self, expected: &[(&str, Value)]) {
        assert_eq!(self.status.as_u16(), 422, "body: {}", self.body);
        let issues = self.body["detail"].as_array().expect("detail list");
        let got: Vec<(String, Value)> =
            issues.iter().map(|i| (i["type"].as_str().unwrap().to_owned(), i["loc"].clone())).collect();
        let want: Vec<(String, Value)> = expected.iter().map(|(t, l)| (t.to_string(), l.clone())).collect();
        assert_eq!(got, want, "body: {}", self.body);
    }
}

/// Reads a streamed response (SSE or NDJSON) piece by piece, as a browser would.
pub struct StreamReader {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    /// SSE comment lines seen so far (heartbeats).
    pub comments: usize,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

impl StreamReader {
    pub async fn open(request: TestRequest<'_>) -> StreamReader {
        Self::open_request(request.builder()).await
    }

    /// Opens a stream from any request (e.g. to a server started as a process).
    pub async fn open_request(request: reqwest::RequestBuilder) -> StreamReader {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let headers = response.headers().clone();
        StreamReader { status, headers, body: Box::pin(response.bytes_stream()), buffer: String::new(), comments: 0 }
    }

    async fn fill(&mut self, timeout: Duration) -> Result<bool, String> {
        use futures_util::StreamExt;
        match tokio::time::timeout(timeout, self.body.next()).await {
            Err(_) => Err("timed out waiting for the stream".into()),
            Ok(None) => Ok(false),
            Ok(Some(Err(e))) => Err(format!("stream broke: {e}")),
            Ok(Some(Ok(bytes))) => {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
                Ok(true)
            }
        }
    }

    /// The next SSE event (comments are counted and skipped); `None` at the end.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent { event, data: serde_json::from_str(&data).unwrap_or(Value::String(data)) });
                }
            }
            match self.fill(Duration::from_secs(30)).await {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// All remaining SSE events.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(e) = self.next_event().await {
            events.push(e);
        }
        events
    }

    /// The next NDJSON line; `None` at the end.
    pub async fn next_line(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..end + 1).collect();
                if line.trim().is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(line.trim()).expect("NDJSON line"));
            }
            match self.fill(Duration::from_secs(30)).await {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

impl TestApp {
    /// Opens the event stream of `POST /chats/{chat}/completions` asking `model`.
    pub async fn open_completion(&self, session: &Session, chat: &str, model: &str, content: &str) -> StreamReader {
        StreamReader::open(
            self.post(&format!("/chats/{chat}/completions")).session(session).json(&json!({"model": model, "content": content})),
        )
        .await
    }

    /// Creates a chat for the session's user and returns its id.
    pub async fn new_chat(&self, session: &Session, title: Option<&str>) -> String {
        let request = self.post("/chats/my").session(session);
        let request = match title {
            Some(t) => request.json(&json!({ "title": t })),
            None => request,
        };
        let response = request.send().await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body["id"].as_str().unwrap().to_owned()
    }

    /// Posts a message and returns its JSON.
    pub async fn post_message(&self, session: &Session, chat_id: &str, role: &str, content: &str) -> Value {
        let response = self
            .post(&format!("/chats/{chat_id}/messages"))
            .session(session)
            .json(&json!({"role": role, "content": content}))
            .send()
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        response.body
    }

    /// Waits until the database has `expected` rows for `sql` (a generation stores its answer
    /// from its own task). Polls for at most ten seconds.
    /// Waits (at most 10 s) until the chat has no running generation: whatever it writes is
    /// written by then.
    pub async fn wait_until_no_generation(&self, session: &Session, chat_id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.get(&format!("/chats/{chat_id}/generation")).session(session).send().await.status == 200 {
            assert!(std::time::Instant::now() < deadline, "the generation of chat {chat_id} did not end within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for_count(&self, sql: &str, expected: i64) -> i64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.count(sql).await;
            if n == expected || std::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A TCP forwarder that can be cut and restored, to take a database "away" from the server.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        TcpProxy { addr, up, connections, accept }
    }

    /// Down: every open connection is cut and new ones are closed at once. Up: forwards again.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for task in self.connections.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_up(false);
    }
}
