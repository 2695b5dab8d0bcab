//! Refuses requests that a browser sent from a foreign page (CSRF): every state-changing request
//! that carries our cookies (they authenticate it, whatever `Authorization` says), and the
//! requests that hand out cookies (login, register, refresh; see [`SameSiteOrigin`]), so a
//! foreign page cannot log a visitor into an account of its choosing. Requests without an
//! `Origin` header (non-browser clients) pass: browsers send it on cross-site POST, PUT, PATCH
//! and DELETE.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::cookies::{cookie_value, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::error::ApiError;
use crate::state::AppState;

fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Refuses a request whose `Origin` is neither one of `allowed` nor the server's own.
fn refuse_foreign_origin(allowed: &[String], headers: &HeaderMap, path: &str) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("(not text)")) else {
        return Ok(());
    };
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a == origin || a == "*") || same_origin(origin, headers) {
        return Ok(());
    }
    tracing::warn!(origin = %origin.escape_debug(), path, "cross-site request refused");
    Err(ApiError::Forbidden("Cross-site request refused"))
}

pub async fn refuse_cross_site(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let method = request.method();
    let changes_state = !(method == Method::GET || method == Method::HEAD || method == Method::OPTIONS);
    let headers = request.headers();
    let uses_cookies = cookie_value(headers, ACCESS_COOKIE).is_some() || cookie_value(headers, REFRESH_COOKIE).is_some();
    if changes_state && uses_cookies {
        refuse_foreign_origin(&state.config.frontend_origins, headers, request.uri().path())?;
    }
    Ok(next.run(request).await)
}

/// Taken by the handlers that set session cookies: refused from a foreign page even when the
/// request carries no cookie yet.
pub struct SameSiteOrigin;

impl FromRequestParts<AppState> for SameSiteOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        refuse_foreign_origin(&state.config.frontend_origins, &parts.headers, parts.uri.path())?;
        Ok(SameSiteOrigin)
    }
}
