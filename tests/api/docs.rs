use std::collections::BTreeSet;

use serde_json::Value;

use crate::on_both_databases;
use crate::support::TestApp;

on_both_databases!(the_served_document_is_the_generated_one, documentation_pages_work_without_internet);

/// Fails when a route exists in the router but not in the OpenAPI document, or the reverse.
#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let spec = serde_json::to_value(rovertchat::openapi::spec()).unwrap();
    // The OpenAI-compatible API's paths (`/v1`) have their own router and no cookie auth.
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/api/v1/"))
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> =
        rovertchat::routes::all_routes().iter().map(|(m, p)| (m.to_string(), format!("/api/v1{p}"))).collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && phantom.is_empty(),
        "in the router only: {undocumented:?}\nin the document only: {phantom:?}"
    );
}

#[test]
fn every_operation_documents_its_errors_and_auth() {
    let spec = serde_json::to_value(rovertchat::openapi::spec()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|o| !o.is_empty())));
            // `/v1` answers OpenAI's 400 where `/api` answers 422, and has no inactive-user 400.
            let openai = path.starts_with("/v1/");
            if secured {
                let statuses: &[&str] = if openai { &["401"] } else { &["401", "400"] };
                for status in statuses {
                    assert!(responses.contains_key(*status), "{method} {path} lacks {status}");
                }
            }
            if operation.get("requestBody").is_some() || (!openai && operation.get("parameters").is_some()) {
                let status = if openai { "400" } else { "422" };
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path} lacks 404");
            }
            assert!(responses.contains_key("503"), "{method} {path} lacks 503");
        }
    }
    assert_eq!(
        spec["paths"]["/api/v1/auth/login"]["post"]["requestBody"]["content"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["application/x-www-form-urlencoded"]
    );
}

async fn the_served_document_is_the_generated_one(app: TestApp) {
    let served = app.client.get(format!("{}/openapi.json", app.address)).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(served, serde_json::to_value(rovertchat::openapi::spec()).unwrap());
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
}

async fn documentation_pages_work_without_internet(app: TestApp) {
    let get = |path: &str| {
        let url = format!("{}{path}", app.address);
        let client = reqwest::Client::new();
        async move { client.get(url).send().await.unwrap() }
    };
    let docs = get("/docs").await;
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "no CDN: {html}");
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/swagger-initializer.js"] {
        let response = get(asset).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.text().await.unwrap().len() > 100, "{asset}");
    }
    assert!(get("/docs/swagger-initializer.js").await.text().await.unwrap().contains("/openapi.json"));

    let redoc = get("/redoc").await;
    assert_eq!(redoc.status(), 200);
    assert!(redoc.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"));
    let html = redoc.text().await.unwrap();
    assert!(
        html.contains("/redoc/redoc.standalone.js") && html.contains("\"/openapi.json\"") && !html.contains("https://"),
        "{html}"
    );
    assert_eq!(get("/openapi.json").await.headers()["content-type"], "application/json");
    let script = get("/redoc/redoc.standalone.js").await;
    assert_eq!(script.headers()["content-type"], "application/javascript");
    assert!(script.text().await.unwrap().len() > 500_000);
}

/// The model options a chat request may set are documented from the same list the server
/// checks them against.
#[test]
fn model_options_are_documented_as_an_allow_list() {
    let spec = serde_json::to_value(rovertchat::openapi::spec()).unwrap();
    let schemas = &spec["components"]["schemas"];
    let options = &schemas["ModelOptions"];
    assert_eq!(options["additionalProperties"], false);
    let documented: Vec<&str> = options["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let allowed: Vec<&str> = rovertchat::schemas::chats::MODEL_OPTIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(documented, allowed);
    assert!(!allowed.contains(&"num_gpu"));
    for request in ["CompletionRequest", "OllamaChatRequest"] {
        let field = serde_json::to_string(&schemas[request]["properties"]["options"]).unwrap();
        assert!(field.contains("#/components/schemas/ModelOptions"), "{request}: {field}");
    }
}

/// The bounds the parsers enforce are the ones the document states (both read one type).
#[test]
fn documented_text_bounds_are_the_enforced_ones() {
    let spec = serde_json::to_value(rovertchat::openapi::spec()).unwrap();
    let field = |schema: &str, name: &str| spec["components"]["schemas"][schema]["properties"][name].clone();
    let title_on_create = field("ChatCreate", "title");
    assert_eq!((title_on_create["maxLength"].as_u64(), title_on_create.get("minLength")), (Some(255), None), "{title_on_create}");
    let title_on_rename = field("ChatUpdate", "title");
    let renamed = &title_on_rename["oneOf"][1];
    assert_eq!((renamed["minLength"].as_u64(), renamed["maxLength"].as_u64()), (Some(1), Some(255)), "{title_on_rename}");
}

/// `total` of a search is documented with the cap the store applies.
#[test]
fn the_search_total_is_documented_as_capped() {
    let spec = serde_json::to_value(rovertchat::openapi::spec()).unwrap();
    let total = &spec["components"]["schemas"]["SearchResults"]["properties"]["total"];
    let cap = rovertchat::store::search::SEARCH_RANKED_MATCHES;
    assert_eq!(total["maximum"].as_i64(), Some(cap), "{total}");
    assert!(total["description"].as_str().unwrap().contains(&format!("at most {cap}")), "{total}");
}
