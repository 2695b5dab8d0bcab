use std::sync::Arc;

use crate::auth::tokens::TokenKeys;
use crate::config::Config;
use crate::frontend::Frontend;
use crate::guards::RateLimits;
use crate::services::admission::Admission;
use crate::services::api_keys::ApiKeyCheck;
use crate::services::generation::Generations;
use crate::store::Store;
use crate::upstream::Upstreams;
use crate::validation::BodyLimits;

/// What every handler can reach: one pointer, so that the clone every request and extractor
/// makes costs a reference count (cloning the parts cost about a fifth of a `/users/me`).
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl AppState {
    pub fn new(parts: Parts) -> Self {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Store,
    pub tokens: Arc<TokenKeys>,
    /// The providers: their clients, health and models.
    pub upstreams: Upstreams,
    pub generations: Generations,
    pub api_key_check: ApiKeyCheck,
    pub admission: Admission,
    pub rate_limits: RateLimits,
    pub body_limits: BodyLimits,
    /// The SPA of `FRONTEND_DIR`, when one is served.
    pub frontend: Option<Frontend>,
}

impl axum::extract::FromRef<AppState> for BodyLimits {
    fn from_ref(state: &AppState) -> Self {
        state.body_limits.clone()
    }
}
