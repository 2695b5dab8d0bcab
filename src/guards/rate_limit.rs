//! Per-client rate limits (the `governor` crate's GCRA), with the original's defaults, and a
//! per-account limit on login so an attacker hopping between addresses cannot guess one
//! user's password quickly. `X-Real-IP` / `X-Forwarded-For` are believed only from
//! `TRUSTED_PROXIES`.
//!
//! A route is limited where it is declared (`routes!(login).rate_limited(LimitKind::Login)`,
//! see `routes`), by a layer that runs [`enforce`] with the route's [`LimitKind`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use uuid::Uuid;

use crate::background::BackgroundTasks;
use crate::config::{RateLimitConfig, RateSpec};
use crate::error::ApiError;
use crate::names::name_key;
use crate::schemas::users::LOGIN_NAME_MAX_CHARS;
use crate::state::AppState;

struct Limit {
    spec: RateSpec,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// The limiters of one server. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    enabled: bool,
    by_kind: Arc<HashMap<LimitKind, Limit>>,
    login_per_account: Arc<LoginLimits>,
    per_api_key: Arc<(RateSpec, DefaultKeyedRateLimiter<Uuid>)>,
    trusted_proxies: Arc<Vec<IpNet>>,
}

/// Whose password a login tries: an account (by whichever of its names), or a name no
/// account has.
#[derive(Clone, Copy, Debug)]
pub enum LoginTarget<'a> {
    Account(Uuid),
    UnknownName(&'a str),
}

/// Beyond this many unknown names their limits are forgotten rather than grown.
const MAX_UNKNOWN_NAMES: usize = 100_000;

/// The per-account login limit.
struct LoginLimits {
    spec: RateSpec,
    by_account: DefaultKeyedRateLimiter<Uuid>,
    /// Names no account has (by key), limited alike so that a 429 does not tell whether an
    /// account exists. They protect no password, so when there are too many they are dropped.
    by_unknown_name: Mutex<DefaultKeyedRateLimiter<String>>,
    max_unknown_names: usize,
}

impl LoginLimits {
    fn new(spec: RateSpec, max_unknown_names: usize) -> Self {
        LoginLimits {
            spec,
            by_account: RateLimiter::keyed(quota(spec)),
            by_unknown_name: Mutex::new(RateLimiter::keyed(quota(spec))),
            max_unknown_names,
        }
    }

    fn unknown_names(&self) -> MutexGuard<'_, DefaultKeyedRateLimiter<String>> {
        self.by_unknown_name.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check(&self, target: LoginTarget<'_>) -> Result<(), ApiError> {
        let outcome = match target {
            LoginTarget::Account(id) => self.by_account.check_key(&id),
            LoginTarget::UnknownName(name) => {
                let key: String = name_key(name).chars().take(LOGIN_NAME_MAX_CHARS).collect();
                let mut limiter = self.unknown_names();
                let outcome = limiter.check_key(&key);
                if limiter.len() > self.max_unknown_names {
                    limiter.retain_recent();
                    if limiter.len() > self.max_unknown_names {
                        *limiter = RateLimiter::keyed(quota(self.spec));
                    }
                }
                outcome
            }
        };
        outcome.map_err(|not_until| too_many(self.spec, not_until))
    }
}

fn quota(spec: RateSpec) -> Quota {
    let count = NonZeroU32::new(spec.count).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(spec.per / count.get()).expect("a positive period").allow_burst(count)
}

/// Which configured limit a route uses. Routes of the same kind share one budget (the alias
/// `/users/me/settings` shares the one of the route it stands for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Register,
    Login,
    Refresh,
    Logout,
    ProfileRead,
    ProfileWrite,
    SettingsRead,
    SettingsWrite,
}

impl LimitKind {
    const ALL: [LimitKind; 8] = [
        LimitKind::Register,
        LimitKind::Login,
        LimitKind::Refresh,
        LimitKind::Logout,
        LimitKind::ProfileRead,
        LimitKind::ProfileWrite,
        LimitKind::SettingsRead,
        LimitKind::SettingsWrite,
    ];

    /// Its name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Register => "register",
            LimitKind::Login => "login",
            LimitKind::Refresh => "refresh",
            LimitKind::Logout => "logout",
            LimitKind::ProfileRead => "profile_read",
            LimitKind::ProfileWrite => "profile_write",
            LimitKind::SettingsRead => "settings_read",
            LimitKind::SettingsWrite => "settings_write",
        }
    }

    fn spec(self, config: &RateLimitConfig) -> RateSpec {
        match self {
            LimitKind::Register => config.register,
            LimitKind::Login => config.login,
            LimitKind::Refresh => config.refresh,
            LimitKind::Logout => config.logout,
            LimitKind::ProfileRead => config.profile_read,
            LimitKind::ProfileWrite => config.profile_write,
            LimitKind::SettingsRead => config.settings_read,
            LimitKind::SettingsWrite => config.settings_write,
        }
    }
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        let by_kind = LimitKind::ALL
            .into_iter()
            .map(|kind| {
                let spec = kind.spec(config);
                (kind, Limit { spec, limiter: RateLimiter::keyed(quota(spec)) })
            })
            .collect();
        RateLimits {
            enabled: config.enabled,
            by_kind: Arc::new(by_kind),
            login_per_account: Arc::new(LoginLimits::new(config.login_per_account, MAX_UNKNOWN_NAMES)),
            per_api_key: Arc::new((config.api_key, RateLimiter::keyed(quota(config.api_key)))),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
        }
    }

    /// Forgets clients whose limits have fully recovered, every minute, so memory stays bounded.
    pub fn spawn_housekeeping(&self, tasks: &BackgroundTasks) {
        let this = self.clone();
        tasks.every(Duration::from_secs(60), move || {
            for limit in this.by_kind.values() {
                limit.limiter.retain_recent();
            }
            this.login_per_account.by_account.retain_recent();
            this.login_per_account.unknown_names().retain_recent();
            this.per_api_key.1.retain_recent();
        });
    }

    /// The client's address: the peer, or what a trusted proxy says the client is.
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let trusted = |ip: &IpAddr| self.is_trusted_proxy(ip);
        if !trusted(&peer) {
            return peer;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(ip) = header("x-real-ip").and_then(|v| v.trim().parse().ok()) {
            return ip;
        }
        // The right-most address that is not one of our proxies is the one the last trusted
        // proxy saw; anything left of it could be made up by the client.
        header("x-forwarded-for")
            .into_iter()
            .flat_map(|v| v.rsplit(','))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .find(|ip| !trusted(ip))
            .unwrap_or(peer)
    }

    /// Whether `peer` is one of `TRUSTED_PROXIES`.
    pub fn is_trusted_proxy(&self, peer: &IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(peer))
    }

    /// Counts one login attempt against the account (whichever name found it) or the unknown name.
    /// Counts a request made with API key `key_id` against `RATE_LIMIT_API_KEY`.
    pub fn check_api_key(&self, key_id: Uuid) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let (spec, limiter) = &*self.per_api_key;
        limiter.check_key(&key_id).map_err(|not_until| {
            crate::metrics::rate_limited("api_key");
            too_many(*spec, not_until)
        })
    }

    pub fn check_login_attempt(&self, target: LoginTarget<'_>) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        self.login_per_account.check(target).inspect_err(|_| crate::metrics::rate_limited("login_per_account"))
    }
}

fn too_many(spec: RateSpec, not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    ApiError::TooManyRequests { limit: spec.describe(), retry_after_secs: wait.as_secs() + 1 }
}

/// Refuses a request over its route's limit (`kind`) with 429, `Retry-After` and a JSON
/// `detail`. The limits come from the request's extensions, where `routes::router` puts them.
pub async fn enforce(
    State(kind): State<LimitKind>,
    Extension(limits): Extension<RateLimits>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if limits.enabled {
        let peer = peer(request.extensions()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let client = limits.client_ip(request.headers(), peer);
        let limit = &limits.by_kind[&kind];
        limit.limiter.check_key(&client).map_err(|not_until| {
            crate::metrics::rate_limited(kind.label());
            too_many(limit.spec, not_until)
        })?;
    }
    Ok(next.run(request).await)
}

/// The connection's peer, as the server recorded it (none in tests that call a router directly).
fn peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
}

/// The client's address as the rate limits see it: the peer, or what a trusted proxy says.
/// What the audit log records as the client address.
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(peer(&parts.extensions).map(|peer| state.rate_limits.client_ip(&parts.headers, peer))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateSpec;

    pub(super) fn limits(trusted: &[&str]) -> RateLimits {
        let spec = RateSpec::per_minute(2);
        RateLimits::new(&RateLimitConfig {
            enabled: true,
            register: spec,
            login: spec,
            login_per_account: spec,
            refresh: spec,
            logout: spec,
            profile_read: spec,
            profile_write: spec,
            settings_read: spec,
            settings_write: spec,
            api_key: spec,
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let spoofed = headers(&[("x-real-ip", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8")]);
        assert_eq!(limits(&[]).client_ip(&spoofed, peer), peer);

        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let l = limits(&["10.0.0.0/8"]);
        assert_eq!(l.client_ip(&headers(&[("x-real-ip", "1.2.3.4")]), proxy), "1.2.3.4".parse::<IpAddr>().unwrap());
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3")]);
        assert_eq!(l.client_ip(&chain, proxy), "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    fn refused(outcome: Result<(), ApiError>) -> bool {
        matches!(outcome, Err(ApiError::TooManyRequests { .. }))
    }

    #[test]
    fn login_attempts_are_limited_per_account_and_per_unknown_name() {
        let l = limits(&[]);
        let bob = Uuid::from_u128(1);
        assert!(l.check_login_attempt(LoginTarget::Account(bob)).is_ok());
        assert!(l.check_login_attempt(LoginTarget::Account(bob)).is_ok());
        assert!(refused(l.check_login_attempt(LoginTarget::Account(bob))));
        assert!(l.check_login_attempt(LoginTarget::Account(Uuid::from_u128(2))).is_ok());

        assert!(l.check_login_attempt(LoginTarget::UnknownName("Nobody")).is_ok());
        assert!(l.check_login_attempt(LoginTarget::UnknownName("NOBODY")).is_ok());
        assert!(refused(l.check_login_attempt(LoginTarget::UnknownName("\u{ff4e}obody"))));
        assert!(l.check_login_attempt(LoginTarget::UnknownName("somebody")).is_ok());
    }

    #[test]
    fn unknown_names_are_forgotten_rather_than_grown_past_the_bound() {
        let l = LoginLimits::new(RateSpec::per_minute(1), 3);
        for name in ["a", "b", "c"] {
            assert!(l.check(LoginTarget::UnknownName(name)).is_ok());
            assert!(refused(l.check(LoginTarget::UnknownName(name))));
        }
        assert!(l.check(LoginTarget::UnknownName("d")).is_ok());
        assert!(l.unknown_names().len() <= 3);
        assert!(l.check(LoginTarget::UnknownName("a")).is_ok(), "forgotten");
        // Accounts' limits are kept.
        let ann = Uuid::from_u128(7);
        assert!(l.check(LoginTarget::Account(ann)).is_ok());
        for name in ["e", "f", "g", "h"] {
            let _ = l.check(LoginTarget::UnknownName(name));
        }
        assert!(refused(l.check(LoginTarget::Account(ann))));
    }
}

/// The limit belongs to the route's declaration, whatever its path.
#[cfg(test)]
mod declared_limits {
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use super::tests::limits;
    use super::*;
    use crate::routes::RouteRules;

    #[utoipa::path(post, path = "/anywhere", responses((status = 200)))]
    async fn anywhere() {}

    #[utoipa::path(get, path = "/elsewhere", responses((status = 200)))]
    async fn elsewhere() {}

    #[utoipa::path(get, path = "/unlimited", responses((status = 200)))]
    async fn unlimited() {}

    #[tokio::test]
    async fn routes_of_one_kind_share_its_budget_and_document_the_429() {
        let (router, doc) = OpenApiRouter::new()
            .routes(routes!(anywhere).rate_limited(LimitKind::Login))
            .routes(routes!(elsewhere).rate_limited(LimitKind::Login))
            .routes(routes!(unlimited))
            .split_for_parts();
        let router = router.layer(Extension(limits(&[])));
        let call = |method: &str, path: &str| {
            let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
            router.clone().oneshot(request)
        };
        // Two per minute for the kind, counted over both routes.
        assert_eq!(call("POST", "/anywhere").await.unwrap().status(), StatusCode::OK);
        assert_eq!(call("GET", "/elsewhere").await.unwrap().status(), StatusCode::OK);
        let refused = call("POST", "/anywhere").await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key("retry-after"));
        assert_eq!(call("HEAD", "/elsewhere").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
        for _ in 0..3 {
            assert_eq!(call("GET", "/unlimited").await.unwrap().status(), StatusCode::OK);
        }

        let documents_429 = |path: &str| {
            let item = &doc.paths.paths[path];
            let operation = item.get.as_ref().or(item.post.as_ref()).unwrap();
            operation.responses.responses.contains_key("429")
        };
        assert!(documents_429("/anywhere") && documents_429("/elsewhere"));
        assert!(!documents_429("/unlimited"));
    }
}
