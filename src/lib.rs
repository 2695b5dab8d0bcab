//! rovertchat: the Rust backend of the rovertChat self-hosted AI chat platform.
//!
//! `routes` (HTTP) call `services` (behaviour), which call the `store` (SQL) and the
//! `ollama` client. [`Application`] binds a listener and serves; tests start it in-process.

pub mod auth;
pub mod background;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod frontend;
pub mod guards;
pub mod lifetime;
pub mod metrics;
pub mod names;
pub mod ollama;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod schemas;
pub mod server;
pub mod services;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod validation;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::Request;
use futures_util::FutureExt;
use tokio::net::TcpListener;
use tower::util::MapRequestLayer;
use tower::Layer;

use crate::auth::tokens::TokenKeys;
use crate::background::BackgroundTasks;
use crate::config::Config;
use crate::server::Server;
use crate::services::admission::Admission;
use crate::services::api_keys::ApiKeyCheck;
use crate::services::generation::Generations;
use crate::services::model_access::ModelAccess;
use crate::services::quotas::Quotas;
use crate::state::AppState;
use crate::store::Store;
use crate::upstream::keys::KeyCipher;
use crate::upstream::Upstreams;
use crate::validation::BodyLimits;

/// How long answers stopped at the end of the shutdown grace period have to send their last
/// event before their connections are closed.
const LAST_EVENTS_WINDOW: Duration = Duration::from_secs(1);

/// The server: connected to its database (migrated), bound to its port, ready to serve.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Stopped when the server has stopped, or when the application is dropped unused.
    background: BackgroundTasks,
}

impl Application {
    /// Connects and migrates the database, builds the state and binds `HOST:PORT` (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store =
            Store::connect(&config.database, config.database_max_connections).await?.with_row_cache(config.user_cache_ttl);
        store.migrate().await?;
        let background = BackgroundTasks::default();
        let rate_limits = guards::RateLimits::new(&config.rate_limits);
        rate_limits.spawn_housekeeping(&background);
        services::accounts::spawn_login_attempt_pruning(&background, store.clone(), config.rate_limits.login_per_account);
        if let Some(retention) = config.audit_retention {
            services::audit::spawn_pruning(&background, store.clone(), retention);
        }
        metrics::install();
        metrics::spawn_upkeep(&background);
        let instance = uuid::Uuid::new_v4();
        let bus = match store.pool() {
            store::Pool::Postgres(pool) => cluster::Bus::shared(pool.clone(), instance, &background),
            store::Pool::Sqlite(_) => cluster::Bus::single(),
        };
        // Waits for the providers' first probes, whose lines say at startup which are reachable.
        let cipher = KeyCipher::new(config.provider_keys_secret.expose());
        let upstreams = Upstreams::start(store.clone(), config.ollama.clone(), cipher, background.spawner()).await?;
        let state = AppState::new(state::Parts {
            frontend: config.frontend_dir.as_deref().map(frontend::Frontend::new),
            rate_limits,
            body_limits: BodyLimits::new(config.max_body_bytes, config.max_body_bytes_in_flight, config.request_timeout),
            tokens: Arc::new(TokenKeys::new(&config.jwt)),
            generations: Generations::new(store.clone(), upstreams.clone(), config.generation_limits, instance, bus.clone()),
            api_key_check: ApiKeyCheck::new(store.clone()),
            admission: Admission {
                models: ModelAccess::new(store.clone(), config.user_cache_ttl),
                quotas: Quotas::new(store.clone(), config.user_cache_ttl, config.generation_limits.per_user),
            },
            upstreams,
            store,
            config: Arc::new(config),
        });
        state.generations.spawn_upkeep(&background);
        connect_replicas(&state, &bus, &background);
        let address = SocketAddr::new(state.config.host, state.config.port);
        let listener = TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
        Ok(Application { listener, state, background })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// What a newcomer needs to know once the server listens (the version, and whether the
    /// upstream is reachable, were logged while it was built).
    pub fn log_startup(&self) {
        let config = &self.state.config;
        let address = self.local_addr();
        let host = if address.ip().is_unspecified() { "localhost".to_owned() } else { address.ip().to_string() };
        let host = if address.is_ipv6() && !address.ip().is_unspecified() { format!("[{host}]") } else { host };
        let url = format!("http://{host}:{}", address.port());
        let backend = self.state.store.backend_name();
        tracing::info!(backend, location = %config.database.location(), "database ready");
        tracing::info!(%address, %url, "rovertchat listening");
        tracing::info!(url = format!("{url}/docs"), "API documentation");
        match &config.frontend_dir {
            Some(folder) => tracing::info!(folder = %folder.display(), %url, "web UI served"),
            None => tracing::info!("no web UI served (FRONTEND_DIR is unset)"),
        }
    }

    /// Serves until `shutdown` completes; then stops accepting, lets requests in progress and
    /// running generations go on for the grace period (then stops the generations, storing
    /// their partial answers), and closes every connection still open a moment later.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let grace = self.state.config.shutdown_grace;
        let router = routes::router(self.state.clone());
        let app = MapRequestLayer::new(trim_api_trailing_slash).layer(router);
        let server = Server::start(self.listener, app, self.state.config.connections);
        shutdown.await;
        let generations = self.state.generations.clone();
        tracing::info!(running = generations.running_count(), "shutting down");
        // Generations end on their own schedule while the connections drain (their streams are
        // among those connections); their one shutdown is awaited by both.
        let generations_stopped = tokio::spawn(async move { generations.shutdown(grace).await }).map(drop).shared();
        let stopped = generations_stopped.clone();
        server
            .shut_down(async move {
                tokio::time::sleep(grace).await;
                stopped.await;
                tokio::time::sleep(LAST_EVENTS_WINDOW).await;
            })
            .await;
        generations_stopped.await;
        self.background.stop().await;
        self.state.store.close().await;
        Ok(())
    }
}

/// On PostgreSQL: tells the other replicas what changed here, and applies what changed there
/// (cached rows forgotten, generations stopped or followed).
fn connect_replicas(state: &AppState, bus: &cluster::Bus, background: &BackgroundTasks) {
    let store::Pool::Postgres(pool) = state.store.pool() else { return };
    let mut announced = state.store.announced();
    let outgoing = bus.clone();
    background.spawn(async move {
        loop {
            match announced.recv().await {
                Ok(change) => outgoing.publish(cluster::Notice::Changed { change }),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "changes were not announced to the other replicas");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let receiver = state.clone();
    let spawner = background.spawner();
    bus.spawn_listener(pool, background, move |received| {
        let change = match &received {
            cluster::Received::Notice(cluster::Notice::Changed { change }) => Some(Some(change)),
            cluster::Received::Reconnected => Some(None),
            cluster::Received::Notice(_) => None,
        };
        match change {
            Some(change) => {
                receiver.store.forget_changed(change);
                if matches!(change, None | Some(store::Change::ModelPolicies)) {
                    receiver.admission.models.forget();
                }
                if matches!(change, None | Some(store::Change::Quotas)) {
                    receiver.admission.quotas.forget();
                }
                if matches!(change, None | Some(store::Change::Providers)) {
                    let upstreams = receiver.upstreams.clone();
                    spawner.spawn(async move {
                        if let Err(err) = upstreams.reload().await {
                            tracing::warn!(error = %err, "reading the providers another replica changed failed");
                        }
                    });
                }
            }
            None => receiver.generations.on_notice(&received),
        }
    });
}

/// `/api/v1/users/` is the same route as `/api/v1/users` (the original answered a 307
/// redirect). Only API paths: the documentation pages live under their own slashes.
fn trim_api_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.starts_with("/api/") && path.len() > 5 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}
