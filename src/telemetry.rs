//! Logs to stdout and to `LOG_DIR/app.log` (rotated daily). Never given secrets: tokens,
//! passwords and cookies are not logged anywhere in the crate.

use std::fmt as stdfmt;

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. Keep the guard alive until exit so the file is flushed.
pub fn init(config: &Config) -> anyhow::Result<WorkerGuard> {
    std::fs::create_dir_all(&config.log_dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", config.log_dir.display()))?;
    let appender = tracing_appender::rolling::daily(&config.log_dir, "app.log");
    let (file_writer, guard) = tracing_appender::non_blocking(appender);
    // sqlx logs every statement at info; keep it quiet unless asked for.
    let filter = EnvFilter::try_new(format!("sqlx=warn,{}", config.log_level))?;
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Text => registry
            .with(fmt::layer().with_target(false).fmt_fields(EscapedFields))
            .with(fmt::layer().with_ansi(false).fmt_fields(EscapedFieldsForFile).with_writer(file_writer))
            .try_init()?,
        // JSON escapes what it writes; the span's fields (request id, route, user) are in `span`.
        LogFormat::Json => registry
            .with(fmt::layer().json().with_target(false).with_current_span(true).with_span_list(false))
            .with(fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(file_writer))
            .try_init()?,
    }
    Ok(guard)
}

/// Formats fields as `tracing`'s default does (`message`, then `name=value`), with control
/// characters escaped: a value sent by a client (a model name with CR LF) cannot start a
/// forged log line or carry terminal escapes.
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> stdfmt::Result {
        let mut visitor = EscapingVisitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// The same for the file: each layer keeps a span's formatted fields under its formatter's type,
/// so two layers sharing one type would each append a recorded field (`user_id`) twice.
pub struct EscapedFieldsForFile;

impl<'writer> FormatFields<'writer> for EscapedFieldsForFile {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> stdfmt::Result {
        EscapedFields.format_fields(writer, fields)
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: stdfmt::Result,
}

impl Visit for EscapingVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn stdfmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let text = format!("{value:?}");
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{}", escape_controls(&text))
        } else {
            write!(self.writer, "{separator}{}={}", field.name(), escape_controls(&text))
        };
    }
}

/// `text` with every control character written as a Rust escape (`\r`, `\n`, `\u{1b}`).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_value_with_cr_lf_stays_on_its_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = fmt().with_ansi(false).fmt_fields(EscapedFields).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            let model = "tiny\r\n2026-01-01T00:00:00Z  INFO admin promoted user_id=evil\x1b[2J";
            tracing::info!(model = %model, "admin pulls a model");
        });
        let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(logged.contains("model=tiny\\r\\n2026-01-01"), "{logged}");
        assert!(!logged.contains('\x1b'), "{logged}");
        assert!(logged.contains("admin pulls a model"), "{logged}");
    }
}
