//! Every request gets an id, returned in `X-Request-Id` and carried by every log line of the
//! request (the `request` span's `request_id`), so an operator can go from a failed request
//! in a browser to its log lines. A trusted proxy's id (`TRUSTED_PROXIES`) is kept when it is a
//! short plain token; otherwise the id is a new UUID.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::guards::RateLimits;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a proxy.
const MAX_LEN: usize = 128;

/// The id of the request being served, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ids of visible ASCII are made or kept.
        self.0.to_str().unwrap_or_default()
    }
}

/// Gives the request its id and returns it on the response, whatever the response is.
pub async fn assign(State(limits): State<RateLimits>, mut request: Request, next: Next) -> Response {
    let peer =
        request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let forwarded =
        request.headers().get(&X_REQUEST_ID).filter(|id| limits.is_trusted_proxy(&peer) && is_plain_token(id.as_bytes()));
    let id = match forwarded {
        Some(id) => id.clone(),
        None => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a header value"),
    };
    request.headers_mut().insert(X_REQUEST_ID, id.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// Letters, digits and `-_.:`, at most [`MAX_LEN`]: nothing that could forge or break a log line.
fn is_plain_token(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_tokens_are_kept() {
        assert!(is_plain_token(b"req-42.a_b:c"));
        assert!(is_plain_token(b"0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!is_plain_token(b""));
        assert!(!is_plain_token(b"a b"));
        assert!(!is_plain_token(b"a\"b"));
        assert!(!is_plain_token(&[b'a'; MAX_LEN + 1]));
    }
}
