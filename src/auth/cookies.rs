//! The session cookies, byte for byte as the original (Starlette) sets them: attributes in
//! alphabetical order, `Secure` unless the request's host is local, `Domain` only for
//! non-local hosts when `DOMAIN` is configured.

use axum::http::{header, HeaderMap, HeaderValue};
use chrono::Utc;

use super::tokens::IssuedTokens;

pub const ACCESS_COOKIE: &str = "access_token";
pub const REFRESH_COOKIE: &str = "refresh_token";
pub const ACCESS_PATH: &str = "/api";
pub const REFRESH_PATH: &str = "/api/v1/auth/refresh";

/// A cookie that starts a session, or one that tells the browser to drop it (the original
/// sends those without `HttpOnly` and `Secure`).
#[derive(Clone, Copy)]
enum Lifetime<'a> {
    Session { max_age: u64 },
    Expired { now: &'a str },
}

/// How cookies are scoped for one request.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    secure: bool,
    domain: Option<String>,
}

impl CookiePolicy {
    pub fn for_request(headers: &HeaderMap, configured_domain: Option<&str>) -> Self {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let local = ["localhost", "127.0.0.1", "0.0.0.0"].iter().any(|l| host.contains(l))
            || host.starts_with("192.168.")
            || host.starts_with("10.");
        let domain = configured_domain.filter(|d| !local && *d != "localhost").map(str::to_owned);
        Self { secure: !local, domain }
    }

    fn cookie(&self, name: &str, value: &str, path: &str, lifetime: Lifetime<'_>) -> HeaderValue {
        let mut cookie = format!("{name}={value}");
        if let Some(domain) = &self.domain {
            cookie.push_str(&format!("; Domain={domain}"));
        }
        match lifetime {
            Lifetime::Session { max_age } => cookie.push_str(&format!("; HttpOnly; Max-Age={max_age}")),
            Lifetime::Expired { now } => cookie.push_str(&format!("; expires={now}; Max-Age=0")),
        }
        cookie.push_str(&format!("; Path={path}; SameSite=lax"));
        if self.secure && matches!(lifetime, Lifetime::Session { .. }) {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).expect("JWTs and configured domains are valid header text")
    }

    /// `Set-Cookie` values that start a session.
    pub fn session(&self, tokens: &IssuedTokens, access_max_age: u64, refresh_max_age: u64) -> [HeaderValue; 2] {
        [
            self.cookie(ACCESS_COOKIE, &tokens.access_token, ACCESS_PATH, Lifetime::Session { max_age: access_max_age }),
            self.cookie(REFRESH_COOKIE, &tokens.refresh_token, REFRESH_PATH, Lifetime::Session { max_age: refresh_max_age }),
        ]
    }

    /// `Set-Cookie` values that make the browser drop both cookies (at the paths they were set).
    pub fn cleared(&self) -> [HeaderValue; 2] {
        let now = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        [
            self.cookie(ACCESS_COOKIE, "\"\"", ACCESS_PATH, Lifetime::Expired { now: &now }),
            self.cookie(REFRESH_COOKIE, "\"\"", REFRESH_PATH, Lifetime::Expired { now: &now }),
        ]
    }
}

/// The value of a cookie in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    fn tokens() -> IssuedTokens {
        IssuedTokens { access_token: "A.B.C".into(), refresh_token: "D.E.F".into() }
    }

    #[test]
    fn local_hosts_get_the_originals_cookies() {
        let [access, refresh] =
            CookiePolicy::for_request(&headers("127.0.0.1:8000"), Some("chat.example.com")).session(&tokens(), 3600, 604800);
        assert_eq!(access, "access_token=A.B.C; HttpOnly; Max-Age=3600; Path=/api; SameSite=lax");
        assert_eq!(refresh, "refresh_token=D.E.F; HttpOnly; Max-Age=604800; Path=/api/v1/auth/refresh; SameSite=lax");
    }

    #[test]
    fn public_hosts_get_secure_and_the_configured_domain() {
        let policy = CookiePolicy::for_request(&headers("chat.example.com"), Some("example.com"));
        let [access, _] = policy.session(&tokens(), 3600, 604800);
        assert_eq!(access, "access_token=A.B.C; Domain=example.com; HttpOnly; Max-Age=3600; Path=/api; SameSite=lax; Secure");
        let [cleared, _] = policy.cleared();
        let cleared = cleared.to_str().unwrap();
        assert!(cleared.starts_with("access_token=\"\"; Domain=example.com; expires="), "{cleared}");
        assert!(cleared.ends_with("GMT; Max-Age=0; Path=/api; SameSite=lax"), "{cleared}");
    }

    #[test]
    fn finds_cookies_among_several() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; access_token=tok; b=2"));
        assert_eq!(cookie_value(&h, "access_token"), Some("tok"));
        assert_eq!(cookie_value(&h, "refresh_token"), None);
    }
}
