//! The SPA of `FRONTEND_DIR` on the API's port: its files, its pages (index.html for its own
//! routes), caching, precompressed files, and the server's paths never shadowed.

use std::io::{Read, Write};
use std::net::TcpStream;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Backend, TestApp};

const INDEX: &str = "<!doctype html><title>rovertChat</title><div id=app></div>";
const SCRIPT: &str = "console.log('the app');";
const SCRIPT_PATH: &str = "/assets/index-BXq3a9Zk.js";

/// A built SPA in `dir/dist`, and a file beside it that must never be served.
fn built_spa(dir: &std::path::Path) -> std::path::PathBuf {
    let dist = dir.join("dist");
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    std::fs::write(dist.join("index.html"), INDEX).unwrap();
    std::fs::write(dist.join(SCRIPT_PATH.trim_start_matches('/')), SCRIPT).unwrap();
    std::fs::write(dist.join("assets/index-BXq3a9Zk.js.br"), b"brotli bytes").unwrap();
    std::fs::write(dist.join("assets/index-BXq3a9Zk.js.gz"), b"gzip bytes").unwrap();
    std::fs::write(dist.join("favicon.svg"), "<svg/>").unwrap();
    std::fs::write(dir.join("secret.txt"), "outside the folder").unwrap();
    dist
}

async fn spa_app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let dist = built_spa(dir.path());
    let app = TestApp::spawn_with(Backend::Sqlite, vec![("FRONTEND_DIR", dist.display().to_string())]).await;
    (app, dir)
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.get(format!("{}{path}", app.address));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_spa_is_served_with_its_pages_and_caching() {
    let (app, _dir) = spa_app().await;
    for path in ["/", "/index.html", "/chat/42", "/settings/profile"] {
        let page = get(&app, path, &[]).await;
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        assert!(header(&page, "content-type").starts_with("text/html"), "{path}");
        assert_eq!(header(&page, "cache-control"), "no-cache", "{path}");
        assert!(header(&page, "x-request-id").len() > 8);
        assert_eq!(page.text().await.unwrap(), INDEX, "{path}");
    }

    let script = get(&app, SCRIPT_PATH, &[]).await;
    assert_eq!(script.status(), StatusCode::OK);
    assert!(header(&script, "content-type").contains("javascript"));
    assert_eq!(header(&script, "cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(script.text().await.unwrap(), SCRIPT);
    let icon = get(&app, "/favicon.svg", &[]).await;
    assert_eq!(header(&icon, "content-type"), "image/svg+xml");
    assert_eq!(header(&icon, "cache-control"), "no-cache", "not hashed: revalidated");

    let brotli = get(&app, SCRIPT_PATH, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(header(&brotli, "content-encoding"), "br");
    assert!(header(&brotli, "content-type").contains("javascript"));
    assert!(header(&brotli, "vary").to_ascii_lowercase().contains("accept-encoding"));
    assert_eq!(brotli.text().await.unwrap(), "brotli bytes");
    let gzip = get(&app, SCRIPT_PATH, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&gzip, "content-encoding"), "gzip");
    assert_eq!(gzip.text().await.unwrap(), "gzip bytes");

    let head = app.client.head(format!("{}/chat/42", app.address)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let metrics = get(&app, "/metrics", &[]).await.text().await.unwrap();
    assert!(metrics.contains("route=\"frontend\""), "the files' requests have one route label: {metrics}");
}

#[tokio::test]
async fn missing_files_and_the_servers_own_paths_are_never_answered_by_the_spa() {
    let (app, _dir) = spa_app().await;
    let not_found = json!({"detail": "Not Found"});
    for path in ["/assets/missing-Zz9Yy8Xx.js", "/api", "/api/v1/no/such", "/v1/no/such", "/v1", "/redoc/nothing", "/metrics/x"] {
        let response = get(&app, path, &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap(), not_found, "{path}");
    }
    let posted = app.client.post(format!("{}/chat/42", app.address)).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::NOT_FOUND);

    assert_eq!(get(&app, "/api/v1/health", &[]).await.json::<Value>().await.unwrap(), json!({"status": "healthy"}));
    let spec = get(&app, "/openapi.json", &[]).await.json::<Value>().await.unwrap();
    assert!(spec["openapi"].is_string());
    assert!(get(&app, "/metrics", &[]).await.text().await.unwrap().contains("rovertchat_http_requests_total"));
    let docs = get(&app, "/docs/", &[]).await.text().await.unwrap();
    assert!(docs.contains("swagger") && !docs.contains(INDEX));
}

/// Raw requests, since an HTTP client would clean the paths up before sending them.
#[tokio::test]
async fn paths_that_climb_out_of_the_folder_are_refused() {
    let (app, _dir) = spa_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let exchange = move |path: &str| {
        let mut connection = TcpStream::connect(&address).unwrap();
        write!(connection, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).unwrap();
        response
    };
    for path in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/%2E%2E/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
    ] {
        let response = tokio::task::spawn_blocking({
            let exchange = exchange.clone();
            let path = path.to_owned();
            move || exchange(&path)
        })
        .await
        .unwrap();
        assert!(!response.contains("outside the folder"), "{path}: {response}");
        assert!(!response.contains(INDEX), "{path}: {response}");
        assert!(response.starts_with("HTTP/1.1 404") || response.starts_with("HTTP/1.1 400"), "{path}: {response}");
    }
}

#[tokio::test]
async fn without_a_frontend_unknown_paths_answer_the_json_404() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = get(&app, "/chat/42", &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"detail": "Not Found"}));
}
