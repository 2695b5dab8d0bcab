//! `rovertchat check`: one line per thing the server needs (its configuration, the database,
//! its migrations, each upstream), each `ok` or `FAIL` with what was found.

use std::fmt::Display;

use crate::background::BackgroundTasks;
use crate::config::{Config, DatabaseConfig};
use crate::ollama::OllamaClient;
use crate::store::Store;
use crate::upstream::keys::KeyCipher;
use crate::upstream::Upstreams;

/// One checked thing and what was found.
pub struct Finding {
    pub ok: bool,
    pub what: String,
    pub detail: String,
}

impl Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<4} {}: {}", if self.ok { "ok" } else { "FAIL" }, self.what, self.detail)
    }
}

fn found(ok: bool, what: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding { ok, what: what.into(), detail: detail.into() }
}

/// The line of a configuration that could not be read.
pub fn bad_configuration(err: impl Display) -> Finding {
    found(false, "config", err.to_string())
}

/// Checks everything, printing each line as it is known; true when all are fine.
pub async fn check(config: &Config) -> bool {
    let mut all_ok = true;
    let mut report = |finding: Finding| {
        all_ok &= finding.ok;
        println!("{finding}");
    };
    report(found(true, "config", format!("valid ({:?} environment)", config.environment).to_lowercase()));
    let location = config.database.location();
    let fresh_sqlite = matches!(&config.database, DatabaseConfig::Sqlite { path } if !path.exists());
    let mut checked = Vec::new();
    if fresh_sqlite {
        report(found(true, "database", format!("sqlite at {location} does not exist yet; it is created at the first start")));
        let all = crate::store::SQLITE_MIGRATIONS.iter().filter(|m| !m.migration_type.is_down_migration()).count();
        report(found(true, "migrations", format!("{all} pending; applied at the first start")));
    } else {
        match Store::connect(&config.database, 1).await {
            Ok(store) => {
                report(found(true, "database", format!("{} at {location} reachable", store.backend_name())));
                let pending = store.pending_migrations().await;
                report(match pending {
                    0 => found(true, "migrations", "none pending"),
                    n => {
                        found(true, "migrations", format!("{n} pending; applied at the next start (or by `rovertchat migrate`)"))
                    }
                });
                if pending == 0 {
                    checked = check_providers(config, &store, &mut report).await;
                }
                store.close().await;
            }
            Err(err) => report(found(false, "database", format!("{err:#}"))),
        }
    }
    // The hosts of OLLAMA_BASE_URL the database does not have yet, named as the server will
    // name them when it adds them at its start.
    for (index, base_url) in config.ollama.base_urls.iter().enumerate() {
        if checked.iter().any(|url| url == base_url) {
            continue;
        }
        let upstream = match index {
            0 => "upstream default".to_owned(),
            n => format!("upstream default-{}", n + 1),
        };
        report(match OllamaClient::new(&config.ollama, base_url, None) {
            Ok(ollama) => match tokio::time::timeout(config.ollama.connect_timeout * 2, ollama.model_names()).await {
                Ok(Ok(models)) => found(true, upstream, format!("reachable at {} ({} models)", ollama.address(), models.len())),
                Ok(Err(err)) => found(false, upstream, format!("{err} ({})", ollama.address())),
                Err(_) => found(
                    false,
                    upstream,
                    format!("no answer at {} within {:?}", ollama.address(), config.ollama.connect_timeout * 2),
                ),
            },
            Err(err) => found(false, upstream, format!("{err:#}")),
        });
    }
    all_ok
}

/// The providers of the database, probed as the server probes them (their keys decrypted with
/// the configured secret); returns their base URLs.
async fn check_providers(config: &Config, store: &Store, report: &mut impl FnMut(Finding)) -> Vec<String> {
    let background = BackgroundTasks::default();
    let cipher = KeyCipher::new(config.provider_keys_secret.expose());
    let upstreams = Upstreams::new(store.clone(), config.ollama.clone(), cipher, background.spawner());
    if let Err(err) = upstreams.reload().await {
        report(found(false, "providers", format!("cannot be read: {err}")));
        return Vec::new();
    }
    upstreams.first_probes().await;
    let mut checked = Vec::new();
    for provider in upstreams.providers().iter() {
        checked.push(provider.base_url().to_owned());
        let upstream = format!("upstream {}", provider.name);
        let address = provider.address().unwrap_or("-");
        if !provider.enabled {
            report(found(true, upstream, format!("disabled ({address})")));
            continue;
        }
        let status = provider.status();
        report(match (status.healthy, status.last_error) {
            (true, _) => found(true, upstream, format!("reachable at {address} ({} models)", status.models.len())),
            (false, Some(error)) => found(false, upstream, format!("{error} ({address})")),
            (false, None) => found(false, upstream, format!("no answer at {address}")),
        });
    }
    background.stop().await;
    checked
}
