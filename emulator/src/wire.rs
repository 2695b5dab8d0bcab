//! HTTP conventions shared by all endpoints: JSON and NDJSON bodies, Ollama-style errors,
//! request body decoding and timestamps.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Offset, Timelike, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub(crate) const JSON: &str = "application/json; charset=utf-8";
pub(crate) const NDJSON: &str = "application/x-ndjson";

/// The emulated server's local UTC offset (+02:00), used for `modified_at` and `expires_at`.
const LOCAL_OFFSET_SECS: i32 = 2 * 3600;

/// An error answered as `{"error": message}` with a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// An injected failure: any valid status code, else 500.
    pub fn injected(status: u16, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &ErrorBody { error: &self.message })
    }
}

/// One compact JSON document without a trailing newline.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain structs cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// One NDJSON line: compact JSON followed by `\n`.
pub(crate) fn ndjson_line<T: Serialize>(value: &T) -> Bytes {
    let mut line = to_json(value);
    line.push(b'\n');
    Bytes::from(line)
}

/// The `{"error": message}` line that ends a failed stream.
pub(crate) fn error_line(message: &str) -> Bytes {
    ndjson_line(&ErrorBody { error: message })
}

/// A JSON body with `Content-Type: application/json; charset=utf-8`.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    with_content_type(status, JSON, Body::from(to_json(value)))
}

/// A response with the given status, content type and body.
pub(crate) fn with_content_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Decodes a JSON request body the way Ollama's handlers do: an empty body is
/// `missing request body`, `null` is an empty object, anything malformed is a 400 with the
/// decoder's message.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let value = if value.is_null() { Value::Object(Default::default()) } else { value };
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `created_at`: RFC 3339 in UTC with 9 fractional digits and `Z`.
pub(crate) fn created_at_now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// The current time in the emulated server's local zone.
pub(crate) fn local_now() -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(LOCAL_OFFSET_SECS).unwrap_or_else(|| Utc.fix());
    Utc::now().with_timezone(&offset)
}

/// Go's `time.RFC3339Nano`: fractional seconds without trailing zeros, then the offset.
pub(crate) fn go_rfc3339(time: &DateTime<FixedOffset>) -> String {
    let mut out = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = time.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push_str(&time.format("%:z").to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_like_go() {
        let offset = FixedOffset::east_opt(7200).unwrap();
        let t = offset.with_ymd_and_hms(2025, 5, 20, 9, 14, 7).unwrap() + chrono::Duration::nanoseconds(518_301_120);
        assert_eq!(go_rfc3339(&t), "2025-05-20T09:14:07.51830112+02:00");
        let whole = offset.with_ymd_and_hms(2025, 5, 20, 9, 14, 7).unwrap();
        assert_eq!(go_rfc3339(&whole), "2025-05-20T09:14:07+02:00");
    }

    #[test]
    fn created_at_has_nine_digits() {
        let s = created_at_now();
        assert!(s.ends_with('Z'));
        let fraction = s.split('.').nth(1).unwrap();
        assert_eq!(fraction.len(), 10);
    }

    #[test]
    fn body_errors() {
        #[derive(serde::Deserialize, Debug)]
        struct Req {
            #[allow(dead_code)]
            model: Option<String>,
        }
        assert_eq!(parse_body::<Req>(b"").unwrap_err().message, "missing request body");
        assert_eq!(parse_body::<Req>(b"  \n").unwrap_err().message, "missing request body");
        assert_eq!(parse_body::<Req>(b"{").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(parse_body::<Req>(b"{\"model\":1}").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert!(parse_body::<Req>(b"null").is_ok());
    }
}
