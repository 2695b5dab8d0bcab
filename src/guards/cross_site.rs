//! Refuses state-changing requests that a browser sent with our cookies from a foreign page
//! (CSRF). Requests authenticated with `Authorization: Bearer` carry no ambient credentials
//! and are not affected; neither are requests without an `Origin` header (non-browser
//! clients; browsers send it on cross-site POST, PUT, PATCH and DELETE).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::cookies::{cookie_value, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::error::ApiError;

/// The origins whose pages may use the cookies (`FRONTEND_ORIGINS`).
#[derive(Clone)]
pub struct AllowedOrigins(pub Arc<Vec<String>>);

fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

pub async fn refuse_cross_site(
    State(allowed): State<AllowedOrigins>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let method = request.method();
    let changes_state = !(method == Method::GET || method == Method::HEAD || method == Method::OPTIONS);
    let headers = request.headers();
    let uses_cookies = cookie_value(headers, ACCESS_COOKIE).is_some() || cookie_value(headers, REFRESH_COOKIE).is_some();
    if changes_state && uses_cookies && !headers.contains_key(header::AUTHORIZATION) {
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let origin = origin.trim_end_matches('/');
            if !allowed.0.iter().any(|a| a == origin || a == "*") && !same_origin(origin, headers) {
                tracing::warn!(%origin, path = request.uri().path(), "cross-site request refused");
                return Err(ApiError::Forbidden("Cross-site request refused"));
            }
        }
    }
    Ok(next.run(request).await)
}
