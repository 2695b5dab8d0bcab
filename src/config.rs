//! Typed configuration, read once from the environment (and an optional `.env` file) and
//! validated at startup. Nothing else in the crate reads environment variables.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use rand::RngCore;

/// A configuration value that is wrong, named by its variable. Printed as one line at startup.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: Variable, problem: impl Into<String>) -> Self {
        Self { var: variable.name, problem: problem.into() }
    }
}

/// What a variable stands for when it is unset.
#[derive(Clone, Copy, Debug)]
pub enum Fallback {
    /// This value, read as if it had been set.
    Value(&'static str),
    /// Nothing, or a value worked out at startup; in words.
    Described(&'static str),
}

/// One environment variable the configuration reads: its name, default and meaning, written
/// once here for the reader, `--help`, and the test that holds `.env.example` and the README's
/// table to the same list.
#[derive(Clone, Copy, Debug)]
pub struct Variable {
    pub name: &'static str,
    pub default: Fallback,
    pub meaning: &'static str,
}

impl Variable {
    /// The default as people read it.
    pub fn default_text(&self) -> &'static str {
        match self.default {
            Fallback::Value(text) | Fallback::Described(text) => text,
        }
    }

    /// The command-line flag that sets it too: `--max-body-bytes` for `MAX_BODY_BYTES`.
    pub fn flag(&self) -> String {
        self.name.to_ascii_lowercase().replace('_', "-")
    }

    /// A flag that falls back to the variable; `--help` shows its meaning and default, never
    /// the value set (it may be a secret). Made after `.env` is loaded: clap reads the
    /// environment when the argument is made.
    pub fn argument(&self) -> clap::Arg {
        let help = format!("{} [default: {}]", self.meaning, self.default_text());
        clap::Arg::new(self.name).long(self.flag()).env(self.name).hide_env_values(true).value_name(self.name).help(help)
    }
}

/// Declares each variable as a constant of module `var` (`var::PORT`), the only way the reader
/// below can name one, and lists them all in [`VARIABLES`].
macro_rules! variables {
    ($($name:ident = $default:expr, $meaning:expr;)+) => {
        mod var {
            use super::Fallback::{Described, Value};
            use super::Variable;
            $(pub const $name: Variable = Variable { name: stringify!($name), default: $default, meaning: $meaning };)+
            pub const ALL: &[Variable] = &[$($name),+];
        }
        /// Every variable the configuration reads, in the order `--help` lists them.
        pub const VARIABLES: &[Variable] = var::ALL;
    };
}

variables! {
    ENVIRONMENT = Value("development"),
        "development or production. Production refuses missing or short (< 32 bytes) JWT secrets and \"*\" in FRONTEND_ORIGINS.";
    HOST = Value("127.0.0.1"), "Address to listen on; 0.0.0.0 in a container.";
    PORT = Value("8000"), "Port to listen on (0: any free port).";
    DATABASE_URL = Described("embedded SQLite at $DATA_DIR/rovertchat.db"),
        "postgres:// or postgresql://: PostgreSQL; sqlite:PATH: embedded SQLite in that file. Any other scheme is refused.";
    DATABASE_MAX_CONNECTIONS = Described("2 per core, at least 4"), "Database connection pool size.";
    USER_CACHE_SECS = Value("5"),
        "Seconds an authenticated request may reuse its user's row (0: never, at most 300): how long a change made through \
         another replica on the same database takes to apply here.";
    DATA_DIR = Value("./data"),
        "The SQLite file and, in development, the generated JWT secrets (jwt-secrets.json, mode 0600). Created if missing.";
    JWT_SECRET_KEY = Described("generated in development"),
        "Signs access tokens: at least 32 random bytes, required in production (openssl rand -hex 32). Set it in the \
         environment: a command line is visible to other users.";
    JWT_REFRESH_SECRET_KEY = Described("generated in development"),
        "Signs refresh tokens; the same rules as JWT_SECRET_KEY, and a different value.";
    JWT_ALGORITHM = Value("HS256"), "HS256, HS384 or HS512 (only HMAC).";
    JWT_ACCESS_TOKEN_EXPIRE_MINUTES = Value("60"), "Lifetime of access tokens and their cookie, in minutes.";
    JWT_REFRESH_TOKEN_EXPIRE_DAYS = Value("7"), "Lifetime of refresh tokens and their cookie, in days.";
    REFRESH_REUSE_GRACE_SECS = Value("10"), "Seconds a used refresh token is still accepted (parallel tabs).";
    FRONTEND_ORIGINS = Value("http://localhost:5173"),
        "The SPA's origins, allowed by CORS with credentials: a comma-separated or JSON list.";
    DOMAIN = Described("none"), "Cookie Domain for public hosts (never used for localhost or private addresses).";
    OLLAMA_BASE_URL = Value("http://127.0.0.1:11434"),
        "Ollama's address; several comma-separated addresses each become an Ollama provider (added at startup when missing).";
    OLLAMA_API_BASE_URL = Described("none"), "The original's name for OLLAMA_BASE_URL, read when that is unset.";
    OLLAMA_CONNECT_TIMEOUT_SECS = Value("5"), "Seconds to connect to Ollama.";
    OLLAMA_FIRST_BYTE_TIMEOUT_SECS = Value("600"),
        "Seconds to wait for the first chunk of an answer (a cold model can take minutes to load); then 504.";
    PROVIDER_STALL_SECS = Value("60"),
        "Seconds a provider that has the model loaded may take to start an answer when a reachable provider could serve it; \
         then the next one answers and the stalled one is tried after the others for a while (0: wait \
         OLLAMA_FIRST_BYTE_TIMEOUT_SECS).";
    OLLAMA_IDLE_TIMEOUT_SECS = Value("300"), "Longest silence between two chunks of an answer, in seconds.";
    OLLAMA_TAGS_CACHE_SECS = Value("300"), "Seconds /ollama/tags (with capabilities) and /ollama/show answers are cached.";
    PROVIDER_KEYS_SECRET = Described("JWT_SECRET_KEY"),
        "Secret the providers' API keys are encrypted with (ChaCha20-Poly1305, key derived by HKDF-SHA256); at least 32 \
         bytes in production. Changing it makes stored provider keys unreadable: set them again.";
    SSE_HEARTBEAT_SECS = Value("15"), "Seconds between the heartbeat comments of event streams.";
    SHUTDOWN_GRACE_SECS = Value("30"),
        "Seconds running generations and requests may go on after SIGTERM; a second later every open connection is closed.";
    MAX_ANSWER_TOKENS = Value("16384"),
        "Longest answer, in tokens: sent to Ollama as num_predict and enforced while streaming (a longer answer is cut \
         and stored with status \"length\").";
    MAX_NUM_CTX = Value("32768"), "Largest options.num_ctx a request may ask for.";
    GENERATIONS_PER_USER = Value("4"),
        "Answers a user (role user) may have generating at once unless an admin sets the quota; one more gets 429 with Retry-After.";
    GENERATION_HEARTBEAT_TIMEOUT_SECS = Value("15"),
        "A generation whose server has not written its heartbeat (every second) for this many seconds is taken for dead: \
         another replica, or this one after a restart, stores its last checkpoint with status \"interrupted\".";
    REGISTRATION = Value("open"),
        "open: anyone may sign up; closed: only admins create accounts (POST /auth/register answers 403 to others, \
         except for the very first account).";
    DEFAULT_ROLE = Value("user"), "Role of self-registered accounts: user, or guest (an admin promotes guests to user).";
    RATE_LIMITS = Value("on"), "off switches every rate limit off.";
    RATE_LIMIT_REGISTER = Value("5/minute"), "Registrations per client address (N/second, N/minute or N/hour).";
    RATE_LIMIT_LOGIN = Value("10/minute"), "Logins per client address.";
    RATE_LIMIT_LOGIN_PER_ACCOUNT = Value("10/minute"), "Logins per account, whichever of its names is used.";
    RATE_LIMIT_REFRESH = Value("20/minute"), "Token refreshes per client address.";
    RATE_LIMIT_LOGOUT = Value("10/minute"), "Logouts per client address.";
    RATE_LIMIT_PROFILE_READ = Value("30/minute"), "GET /users/me per client address.";
    RATE_LIMIT_PROFILE_WRITE = Value("15/minute"), "PUT /users/me per client address.";
    RATE_LIMIT_SETTINGS_READ = Value("30/minute"), "GET /user-settings/me and /users/me/settings per client address.";
    RATE_LIMIT_SETTINGS_WRITE = Value("15/minute"), "PUT /user-settings/me and /users/me/settings per client address.";
    RATE_LIMIT_API_KEY = Value("60/minute"), "Requests to the OpenAI-compatible API (/v1) per API key.";
    TRUSTED_PROXIES = Described("none"),
        "Reverse proxies whose X-Real-IP / X-Forwarded-For are believed: comma-separated addresses or CIDR ranges.";
    REQUEST_TIMEOUT_SECS = Value("30"), "Time limit of non-streaming requests, in seconds.";
    MAX_BODY_BYTES = Value("16777216"),
        "Largest body of a route that carries a message or a conversation (text and base64 images); other routes \
         have fixed, smaller limits.";
    MAX_BODY_BYTES_IN_FLIGHT = Value("67108864"),
        "Bytes of message-sized bodies held in memory at once (when unset, at least MAX_BODY_BYTES); further uploads \
         wait for their turn.";
    HEADER_READ_TIMEOUT_SECS = Value("15"),
        "Seconds a client has to send a complete request head, from opening the connection or from the head's first byte.";
    // Longer than the 60 s a reverse proxy usually keeps its idle upstream connections, so the
    // proxy never sends a request on a connection being closed here.
    KEEP_ALIVE_IDLE_SECS = Value("75"), "Seconds a kept-alive connection may wait for its next request.";
    MAX_CONNECTIONS = Described("1024, less under a low open-file limit"),
        "Open connections at most; more wait in the listen backlog. The default is half the open-file limit \
         (ulimit -n) after 64 descriptors.";
    AUDIT_RETENTION_DAYS = Value("180"), "Days audit events are kept (at most 36500); older ones are deleted hourly (0: kept forever).";
    LOG_LEVEL = Value("info"), "A level (debug, info, warn) or a tracing filter.";
    LOG_DIR = Value("./logs"), "Where app.log is written, rotated daily.";
    LOG_FORMAT = Value("text"), "text (one readable line per event) or json (one JSON object per line).";
    METRICS_TOKEN = Described("none"),
        "When set, GET /metrics needs Authorization: Bearer <this token> (and METRICS_ALLOW is not consulted).";
    METRICS_ALLOW = Value("127.0.0.0/8,::1"),
        "Without METRICS_TOKEN, the client addresses (comma-separated addresses or CIDR ranges) GET /metrics answers.";
    FRONTEND_DIR = Described("none"),
        "A built SPA (a folder with index.html) served at /, with index.html for unknown non-API paths.";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// A secret that never reaches a log or a `Debug` print.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where the data lives: the URL scheme picks the backend.
#[derive(Clone, Debug)]
pub enum DatabaseConfig {
    /// Embedded SQLite file (the default when `DATABASE_URL` is unset).
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        url: Secret,
    },
}

impl DatabaseConfig {
    /// Where the data is, fit for a log: the file, or the server and database (no password).
    pub fn location(&self) -> String {
        match self {
            DatabaseConfig::Sqlite { path } => path.display().to_string(),
            DatabaseConfig::Postgres { url } => match url::Url::parse(url.expose()) {
                Ok(url) => format!("{}:{}{}", url.host_str().unwrap_or("localhost"), url.port().unwrap_or(5432), url.path()),
                Err(_) => "(an unreadable URL)".to_owned(),
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub access_secret: Secret,
    pub refresh_secret: Secret,
    pub algorithm: Algorithm,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// How long a used refresh token is still accepted (parallel tabs refreshing at once).
    pub refresh_reuse_grace: Duration,
}

#[derive(Clone, Debug)]
pub struct OllamaConfig {
    /// The Ollama hosts of `OLLAMA_BASE_URL` (at least one), each made a provider at startup.
    pub base_urls: Vec<String>,
    pub connect_timeout: Duration,
    /// How long to wait for the first byte of an answer: a cold model can take minutes to load.
    pub first_byte_timeout: Duration,
    /// How long a provider with the model loaded may take to start an answer before the next
    /// provider is tried (`None`: no limit but `first_byte_timeout`).
    pub stall_timeout: Option<Duration>,
    /// Longest silence between two chunks of a streamed answer.
    pub idle_timeout: Duration,
    /// How long `/ollama/tags` answers are cached.
    pub tags_cache_ttl: Duration,
}

/// Bounds of model answers, so that one user cannot take the model or the server's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationLimits {
    /// Longest answer, in tokens (upstream chunks): sent to Ollama as `num_predict` and
    /// enforced while streaming (the answer is cut and stored with status `length`).
    pub max_answer_tokens: u32,
    /// Largest `num_ctx` a request may ask for.
    pub max_num_ctx: u32,
    /// How many answers one user may have generating at the same time.
    pub per_user: usize,
    /// A running generation whose heartbeat is older than this is taken for dead.
    pub heartbeat_timeout: Duration,
}

impl Default for GenerationLimits {
    /// The declared defaults of `MAX_ANSWER_TOKENS`, `MAX_NUM_CTX` and `GENERATIONS_PER_USER`.
    fn default() -> Self {
        generation_limits(&Vars::default()).expect("the declared defaults are valid")
    }
}

/// How long clients may hold a connection without using it, and how many may be open at once.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Time to send a complete request head, from the connection's opening or from the first
    /// byte of a later request on it.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub keep_alive_idle: Duration,
    /// Open connections at most; more wait in the kernel's listen backlog.
    pub max_connections: usize,
}

/// Open connections at most when the open-file limit allows it.
const MAX_CONNECTIONS_CEILING: usize = 1024;
/// Descriptors kept for the database, logs and the listener.
const DESCRIPTORS_RESERVED: u64 = 64;

/// Each connection may take two descriptors (its own and one to Ollama), after the reserve;
/// at most [`MAX_CONNECTIONS_CEILING`] (480 under the common limit of 1024).
fn default_max_connections(open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) => {
            let fitting = limit.saturating_sub(DESCRIPTORS_RESERVED) / 2;
            usize::try_from(fitting).unwrap_or(usize::MAX).clamp(16, MAX_CONNECTIONS_CEILING)
        }
        None => MAX_CONNECTIONS_CEILING,
    }
}

/// The process's open-file limit (`ulimit -n`), when there is one.
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
            return Some(limit.rlim_cur);
        }
    }
    None
}

/// `N` requests per `per`, e.g. `5/minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u32,
    pub per: Duration,
}

impl RateSpec {
    pub const fn per_minute(count: u32) -> Self {
        RateSpec { count, per: Duration::from_secs(60) }
    }

    fn parse(raw: &str) -> Option<Self> {
        let (count, unit) = raw.split_once('/')?;
        let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" | "seconds" => Duration::from_secs(1),
            "m" | "min" | "minute" | "minutes" => Duration::from_secs(60),
            "h" | "hour" | "hours" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(RateSpec { count, per })
    }

    /// As the original words it: "5 per 1 minute".
    pub fn describe(&self) -> String {
        let unit = match self.per.as_secs() {
            1 => "second",
            3600 => "hour",
            _ => "minute",
        };
        format!("{} per 1 {unit}", self.count)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who may read `/metrics`: the holders of a token, or else these client addresses.
#[derive(Clone, Debug)]
pub enum MetricsAccess {
    Token(Secret),
    Addresses(Vec<ipnet::IpNet>),
}

/// Per-client limits of the routes the original limited (its defaults), and per account name
/// for login.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub register: RateSpec,
    pub login: RateSpec,
    pub login_per_account: RateSpec,
    pub refresh: RateSpec,
    pub logout: RateSpec,
    pub profile_read: RateSpec,
    pub profile_write: RateSpec,
    pub settings_read: RateSpec,
    pub settings_write: RateSpec,
    pub api_key: RateSpec,
    /// Peers whose `X-Real-IP` / `X-Forwarded-For` are believed (reverse proxies).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub environment: Environment,
    pub log_format: LogFormat,
    pub metrics_access: MetricsAccess,
    /// The built SPA to serve at `/` (holds an `index.html`).
    pub frontend_dir: Option<PathBuf>,
    pub host: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_level: String,
    pub database: DatabaseConfig,
    pub database_max_connections: u32,
    /// How long a user (or API key) row is reused by authenticated requests (see `store::row_cache`):
    /// the delay before a logout, deactivation or role change made through another process
    /// on the same database takes effect here.
    pub user_cache_ttl: Duration,
    pub jwt: JwtConfig,
    pub frontend_origins: Vec<String>,
    pub domain: Option<String>,
    pub ollama: OllamaConfig,
    /// What the providers' API keys are encrypted with (`PROVIDER_KEYS_SECRET`, else the access
    /// token secret).
    pub provider_keys_secret: Secret,
    /// How long running generations may go on after a shutdown signal before they are stopped.
    pub shutdown_grace: Duration,
    /// Interval of the comments that keep an event stream open while a model loads.
    pub heartbeat_interval: Duration,
    pub generation_limits: GenerationLimits,
    pub registration: RegistrationPolicy,
    pub rate_limits: RateLimitConfig,
    /// Longest time a non-streaming request may take.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Bytes of message-sized request bodies held in memory at once.
    pub max_body_bytes_in_flight: usize,
    pub connections: ConnectionLimits,
    /// How long audit events are kept; `None`: forever.
    pub audit_retention: Option<Duration>,
}

const MIN_SECRET_BYTES: usize = 32;
const MAX_USER_CACHE_SECS: u64 = 300;
const MAX_AUDIT_RETENTION_DAYS: u64 = 36_500;

impl Config {
    /// Reads the values clap found for [`VARIABLES`] (each one's flag, else its variable).
    pub fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, ConfigError> {
        Self::from_vars(VARIABLES.iter().filter_map(|variable| {
            let value = matches.get_one::<String>(variable.name)?;
            Some((variable.name.to_owned(), value.clone()))
        }))
    }

    /// Builds the configuration from explicit variables (tests use this). Blank values count
    /// as unset.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars = Vars(vars.into_iter().filter(|(_, v)| !v.trim().is_empty()).collect());

        let environment = match vars.value(var::ENVIRONMENT).to_ascii_lowercase().as_str() {
            "development" | "dev" => Environment::Development,
            "production" | "prod" => Environment::Production,
            other => return Err(ConfigError::new(var::ENVIRONMENT, format!("must be development or production, got {other:?}"))),
        };
        let host: IpAddr = vars.parse(var::HOST, "an IP address such as 127.0.0.1 or 0.0.0.0")?;
        let port: u16 = vars.parse(var::PORT, "a port number (0-65535)")?;
        let data_dir = PathBuf::from(vars.value(var::DATA_DIR));
        let log_dir = PathBuf::from(vars.value(var::LOG_DIR));
        let log_level = vars.value(var::LOG_LEVEL).to_ascii_lowercase();
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError::new(var::LOG_LEVEL, format!("not a log level or filter: {log_level:?}")));
        }

        let database = match vars.get(var::DATABASE_URL) {
            None => DatabaseConfig::Sqlite { path: data_dir.join("rovertchat.db") },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres { url: Secret::new(url) }
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() || path == ":memory:" {
                    return Err(ConfigError::new(var::DATABASE_URL, "a sqlite: URL needs a file path"));
                }
                DatabaseConfig::Sqlite { path: PathBuf::from(path) }
            }
            Some(url) => {
                let scheme = url.split(':').next().unwrap_or_default();
                return Err(ConfigError::new(
                    var::DATABASE_URL,
                    format!(
                        "unsupported scheme {scheme:?}: use postgres:// or postgresql://, or leave it unset for embedded SQLite"
                    ),
                ));
            }
        };
        // Two connections per core keep the cores busy without queueing in PostgreSQL.
        let default_connections = std::thread::available_parallelism().map_or(4, |n| (n.get() as u32 * 2).max(4));
        let database_max_connections: u32 =
            vars.parse_set(var::DATABASE_MAX_CONNECTIONS, "a positive number")?.unwrap_or(default_connections);
        if database_max_connections == 0 {
            return Err(ConfigError::new(var::DATABASE_MAX_CONNECTIONS, "must be at least 1"));
        }

        let algorithm = match vars.value(var::JWT_ALGORITHM).to_ascii_uppercase().as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            other => {
                return Err(ConfigError::new(
                    var::JWT_ALGORITHM,
                    format!("only HMAC algorithms (HS256, HS384, HS512) are accepted, got {other:?}"),
                ))
            }
        };
        let access_minutes: u64 = vars.parse(var::JWT_ACCESS_TOKEN_EXPIRE_MINUTES, "a whole number of minutes")?;
        let refresh_days: u64 = vars.parse(var::JWT_REFRESH_TOKEN_EXPIRE_DAYS, "a whole number of days")?;
        if access_minutes == 0 {
            return Err(ConfigError::new(var::JWT_ACCESS_TOKEN_EXPIRE_MINUTES, "must be at least 1"));
        }
        if refresh_days == 0 {
            return Err(ConfigError::new(var::JWT_REFRESH_TOKEN_EXPIRE_DAYS, "must be at least 1"));
        }
        let (access_secret, refresh_secret) = jwt_secrets(&vars, environment, &data_dir)?;
        let provider_keys_secret = match vars.get(var::PROVIDER_KEYS_SECRET) {
            Some(secret) if secret.len() < MIN_SECRET_BYTES && environment == Environment::Production => {
                return Err(ConfigError::new(
                    var::PROVIDER_KEYS_SECRET,
                    format!("must be at least {MIN_SECRET_BYTES} bytes in production"),
                ))
            }
            Some(secret) => Secret::new(secret),
            None => Secret::new(access_secret.expose()),
        };
        let refresh_reuse_grace: u64 = vars.parse(var::REFRESH_REUSE_GRACE_SECS, "a whole number of seconds")?;

        let frontend_origins = parse_origins(vars.value(var::FRONTEND_ORIGINS))?;
        if environment == Environment::Production && frontend_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::new(
                var::FRONTEND_ORIGINS,
                "\"*\" cannot be used with credentialed cookies in production; list the SPA's origins",
            ));
        }
        let domain = vars.get(var::DOMAIN).map(str::to_owned);

        let (base_var, base_url) = match (vars.get(var::OLLAMA_BASE_URL), vars.get(var::OLLAMA_API_BASE_URL)) {
            (None, Some(url)) => (var::OLLAMA_API_BASE_URL, url),
            _ => (var::OLLAMA_BASE_URL, vars.value(var::OLLAMA_BASE_URL)),
        };
        let mut base_urls: Vec<String> = Vec::new();
        for base_url in base_url.split(',').map(|url| url.trim().trim_end_matches('/')).filter(|url| !url.is_empty()) {
            match url::Url::parse(base_url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => return Err(ConfigError::new(base_var, format!("not an http(s) URL: {base_url:?}"))),
            }
            if !base_urls.iter().any(|known| known == base_url) {
                base_urls.push(base_url.to_owned());
            }
        }
        if base_urls.is_empty() {
            return Err(ConfigError::new(base_var, "needs at least one http(s) URL"));
        }
        let seconds = |variable: Variable| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(vars.parse(variable, "a whole number of seconds")?))
        };
        let ollama = OllamaConfig {
            base_urls,
            connect_timeout: seconds(var::OLLAMA_CONNECT_TIMEOUT_SECS)?,
            first_byte_timeout: seconds(var::OLLAMA_FIRST_BYTE_TIMEOUT_SECS)?,
            stall_timeout: Some(seconds(var::PROVIDER_STALL_SECS)?).filter(|limit| !limit.is_zero()),
            idle_timeout: seconds(var::OLLAMA_IDLE_TIMEOUT_SECS)?,
            tags_cache_ttl: seconds(var::OLLAMA_TAGS_CACHE_SECS)?,
        };

        let user_cache_ttl = seconds(var::USER_CACHE_SECS)?;
        if user_cache_ttl > Duration::from_secs(MAX_USER_CACHE_SECS) {
            return Err(ConfigError::new(var::USER_CACHE_SECS, format!("must be at most {MAX_USER_CACHE_SECS}")));
        }
        let shutdown_grace = seconds(var::SHUTDOWN_GRACE_SECS)?;
        let heartbeat_interval = seconds(var::SSE_HEARTBEAT_SECS)?.max(Duration::from_secs(1));
        let request_timeout = seconds(var::REQUEST_TIMEOUT_SECS)?.max(Duration::from_secs(1));

        let generation_limits = generation_limits(&vars)?;
        let registration = registration_policy(&vars)?;
        let rate_limits = rate_limits(&vars)?;
        let max_body_bytes: usize = vars.parse(var::MAX_BODY_BYTES, "a number of bytes")?;
        if max_body_bytes < 1024 {
            return Err(ConfigError::new(var::MAX_BODY_BYTES, "must be at least 1024"));
        }
        let max_body_bytes_in_flight = match vars.parse_set::<usize>(var::MAX_BODY_BYTES_IN_FLIGHT, "a number of bytes")? {
            Some(bytes) if bytes < max_body_bytes => {
                return Err(ConfigError::new(var::MAX_BODY_BYTES_IN_FLIGHT, "must be at least MAX_BODY_BYTES"))
            }
            Some(bytes) => bytes,
            None => vars.parse::<usize>(var::MAX_BODY_BYTES_IN_FLIGHT, "a number of bytes")?.max(max_body_bytes),
        };
        let connections = connection_limits(&vars)?;
        let audit_retention_days: u64 = vars.parse(var::AUDIT_RETENTION_DAYS, "a whole number of days")?;
        if audit_retention_days > MAX_AUDIT_RETENTION_DAYS {
            return Err(ConfigError::new(var::AUDIT_RETENTION_DAYS, format!("must be at most {MAX_AUDIT_RETENTION_DAYS}")));
        }
        let audit_retention = (audit_retention_days > 0).then(|| Duration::from_secs(audit_retention_days * 24 * 3600));

        let log_format = match vars.value(var::LOG_FORMAT).to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(ConfigError::new(var::LOG_FORMAT, format!("must be text or json, got {other:?}"))),
        };
        let metrics_access = match vars.get(var::METRICS_TOKEN) {
            Some(token) => MetricsAccess::Token(Secret::new(token)),
            None => MetricsAccess::Addresses(address_list(vars.value(var::METRICS_ALLOW), var::METRICS_ALLOW)?),
        };
        let frontend_dir = match vars.get(var::FRONTEND_DIR) {
            Some(dir) if !Path::new(dir).join("index.html").is_file() => {
                return Err(ConfigError::new(
                    var::FRONTEND_DIR,
                    format!("{dir:?} is not a folder with an index.html (a built SPA)"),
                ))
            }
            Some(dir) => Some(PathBuf::from(dir)),
            None => None,
        };

        Ok(Config {
            log_format,
            metrics_access,
            frontend_dir,
            rate_limits,
            request_timeout,
            max_body_bytes,
            max_body_bytes_in_flight,
            connections,
            audit_retention,
            shutdown_grace,
            heartbeat_interval,
            generation_limits,
            registration,
            environment,
            host,
            port,
            data_dir,
            log_dir,
            log_level,
            database,
            database_max_connections,
            user_cache_ttl,
            jwt: JwtConfig {
                access_secret,
                refresh_secret,
                algorithm,
                access_ttl: Duration::from_secs(access_minutes * 60),
                refresh_ttl: Duration::from_secs(refresh_days * 24 * 3600),
                refresh_reuse_grace: Duration::from_secs(refresh_reuse_grace),
            },
            frontend_origins,
            domain,
            ollama,
            provider_keys_secret,
        })
    }
}

/// The variables set, blank ones left out.
#[derive(Default)]
struct Vars(HashMap<String, String>);

impl Vars {
    /// The value set, if any.
    fn get(&self, variable: Variable) -> Option<&str> {
        self.0.get(variable.name).map(|v| v.trim())
    }

    /// The value set, or else the declared default (only for variables that have one).
    fn value(&self, variable: Variable) -> &str {
        self.get(variable).unwrap_or_else(|| match variable.default {
            Fallback::Value(default) => default,
            Fallback::Described(_) => {
                debug_assert!(false, "{} has no default value: read it with `get`", variable.name);
                ""
            }
        })
    }

    /// [`Vars::value`] parsed.
    fn parse<T: std::str::FromStr>(&self, variable: Variable, expected: &str) -> Result<T, ConfigError> {
        let raw = self.value(variable);
        raw.parse::<T>().map_err(|_| ConfigError::new(variable, format!("expected {expected}, got {raw:?}")))
    }

    /// The value set, parsed; `None` when unset (for defaults worked out at startup).
    fn parse_set<T: std::str::FromStr>(&self, variable: Variable, expected: &str) -> Result<Option<T>, ConfigError> {
        self.get(variable).map(|_| self.parse(variable, expected)).transpose()
    }
}

/// Who may sign up, and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationPolicy {
    /// Anyone may register (`REGISTRATION=open`); otherwise only admins create accounts.
    pub open: bool,
    /// The role of self-registered accounts (`DEFAULT_ROLE`); the first account is admin.
    pub default_role: crate::store::users::Role,
}

fn registration_policy(vars: &Vars) -> Result<RegistrationPolicy, ConfigError> {
    use crate::store::users::Role;
    let open = match vars.value(var::REGISTRATION).to_ascii_lowercase().as_str() {
        "open" => true,
        "closed" => false,
        other => return Err(ConfigError::new(var::REGISTRATION, format!("must be open or closed, got {other:?}"))),
    };
    let default_role = match vars.value(var::DEFAULT_ROLE).to_ascii_lowercase().as_str() {
        "user" => Role::User,
        "guest" => Role::Guest,
        other => return Err(ConfigError::new(var::DEFAULT_ROLE, format!("must be user or guest, got {other:?}"))),
    };
    Ok(RegistrationPolicy { open, default_role })
}

fn generation_limits(vars: &Vars) -> Result<GenerationLimits, ConfigError> {
    let positive = |variable: Variable| -> Result<u32, ConfigError> {
        match vars.parse::<u32>(variable, "a positive whole number")? {
            0 => Err(ConfigError::new(variable, "must be at least 1")),
            value => Ok(value),
        }
    };
    Ok(GenerationLimits {
        max_answer_tokens: positive(var::MAX_ANSWER_TOKENS)?,
        max_num_ctx: positive(var::MAX_NUM_CTX)?,
        per_user: positive(var::GENERATIONS_PER_USER)? as usize,
        heartbeat_timeout: Duration::from_secs(positive(var::GENERATION_HEARTBEAT_TIMEOUT_SECS)?.into()),
    })
}

fn rate_limits(vars: &Vars) -> Result<RateLimitConfig, ConfigError> {
    let enabled = match vars.value(var::RATE_LIMITS).to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => true,
        "off" | "false" | "0" => false,
        other => return Err(ConfigError::new(var::RATE_LIMITS, format!("must be on or off, got {other:?}"))),
    };
    let spec = |variable: Variable| -> Result<RateSpec, ConfigError> {
        let raw = vars.value(variable);
        RateSpec::parse(raw).ok_or_else(|| ConfigError::new(variable, format!("expected a rate like 10/minute, got {raw:?}")))
    };
    let trusted_proxies = address_list(vars.get(var::TRUSTED_PROXIES).unwrap_or_default(), var::TRUSTED_PROXIES)?;
    Ok(RateLimitConfig {
        enabled,
        register: spec(var::RATE_LIMIT_REGISTER)?,
        login: spec(var::RATE_LIMIT_LOGIN)?,
        login_per_account: spec(var::RATE_LIMIT_LOGIN_PER_ACCOUNT)?,
        refresh: spec(var::RATE_LIMIT_REFRESH)?,
        logout: spec(var::RATE_LIMIT_LOGOUT)?,
        profile_read: spec(var::RATE_LIMIT_PROFILE_READ)?,
        profile_write: spec(var::RATE_LIMIT_PROFILE_WRITE)?,
        settings_read: spec(var::RATE_LIMIT_SETTINGS_READ)?,
        settings_write: spec(var::RATE_LIMIT_SETTINGS_WRITE)?,
        api_key: spec(var::RATE_LIMIT_API_KEY)?,
        trusted_proxies,
    })
}

/// Comma-separated addresses or CIDR ranges.
fn address_list(raw: &str, variable: Variable) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::new(variable, format!("{item:?} is not an IP address or CIDR range")))
        })
        .collect()
}

fn connection_limits(vars: &Vars) -> Result<ConnectionLimits, ConfigError> {
    let seconds = |variable: Variable| -> Result<Duration, ConfigError> {
        match vars.parse::<u64>(variable, "a whole number of seconds")? {
            0 => Err(ConfigError::new(variable, "must be at least 1")),
            secs => Ok(Duration::from_secs(secs)),
        }
    };
    let max_connections = match vars.parse_set::<usize>(var::MAX_CONNECTIONS, "a positive number")? {
        Some(0) => return Err(ConfigError::new(var::MAX_CONNECTIONS, "must be at least 1")),
        Some(max) => max,
        None => default_max_connections(open_file_limit()),
    };
    Ok(ConnectionLimits {
        header_read_timeout: seconds(var::HEADER_READ_TIMEOUT_SECS)?,
        keep_alive_idle: seconds(var::KEEP_ALIVE_IDLE_SECS)?,
        max_connections,
    })
}

/// Accepts a JSON list (`["http://a","http://b"]`) or a comma-separated list.
fn parse_origins(raw: &str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw)
            .map_err(|e| ConfigError::new(var::FRONTEND_ORIGINS, format!("not a JSON list of strings: {e}")))?
    } else {
        raw.split(',').map(str::to_owned).collect()
    };
    let origins: Vec<String> =
        items.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect();
    for origin in &origins {
        if origin == "*" {
            continue;
        }
        match url::Url::parse(origin) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() && u.path() == "/" => {}
            _ => {
                return Err(ConfigError::new(
                    var::FRONTEND_ORIGINS,
                    format!("{origin:?} is not an origin like http://localhost:5173"),
                ))
            }
        }
    }
    Ok(origins)
}

/// Production: both secrets must be set and at least 32 bytes. Development: a missing secret is
/// generated once and kept in `DATA_DIR/jwt-secrets.json` (mode 0600) so restarts keep sessions.
fn jwt_secrets(vars: &Vars, environment: Environment, data_dir: &Path) -> Result<(Secret, Secret), ConfigError> {
    let access = vars.get(var::JWT_SECRET_KEY);
    let refresh = vars.get(var::JWT_REFRESH_SECRET_KEY);
    for (variable, value) in [(var::JWT_SECRET_KEY, access), (var::JWT_REFRESH_SECRET_KEY, refresh)] {
        match value {
            Some(v) if v.len() < MIN_SECRET_BYTES && environment == Environment::Production => {
                return Err(ConfigError::new(variable, format!("must be at least {MIN_SECRET_BYTES} bytes in production")))
            }
            None if environment == Environment::Production => {
                return Err(ConfigError::new(
                    variable,
                    format!("is required in production (at least {MIN_SECRET_BYTES} random bytes, e.g. `openssl rand -hex 32`)"),
                ))
            }
            _ => {}
        }
    }
    if access.is_some() && access == refresh {
        return Err(ConfigError::new(var::JWT_REFRESH_SECRET_KEY, "must differ from JWT_SECRET_KEY"));
    }
    if let (Some(a), Some(r)) = (access, refresh) {
        return Ok((Secret::new(a), Secret::new(r)));
    }
    let stored = load_or_create_dev_secrets(data_dir)?;
    Ok((
        Secret::new(access.map(str::to_owned).unwrap_or(stored.access)),
        Secret::new(refresh.map(str::to_owned).unwrap_or(stored.refresh)),
    ))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecrets {
    access: String,
    refresh: String,
}

fn load_or_create_dev_secrets(data_dir: &Path) -> Result<StoredSecrets, ConfigError> {
    let path = data_dir.join("jwt-secrets.json");
    let io_err = |what: &str, e: std::io::Error| ConfigError::new(var::DATA_DIR, format!("{what} {}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return serde_json::from_str(&text)
                .map_err(|e| ConfigError::new(var::DATA_DIR, format!("{} is not valid: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot read", e)),
    }
    std::fs::create_dir_all(data_dir).map_err(|e| io_err("cannot create the directory for", e))?;
    let random_hex = || {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let secrets = StoredSecrets { access: random_hex(), refresh: random_hex() };
    let text = serde_json::to_string_pretty(&secrets).expect("two strings serialize");
    write_private_file(&path, text.as_bytes()).map_err(|e| io_err("cannot write", e))?;
    Ok(secrets)
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const SECRETS: [(&str, &str); 2] = [
        ("JWT_SECRET_KEY", "0123456789abcdef0123456789abcdef-access"),
        ("JWT_REFRESH_SECRET_KEY", "0123456789abcdef0123456789abcdef-refresh"),
    ];

    #[test]
    fn origins_accept_json_and_comma_lists() {
        assert_eq!(parse_origins(r#"["http://a.test","https://b.test/"]"#).unwrap(), ["http://a.test", "https://b.test"]);
        assert_eq!(parse_origins("http://a.test, http://b.test:8080").unwrap(), ["http://a.test", "http://b.test:8080"]);
        assert_eq!(parse_origins("not an origin").unwrap_err().var, "FRONTEND_ORIGINS");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases = [
            ("PORT", "eighty"),
            ("JWT_ALGORITHM", "RS256"),
            ("DATABASE_URL", "mysql://x"),
            ("ENVIRONMENT", "staging"),
            ("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", "-5"),
            ("OLLAMA_BASE_URL", "ftp://x"),
            ("USER_CACHE_SECS", "301"),
            ("USER_CACHE_SECS", "soon"),
            ("MAX_ANSWER_TOKENS", "0"),
            ("MAX_ANSWER_TOKENS", "lots"),
            ("MAX_NUM_CTX", "-1"),
            ("GENERATIONS_PER_USER", "0"),
            ("HEADER_READ_TIMEOUT_SECS", "0"),
            ("KEEP_ALIVE_IDLE_SECS", "a minute"),
            ("MAX_CONNECTIONS", "0"),
            ("AUDIT_RETENTION_DAYS", "36501"),
            ("AUDIT_RETENTION_DAYS", "-1"),
            ("LOG_FORMAT", "xml"),
            ("METRICS_ALLOW", "everyone"),
            ("FRONTEND_DIR", "/nonexistent/dist"),
        ];
        for (name, value) in cases {
            let mut v = vars(&SECRETS);
            v.push((name.into(), value.into()));
            let err = Config::from_vars(v).unwrap_err();
            assert_eq!(err.var, name, "{err}");
        }
    }

    #[test]
    fn production_refuses_missing_or_short_secrets() {
        let err = Config::from_vars(vars(&[("ENVIRONMENT", "production")])).unwrap_err();
        assert_eq!(err.var, "JWT_SECRET_KEY");
        let err = Config::from_vars(vars(&[
            ("ENVIRONMENT", "production"),
            ("JWT_SECRET_KEY", "short"),
            ("JWT_REFRESH_SECRET_KEY", "0123456789abcdef0123456789abcdef-refresh"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "JWT_SECRET_KEY");
        let mut short_keys_secret = vars(&SECRETS);
        short_keys_secret.push(("ENVIRONMENT".into(), "production".into()));
        short_keys_secret.push(("PROVIDER_KEYS_SECRET".into(), "hunter2".into()));
        assert_eq!(Config::from_vars(short_keys_secret).unwrap_err().var, "PROVIDER_KEYS_SECRET");
        let mut ok = vars(&SECRETS);
        ok.push(("ENVIRONMENT".into(), "production".into()));
        assert!(Config::from_vars(ok).is_ok());
    }

    #[test]
    fn development_generates_secrets_once_and_keeps_them_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let v = || vars(&[("DATA_DIR", data.to_str().unwrap())]);
        let first = Config::from_vars(v()).unwrap();
        let second = Config::from_vars(v()).unwrap();
        assert_eq!(first.jwt.access_secret.expose(), second.jwt.access_secret.expose());
        assert_ne!(first.jwt.access_secret.expose(), first.jwt.refresh_secret.expose());
        assert!(first.jwt.access_secret.expose().len() >= 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join("jwt-secrets.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{first:?}").contains(first.jwt.access_secret.expose()));
    }

    #[test]
    fn rate_limits_are_configurable_and_switchable_off() {
        let mut v = vars(&SECRETS);
        v.push(("RATE_LIMIT_LOGIN".into(), "3/hour".into()));
        v.push(("TRUSTED_PROXIES".into(), "10.0.0.0/8, 192.168.1.7".into()));
        let config = Config::from_vars(v).unwrap().rate_limits;
        assert!(config.enabled);
        assert_eq!(config.login, RateSpec { count: 3, per: Duration::from_secs(3600) });
        assert_eq!(config.register.describe(), "5 per 1 minute");
        assert_eq!(config.trusted_proxies.len(), 2);
        let mut off = vars(&SECRETS);
        off.push(("RATE_LIMITS".into(), "off".into()));
        assert!(!Config::from_vars(off).unwrap().rate_limits.enabled);
        let mut bad = vars(&SECRETS);
        bad.push(("RATE_LIMIT_LOGIN".into(), "lots".into()));
        assert_eq!(Config::from_vars(bad).unwrap_err().var, "RATE_LIMIT_LOGIN");
    }

    #[test]
    fn generation_limits_have_defaults_and_can_be_set() {
        assert_eq!(
            Config::from_vars(vars(&SECRETS)).unwrap().generation_limits,
            GenerationLimits {
                max_answer_tokens: 16_384,
                max_num_ctx: 32_768,
                per_user: 4,
                heartbeat_timeout: Duration::from_secs(15)
            }
        );
        let mut v = vars(&SECRETS);
        v.extend(vars(&[("MAX_ANSWER_TOKENS", "100"), ("MAX_NUM_CTX", "2048"), ("GENERATIONS_PER_USER", "1")]));
        let limits = Config::from_vars(v).unwrap().generation_limits;
        assert_eq!(
            limits,
            GenerationLimits {
                max_answer_tokens: 100,
                max_num_ctx: 2048,
                per_user: 1,
                heartbeat_timeout: Duration::from_secs(15)
            }
        );
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        assert_eq!(default_max_connections(None), 1024);
        assert_eq!(default_max_connections(Some(1_048_576)), 1024);
        assert_eq!(default_max_connections(Some(1024)), 480);
        assert_eq!(default_max_connections(Some(40)), 16);
        let mut v = vars(&SECRETS);
        v.push(("MAX_CONNECTIONS".into(), "5000".into()));
        assert_eq!(Config::from_vars(v).unwrap().connections.max_connections, 5000);
    }

    #[test]
    fn the_meanings_state_the_numbers_the_code_enforces() {
        let states = |variable: Variable, number: u64| {
            assert!(variable.meaning.contains(&number.to_string()), "{} should say {number}", variable.name)
        };
        states(var::JWT_SECRET_KEY, MIN_SECRET_BYTES as u64);
        states(var::ENVIRONMENT, MIN_SECRET_BYTES as u64);
        states(var::PROVIDER_KEYS_SECRET, MIN_SECRET_BYTES as u64);
        states(var::USER_CACHE_SECS, MAX_USER_CACHE_SECS);
        states(var::MAX_CONNECTIONS, DESCRIPTORS_RESERVED);
        states(var::AUDIT_RETENTION_DAYS, MAX_AUDIT_RETENTION_DAYS);
        assert!(var::MAX_CONNECTIONS.default_text().contains(&MAX_CONNECTIONS_CEILING.to_string()));
    }

    #[test]
    fn ollama_accepts_the_originals_variable_name() {
        let mut v = vars(&SECRETS);
        v.push(("OLLAMA_API_BASE_URL".into(), "http://gpu-box:11434/".into()));
        assert_eq!(Config::from_vars(v).unwrap().ollama.base_urls, ["http://gpu-box:11434"]);
    }

    #[test]
    fn several_ollama_hosts_are_listed_once_each() {
        let mut v = vars(&SECRETS);
        v.push(("OLLAMA_BASE_URL".into(), "http://gpu-a:11434/, http://gpu-b:11434,http://gpu-a:11434".into()));
        assert_eq!(Config::from_vars(v).unwrap().ollama.base_urls, ["http://gpu-a:11434", "http://gpu-b:11434"]);
        let mut v = vars(&SECRETS);
        v.push(("OLLAMA_BASE_URL".into(), "http://gpu-a:11434,ftp://b".into()));
        assert_eq!(Config::from_vars(v).unwrap_err().var, "OLLAMA_BASE_URL");
    }
}
