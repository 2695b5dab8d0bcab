//! Per-client rate limits (the `governor` crate's GCRA), with the original's defaults; they are
//! kept per process (per replica). `X-Real-IP` / `X-Forwarded-For` are believed only from
//! `TRUSTED_PROXIES`. The per-account login limit is counted in the database instead, so that
//! replicas share it (see `services::accounts::count_login_attempt`).
//!
//! A route is limited where it is declared (`routes!(login).rate_limited(LimitKind::Login)`,
//! see `routes`), by a layer that runs [`enforce`] with the route's [`LimitKind`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
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
    login_per_account: RateSpec,
    per_api_key: Arc<(RateSpec, DefaultKeyedRateLimiter<Uuid>)>,
    trusted_proxies: Arc<Vec<IpNet>>,
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
            login_per_account: config.login_per_account,
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

    /// The per-account login limit, unless limits are off.
    pub fn login_per_account(&self) -> Option<RateSpec> {
        self.enabled.then_some(self.login_per_account)
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
