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
    fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self { var, problem: problem.into() }
    }
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
    pub base_url: String,
    pub connect_timeout: Duration,
    /// How long to wait for the first byte of an answer: a cold model can take minutes to load.
    pub first_byte_timeout: Duration,
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
}

impl Default for GenerationLimits {
    fn default() -> Self {
        GenerationLimits { max_answer_tokens: 16_384, max_num_ctx: 32_768, per_user: 4 }
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
    /// Peers whose `X-Real-IP` / `X-Forwarded-For` are believed (reverse proxies).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub environment: Environment,
    pub host: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_level: String,
    pub database: DatabaseConfig,
    pub database_max_connections: u32,
    /// How long a user row is reused by authenticated requests (see `store::user_cache`):
    /// the delay before a logout, deactivation or role change made through another process
    /// on the same database takes effect here.
    pub user_cache_ttl: Duration,
    pub jwt: JwtConfig,
    pub frontend_origins: Vec<String>,
    pub domain: Option<String>,
    pub ollama: OllamaConfig,
    /// How long running generations may go on after a shutdown signal before they are stopped.
    pub shutdown_grace: Duration,
    /// Interval of the comments that keep an event stream open while a model loads.
    pub heartbeat_interval: Duration,
    pub generation_limits: GenerationLimits,
    pub rate_limits: RateLimitConfig,
    /// Longest time a non-streaming request may take.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Bytes of message-sized request bodies held in memory at once.
    pub max_body_bytes_in_flight: usize,
    pub connections: ConnectionLimits,
}

const MIN_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads `.env` (if present) and the process environment. Process variables win over `.env`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_vars(std::env::vars())
    }

    /// Builds the configuration from explicit variables (tests use this).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars = Vars(vars.into_iter().filter(|(_, v)| !v.trim().is_empty()).collect());

        let environment = match vars.get("ENVIRONMENT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::new("ENVIRONMENT", format!("must be development or production, got {other:?}")))
            }
        };
        let host: IpAddr = vars.parse("HOST", "an IP address such as 127.0.0.1 or 0.0.0.0")?.unwrap_or([127, 0, 0, 1].into());
        let port: u16 = vars.parse("PORT", "a port number (0-65535)")?.unwrap_or(8000);
        let data_dir = PathBuf::from(vars.get("DATA_DIR").unwrap_or("./data"));
        let log_dir = PathBuf::from(vars.get("LOG_DIR").unwrap_or("./logs"));
        let log_level = vars.get("LOG_LEVEL").unwrap_or("info").to_ascii_lowercase();
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError::new("LOG_LEVEL", format!("not a log level or filter: {log_level:?}")));
        }

        let database = match vars.get("DATABASE_URL") {
            None => DatabaseConfig::Sqlite { path: data_dir.join("rovertchat.db") },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres { url: Secret::new(url) }
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() || path == ":memory:" {
                    return Err(ConfigError::new("DATABASE_URL", "a sqlite: URL needs a file path"));
                }
                DatabaseConfig::Sqlite { path: PathBuf::from(path) }
            }
            Some(url) => {
                let scheme = url.split(':').next().unwrap_or_default();
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    format!(
                        "unsupported scheme {scheme:?}: use postgres:// or postgresql://, or leave it unset for embedded SQLite"
                    ),
                ));
            }
        };
        // Two connections per core keep the cores busy without queueing in PostgreSQL.
        let default_connections = std::thread::available_parallelism().map_or(4, |n| (n.get() as u32 * 2).max(4));
        let database_max_connections: u32 =
            vars.parse("DATABASE_MAX_CONNECTIONS", "a positive number")?.unwrap_or(default_connections);
        if database_max_connections == 0 {
            return Err(ConfigError::new("DATABASE_MAX_CONNECTIONS", "must be at least 1"));
        }

        let algorithm = match vars.get("JWT_ALGORITHM").unwrap_or("HS256").to_ascii_uppercase().as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            other => {
                return Err(ConfigError::new(
                    "JWT_ALGORITHM",
                    format!("only HMAC algorithms (HS256, HS384, HS512) are accepted, got {other:?}"),
                ))
            }
        };
        let access_minutes: u64 = vars.parse("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", "a whole number of minutes")?.unwrap_or(60);
        let refresh_days: u64 = vars.parse("JWT_REFRESH_TOKEN_EXPIRE_DAYS", "a whole number of days")?.unwrap_or(7);
        if access_minutes == 0 {
            return Err(ConfigError::new("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", "must be at least 1"));
        }
        if refresh_days == 0 {
            return Err(ConfigError::new("JWT_REFRESH_TOKEN_EXPIRE_DAYS", "must be at least 1"));
        }
        let (access_secret, refresh_secret) = jwt_secrets(&vars, environment, &data_dir)?;

        let frontend_origins = parse_origins(vars.get("FRONTEND_ORIGINS").unwrap_or("http://localhost:5173"))?;
        if environment == Environment::Production && frontend_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::new(
                "FRONTEND_ORIGINS",
                "\"*\" cannot be used with credentialed cookies in production; list the SPA's origins",
            ));
        }
        let domain = vars.get("DOMAIN").map(str::to_owned);

        let base_url = vars
            .get("OLLAMA_BASE_URL")
            .or_else(|| vars.get("OLLAMA_API_BASE_URL"))
            .unwrap_or("http://127.0.0.1:11434")
            .trim_end_matches('/')
            .to_owned();
        let base_var = if vars.get("OLLAMA_BASE_URL").is_some() { "OLLAMA_BASE_URL" } else { "OLLAMA_API_BASE_URL" };
        match url::Url::parse(&base_url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => return Err(ConfigError::new(base_var, format!("not an http(s) URL: {base_url:?}"))),
        }
        let ollama = OllamaConfig {
            base_url,
            connect_timeout: Duration::from_secs(
                vars.parse("OLLAMA_CONNECT_TIMEOUT_SECS", "a whole number of seconds")?.unwrap_or(5),
            ),
            first_byte_timeout: Duration::from_secs(
                vars.parse("OLLAMA_FIRST_BYTE_TIMEOUT_SECS", "a whole number of seconds")?.unwrap_or(600),
            ),
            idle_timeout: Duration::from_secs(
                vars.parse("OLLAMA_IDLE_TIMEOUT_SECS", "a whole number of seconds")?.unwrap_or(300),
            ),
            tags_cache_ttl: Duration::from_secs(
                vars.parse("OLLAMA_TAGS_CACHE_SECS", "a whole number of seconds")?.unwrap_or(300),
            ),
        };

        let user_cache_secs: u64 = vars.parse("USER_CACHE_SECS", "a whole number of seconds")?.unwrap_or(5);
        if user_cache_secs > 300 {
            return Err(ConfigError::new("USER_CACHE_SECS", "must be at most 300"));
        }

        let shutdown_grace = Duration::from_secs(vars.parse("SHUTDOWN_GRACE_SECS", "a whole number of seconds")?.unwrap_or(30));

        let heartbeat_interval =
            Duration::from_secs(vars.parse("SSE_HEARTBEAT_SECS", "a whole number of seconds")?.unwrap_or(15).max(1));

        let generation_limits = generation_limits(&vars)?;
        let rate_limits = rate_limits(&vars)?;
        let request_timeout =
            Duration::from_secs(vars.parse("REQUEST_TIMEOUT_SECS", "a whole number of seconds")?.unwrap_or(30).max(1));
        let max_body_bytes: usize = vars.parse("MAX_BODY_BYTES", "a number of bytes")?.unwrap_or(16 * 1024 * 1024);
        if max_body_bytes < 1024 {
            return Err(ConfigError::new("MAX_BODY_BYTES", "must be at least 1024"));
        }
        let max_body_bytes_in_flight: usize =
            vars.parse("MAX_BODY_BYTES_IN_FLIGHT", "a number of bytes")?.unwrap_or((64 * 1024 * 1024).max(max_body_bytes));
        if max_body_bytes_in_flight < max_body_bytes {
            return Err(ConfigError::new("MAX_BODY_BYTES_IN_FLIGHT", "must be at least MAX_BODY_BYTES"));
        }
        let connections = connection_limits(&vars)?;

        Ok(Config {
            rate_limits,
            request_timeout,
            max_body_bytes,
            max_body_bytes_in_flight,
            connections,
            shutdown_grace,
            heartbeat_interval,
            generation_limits,
            environment,
            host,
            port,
            data_dir,
            log_dir,
            log_level,
            database,
            database_max_connections,
            user_cache_ttl: Duration::from_secs(user_cache_secs),
            jwt: JwtConfig {
                access_secret,
                refresh_secret,
                algorithm,
                access_ttl: Duration::from_secs(access_minutes * 60),
                refresh_ttl: Duration::from_secs(refresh_days * 24 * 3600),
                refresh_reuse_grace: Duration::from_secs(
                    vars.parse("REFRESH_REUSE_GRACE_SECS", "a whole number of seconds")?.unwrap_or(10),
                ),
            },
            frontend_origins,
            domain,
            ollama,
        })
    }
}

struct Vars(HashMap<String, String>);

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim())
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str, expected: &str) -> Result<Option<T>, ConfigError> {
        self.get(name)
            .map(|raw| raw.parse::<T>().map_err(|_| ConfigError::new(name, format!("expected {expected}, got {raw:?}"))))
            .transpose()
    }
}

fn generation_limits(vars: &Vars) -> Result<GenerationLimits, ConfigError> {
    let defaults = GenerationLimits::default();
    let positive = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
        match vars.parse::<u32>(name, "a positive whole number")? {
            Some(0) => Err(ConfigError::new(name, "must be at least 1")),
            value => Ok(value.unwrap_or(default)),
        }
    };
    Ok(GenerationLimits {
        max_answer_tokens: positive("MAX_ANSWER_TOKENS", defaults.max_answer_tokens)?,
        max_num_ctx: positive("MAX_NUM_CTX", defaults.max_num_ctx)?,
        per_user: positive("GENERATIONS_PER_USER", defaults.per_user as u32)? as usize,
    })
}

fn rate_limits(vars: &Vars) -> Result<RateLimitConfig, ConfigError> {
    let enabled = match vars.get("RATE_LIMITS").map(str::to_ascii_lowercase).as_deref() {
        None | Some("on") | Some("true") | Some("1") => true,
        Some("off") | Some("false") | Some("0") => false,
        Some(other) => return Err(ConfigError::new("RATE_LIMITS", format!("must be on or off, got {other:?}"))),
    };
    let spec = |name: &'static str, default: u32| -> Result<RateSpec, ConfigError> {
        match vars.get(name) {
            None => Ok(RateSpec::per_minute(default)),
            Some(raw) => {
                RateSpec::parse(raw).ok_or_else(|| ConfigError::new(name, format!("expected a rate like 10/minute, got {raw:?}")))
            }
        }
    };
    let mut trusted_proxies = Vec::new();
    for item in vars.get("TRUSTED_PROXIES").unwrap_or_default().split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let net = item
            .parse::<ipnet::IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| ConfigError::new("TRUSTED_PROXIES", format!("{item:?} is not an IP address or CIDR range")))?;
        trusted_proxies.push(net);
    }
    Ok(RateLimitConfig {
        enabled,
        register: spec("RATE_LIMIT_REGISTER", 5)?,
        login: spec("RATE_LIMIT_LOGIN", 10)?,
        login_per_account: spec("RATE_LIMIT_LOGIN_PER_ACCOUNT", 10)?,
        refresh: spec("RATE_LIMIT_REFRESH", 20)?,
        logout: spec("RATE_LIMIT_LOGOUT", 10)?,
        profile_read: spec("RATE_LIMIT_PROFILE_READ", 30)?,
        profile_write: spec("RATE_LIMIT_PROFILE_WRITE", 15)?,
        settings_read: spec("RATE_LIMIT_SETTINGS_READ", 30)?,
        settings_write: spec("RATE_LIMIT_SETTINGS_WRITE", 15)?,
        trusted_proxies,
    })
}

fn connection_limits(vars: &Vars) -> Result<ConnectionLimits, ConfigError> {
    let seconds = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
        match vars.parse::<u64>(name, "a whole number of seconds")?.unwrap_or(default) {
            0 => Err(ConfigError::new(name, "must be at least 1")),
            secs => Ok(Duration::from_secs(secs)),
        }
    };
    let max_connections = match vars.parse::<usize>("MAX_CONNECTIONS", "a positive number")? {
        Some(0) => return Err(ConfigError::new("MAX_CONNECTIONS", "must be at least 1")),
        Some(max) => max,
        None => default_max_connections(open_file_limit()),
    };
    Ok(ConnectionLimits {
        header_read_timeout: seconds("HEADER_READ_TIMEOUT_SECS", 15)?,
        // Longer than the 60 s a reverse proxy usually keeps its idle upstream connections, so
        // the proxy never sends a request on a connection being closed here.
        keep_alive_idle: seconds("KEEP_ALIVE_IDLE_SECS", 75)?,
        max_connections,
    })
}

/// Accepts a JSON list (`["http://a","http://b"]`) or a comma-separated list.
fn parse_origins(raw: &str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw)
            .map_err(|e| ConfigError::new("FRONTEND_ORIGINS", format!("not a JSON list of strings: {e}")))?
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
                    "FRONTEND_ORIGINS",
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
    let access = vars.get("JWT_SECRET_KEY");
    let refresh = vars.get("JWT_REFRESH_SECRET_KEY");
    for (name, value) in [("JWT_SECRET_KEY", access), ("JWT_REFRESH_SECRET_KEY", refresh)] {
        match value {
            Some(v) if v.len() < MIN_SECRET_BYTES && environment == Environment::Production => {
                return Err(ConfigError::new(name, format!("must be at least {MIN_SECRET_BYTES} bytes in production")))
            }
            None if environment == Environment::Production => {
                return Err(ConfigError::new(
                    name,
                    format!("is required in production (at least {MIN_SECRET_BYTES} random bytes, e.g. `openssl rand -hex 32`)"),
                ))
            }
            _ => {}
        }
    }
    if access.is_some() && access == refresh {
        return Err(ConfigError::new("JWT_REFRESH_SECRET_KEY", "must differ from JWT_SECRET_KEY"));
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
    let io_err = |what: &str, e: std::io::Error| ConfigError::new("DATA_DIR", format!("{what} {}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return serde_json::from_str(&text)
                .map_err(|e| ConfigError::new("DATA_DIR", format!("{} is not valid: {e}", path.display())))
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
            GenerationLimits { max_answer_tokens: 16_384, max_num_ctx: 32_768, per_user: 4 }
        );
        let mut v = vars(&SECRETS);
        v.extend(vars(&[("MAX_ANSWER_TOKENS", "100"), ("MAX_NUM_CTX", "2048"), ("GENERATIONS_PER_USER", "1")]));
        let limits = Config::from_vars(v).unwrap().generation_limits;
        assert_eq!(limits, GenerationLimits { max_answer_tokens: 100, max_num_ctx: 2048, per_user: 1 });
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
    fn ollama_accepts_the_originals_variable_name() {
        let mut v = vars(&SECRETS);
        v.push(("OLLAMA_API_BASE_URL".into(), "http://gpu-box:11434/".into()));
        assert_eq!(Config::from_vars(v).unwrap().ollama.base_url, "http://gpu-box:11434");
    }
}
