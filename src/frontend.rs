//! The built SPA of `FRONTEND_DIR`, served at `/` on the API's own port (one origin, no CORS).
//!
//! Files are served with their content type, precompressed `.br` / `.gz` siblings when the
//! client accepts them, and caching fit for a Vite build: hashed files under `assets/` forever,
//! everything else (`index.html` above all) revalidated. A GET for a path that is no file and
//! does not look like one answers `index.html`, so the SPA's own routes load on a reload. The
//! API's paths are never answered from here, nor is anything outside the folder.

use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::metrics::FrontendFile;

/// Paths that belong to the server: unknown ones answer the API's JSON 404, never the SPA.
const SERVER_PATHS: [&str; 6] = ["/api", "/v1", "/docs", "/redoc", "/openapi.json", "/metrics"];

const FOREVER: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// The SPA's files. Cheap to clone.
#[derive(Clone)]
pub struct Frontend {
    files: ServeDir,
    index: ServeFile,
}

impl Frontend {
    pub fn new(dir: &Path) -> Self {
        Frontend {
            files: ServeDir::new(dir).precompressed_br().precompressed_gzip(),
            index: ServeFile::new(dir.join("index.html")).precompressed_br().precompressed_gzip(),
        }
    }

    /// The file (or `index.html`) for a GET or HEAD of a path outside the server's own;
    /// `None` when the answer is the API's 404.
    pub async fn serve(&self, request: Request) -> Option<Response> {
        let path = request.uri().path().to_owned();
        if !matches!(*request.method(), Method::GET | Method::HEAD) || is_server_path(&path) || climbs_out(&path) {
            return None;
        }
        let (method, headers) = (request.method().clone(), request.headers().clone());
        let found = self.files.clone().oneshot(request).await.unwrap_or_else(|never| match never {});
        let (response, is_index) = if found.status() != StatusCode::NOT_FOUND {
            (found, path == "/" || path.ends_with("/index.html"))
        } else if looks_like_a_file(&path) {
            return None;
        } else {
            let mut index_request = Request::new(Body::empty());
            *index_request.method_mut() = method;
            *index_request.headers_mut() = headers;
            (self.index.clone().oneshot(index_request).await.unwrap_or_else(|never| match never {}), true)
        };
        let mut response = response.map(Body::new);
        let served = matches!(response.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED);
        if served {
            let forever = !is_index && path.starts_with("/assets/") && is_hashed(path.rsplit('/').next().unwrap_or_default());
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, if forever { FOREVER } else { REVALIDATE });
            headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        response.extensions_mut().insert(FrontendFile);
        Some(response)
    }
}

fn is_server_path(path: &str) -> bool {
    SERVER_PATHS.iter().any(|prefix| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// A `..` segment, a backslash or a NUL, encoded or not.
fn climbs_out(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.contains('\\') || decoded.contains('\0') || decoded.split('/').any(|segment| segment == "..")
}

/// The last segment has an extension (`app.js`): a missing file, not a page of the SPA.
fn looks_like_a_file(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.rfind('.').is_some_and(|dot| dot > 0 && dot + 1 < name.len()))
}

/// A bundler's content hash in the name (`index-BXq3a9Zk.js`, `vendor.4f3a9c1b.css`): a part of
/// eight or more letters, digits or `_` with a digit or both cases, so that no plain word counts.
fn is_hashed(name: &str) -> bool {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.split(['-', '.']).any(|part| {
        let plain = part.len() >= 8 && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let digit = part.bytes().any(|b| b.is_ascii_digit());
        let both_cases = part.bytes().any(|b| b.is_ascii_uppercase()) && part.bytes().any(|b| b.is_ascii_lowercase());
        plain && (digit || both_cases)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_paths_are_whole_segments() {
        for path in ["/api", "/api/v1/nothing", "/v1/models", "/docs/", "/redoc", "/openapi.json", "/metrics"] {
            assert!(is_server_path(path), "{path}");
        }
        for path in ["/", "/apis", "/v10", "/chat/42", "/metrics-board"] {
            assert!(!is_server_path(path), "{path}");
        }
    }

    #[test]
    fn climbing_out_is_seen_encoded_or_not() {
        assert!(climbs_out("/../etc/passwd"));
        assert!(climbs_out("/assets/%2e%2e/%2E%2E/etc/passwd"));
        assert!(climbs_out("/..%5c..%5cwindows"));
        assert!(!climbs_out("/assets/app..js"));
    }

    #[test]
    fn hashed_names_are_told_from_plain_ones() {
        assert!(is_hashed("index-BXq3a9Zk.js"));
        assert!(is_hashed("vendor.4f3a9c1b.css"));
        assert!(is_hashed("logo-a1b2c3d4.svg"));
        assert!(!is_hashed("favicon.ico"));
        assert!(!is_hashed("component-material.js"));
        assert!(looks_like_a_file("/assets/missing.js"));
        assert!(!looks_like_a_file("/chat/42"));
        assert!(!looks_like_a_file("/.well-known"));
    }
}
