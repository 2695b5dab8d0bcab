use std::process::ExitCode;

/// glibc raises its mmap threshold to the size of the first large block freed, so argon2's
/// 19 MiB working memory would afterwards come from the heap and stay resident (440 MiB seen
/// during a login flood). A fixed threshold keeps such blocks mmapped and returned at once
/// (58 MiB under the same flood, BENCHMARKS.md), without the idle memory of another allocator.
fn keep_large_blocks_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use rovertchat::config::{Config, VARIABLES};
use rovertchat::store::Store;
use rovertchat::{diagnostics, telemetry, Application};

#[derive(Parser)]
#[command(name = "rovertchat", version, about = "The rovertChat backend: accounts, chats and Ollama")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// The command line with one flag per configuration variable, on every subcommand. Read
    /// after `.env` is loaded, so that its values count where the process environment has none.
    fn parse_with_configuration() -> (Cli, clap::ArgMatches) {
        let command = VARIABLES.iter().fold(Cli::command(), |command, variable| {
            command.arg(variable.argument().global(true).help_heading("Configuration (flag or environment variable)"))
        });
        let matches = command.get_matches();
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        (cli, matches)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts from a shell (the same rules and audit log as the API).
    User {
        #[command(subcommand)]
        command: rovertchat::cli::UserCommand,
    },
    /// Check the configuration, the database, pending migrations and the upstream (exit 1 if one fails).
    Check,
}

fn main() -> ExitCode {
    keep_large_blocks_out_of_the_heap();
    // Process variables win over `.env`, which sets only those not already set.
    let _ = dotenvy::dotenv();
    let (cli, matches) = Cli::parse_with_configuration();
    let checking = matches!(cli.command, Some(Command::Check));
    let config = match Config::from_arg_matches(&matches) {
        Ok(config) => config,
        Err(err) if checking => {
            println!("{}", diagnostics::bad_configuration(err));
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if checking {
        return if runtime.block_on(diagnostics::check(&config)) { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let result = runtime.block_on(async move {
        let _log_guard = telemetry::init(&config)?;
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Check => unreachable!("checked before logging starts"),
            Command::Migrate => {
                let store = Store::connect(&config.database, 1).await?;
                store.migrate().await?;
                tracing::info!(backend = store.backend_name(), "migrations applied");
                Ok(())
            }
            Command::User { command } => rovertchat::cli::run_user_command(&config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "fatal");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "rovertchat starting");
    let app = Application::build(config).await?;
    app.log_startup();
    app.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested");
}
