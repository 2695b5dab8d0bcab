//! Logs to stdout and to `LOG_DIR/app.log` (rotated daily). Never given secrets: tokens,
//! passwords and cookies are not logged anywhere in the crate.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::Config;

/// Installs the global subscriber. Keep the guard alive until exit so the file is flushed.
pub fn init(config: &Config) -> anyhow::Result<WorkerGuard> {
    std::fs::create_dir_all(&config.log_dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", config.log_dir.display()))?;
    let appender = tracing_appender::rolling::daily(&config.log_dir, "app.log");
    let (file_writer, guard) = tracing_appender::non_blocking(appender);
    // sqlx logs every statement at info; keep it quiet unless asked for.
    let filter = EnvFilter::try_new(format!("sqlx=warn,{}", config.log_level))?;
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_target(false))
        .with(fmt::layer().with_ansi(false).with_writer(file_writer))
        .try_init()?;
    Ok(guard)
}
