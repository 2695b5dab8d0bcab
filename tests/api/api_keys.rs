//! Personal API keys: made, listed, revoked, and what they open (only `/v1`).

use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::TestApp;

on_both_databases!(
    a_key_is_shown_once_and_stored_only_as_its_hash,
    keys_are_listed_newest_first_and_revoked_at_once,
    foreign_and_unknown_keys_are_not_found,
    a_key_does_not_open_the_cookie_api,
    expired_keys_and_deactivated_owners_are_refused,
    key_requests_are_validated,
    at_most_fifty_live_keys_per_user,
    admins_list_and_revoke_anyones_keys,
    last_use_is_recorded_once_a_minute,
);

async fn a_key_is_shown_once_and_stored_only_as_its_hash(app: TestApp) {
    let (user, s) = app.signed_up("ann_admin").await;
    let created = app.api_key(&s, json!({"name": "laptop", "expires_in_days": 30, "models": ["llama3.2:1b"]})).await;
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("rc-") && key.len() >= 43, "{key}");
    assert!(key[3..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(created["prefix"], json!(&key[..9]));
    assert_eq!(created["name"], "laptop");
    assert_eq!(created["models"], json!(["llama3.2:1b"]));
    assert_eq!(created["user_id"], user["id"]);
    assert!(created["created_at"].is_string() && created["expires_at"].is_string());
    assert_eq!(created["last_used_at"], Value::Null);

    let listed = app.get("/api-keys").session(&s).send().await;
    assert_eq!(listed.status, 200);
    let text = listed.body.to_string();
    assert!(!text.contains(key) && !text.contains(&key[9..]), "the key is never shown again: {text}");
    assert!(listed.body[0].get("key").is_none());
    let stored = app
        .count(&format!("SELECT COUNT(*) FROM api_keys WHERE key_hash = '{}' AND prefix = '{}'", sha256_hex(key), &key[..9]))
        .await;
    assert_eq!(stored, 1, "the row holds the key's SHA-256, never the key");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM api_keys WHERE key_hash LIKE '%{}%'", &key[3..20])).await, 0);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

async fn keys_are_listed_newest_first_and_revoked_at_once(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let first = app.api_key(&s, json!({"name": "first"})).await;
    let second = app.api_key(&s, json!({"name": "second"})).await;
    let listed = app.get("/api-keys").session(&s).send().await;
    let names: Vec<&str> = listed.body.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["second", "first"]);

    let key = first["key"].as_str().unwrap();
    assert_eq!(app.openai(Method::GET, "/models", key).send().await.status, 200);
    let revoked = app.delete(&format!("/api-keys/{}", first["id"].as_str().unwrap())).session(&s).send().await;
    assert_eq!(revoked.status, 204);
    let refused = app.openai(Method::GET, "/models", key).send().await;
    assert_eq!(refused.status, 401, "a revoked key stops working at once: {}", refused.body);
    assert_eq!(refused.body["error"]["code"], "invalid_api_key");
    let listed = app.get("/api-keys").session(&s).send().await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(listed.body[0]["id"], second["id"]);
    let again = app.delete(&format!("/api-keys/{}", first["id"].as_str().unwrap())).session(&s).send().await;
    again.assert_detail(404, "API key not found");
}

async fn foreign_and_unknown_keys_are_not_found(app: TestApp) {
    let (_, ann) = app.signed_up("ann_admin").await;
    let (_, bob) = app.signed_up("bob_user").await;
    let anns = app.api_key(&ann, json!({"name": "ann's"})).await;
    let foreign = app.delete(&format!("/api-keys/{}", anns["id"].as_str().unwrap())).session(&bob).send().await;
    foreign.assert_detail(404, "API key not found");
    let unknown = app.delete(&format!("/api-keys/{}", uuid::Uuid::new_v4())).session(&bob).send().await;
    unknown.assert_detail(404, "API key not found");
    assert_eq!(app.get("/api-keys").session(&bob).send().await.body, json!([]));
    assert_eq!(
        app.openai(Method::GET, "/models", anns["key"].as_str().unwrap()).send().await.status,
        200,
        "ann's key still works"
    );
}

async fn a_key_does_not_open_the_cookie_api(app: TestApp) {
    let (_, s) = app.signed_up("ann_admin").await;
    let key = app.api_key(&s, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned();
    for (method, path) in
        [(Method::GET, "/users/me"), (Method::GET, "/api-keys"), (Method::GET, "/admin/api-keys"), (Method::GET, "/chats/my")]
    {
        let response = app.request(method, path).bearer(&key).send().await;
        response.assert_detail(401, "Could not validate credentials");
    }
    let made_with_key = app.post("/api-keys").bearer(&key).json(&json!({"name": "more"})).send().await;
    made_with_key.assert_detail(401, "Could not validate credentials");
    // And a session does not open /v1.
    let with_session = app.openai(Method::GET, "/models", &s.access_token).send().await;
    assert_eq!(with_session.status, 401);
    let missing = app.client.get(format!("{}/v1/models", app.address)).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
}

async fn expired_keys_and_deactivated_owners_are_refused(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (bob, s) = app.signed_up("bob_user").await;
    let key = app.api_key(&s, json!({"name": "k", "expires_in_days": 1})).await;
    let token = key["key"].as_str().unwrap();
    assert_eq!(app.openai(Method::GET, "/models", token).send().await.status, 200);

    let id = key["id"].as_str().unwrap();
    app.execute(&format!("UPDATE api_keys SET expires_at = '2020-01-01 00:00:00' WHERE prefix = '{}'", &token[..9])).await;
    let _ = id;
    // The cached row is used for a few seconds at most (USER_CACHE_SECS); expiry is checked on it.
    let expired = app.openai(Method::GET, "/models", token).send().await;
    let still_cached = expired.status == 200;
    if still_cached {
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    }
    let expired = app.openai(Method::GET, "/models", token).send().await;
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert_eq!(expired.body["error"]["message"], "This API key has expired");

    let live = app.api_key(&s, json!({"name": "live"})).await;
    let live = live["key"].as_str().unwrap();
    assert_eq!(app.openai(Method::GET, "/models", live).send().await.status, 200);
    let deactivated = app
        .put(&format!("/users/{}", bob["id"].as_str().unwrap()))
        .session(&admin)
        .json(&json!({"is_active": false}))
        .send()
        .await;
    assert_eq!(deactivated.status, 200, "{}", deactivated.body);
    let refused = app.openai(Method::GET, "/models", live).send().await;
    assert_eq!(refused.status, 401, "deactivation applies at once: {}", refused.body);
    assert_eq!(refused.body["error"]["message"], "The owner of this API key is deactivated");
}

async fn key_requests_are_validated(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    for (body, loc) in [
        (json!({}), json!(["body", "name"])),
        (json!({"name": ""}), json!(["body", "name"])),
        (json!({"name": "x".repeat(101)}), json!(["body", "name"])),
        (json!({"name": "k", "expires_in_days": 0}), json!(["body", "expires_in_days"])),
        (json!({"name": "k", "expires_in_days": 3651}), json!(["body", "expires_in_days"])),
        (json!({"name": "k", "models": "llama3.2:1b"}), json!(["body", "models"])),
        (json!({"name": "k", "models": [""]}), json!(["body", "models"])),
    ] {
        let response = app.post("/api-keys").session(&s).json(&body).send().await;
        assert_eq!(response.status, 422, "{body}: {}", response.body);
        assert_eq!(response.body["detail"][0]["loc"], loc, "{body}");
    }
    let forever = app.api_key(&s, json!({"name": "k", "expires_in_days": null, "models": null})).await;
    assert_eq!(forever["expires_at"], Value::Null);
    assert_eq!(forever["models"], Value::Null);
    let unauthenticated = app.post("/api-keys").json(&json!({"name": "k"})).send().await;
    unauthenticated.assert_detail(401, "Not authenticated");
}

async fn at_most_fifty_live_keys_per_user(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let mut last = Value::Null;
    for i in 0..50 {
        last = app.api_key(&s, json!({"name": format!("key {i}")})).await;
    }
    let refused = app.post("/api-keys").session(&s).json(&json!({"name": "one too many"})).send().await;
    refused.assert_detail(400, "At most 50 API keys per user; revoke one first");
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys").await, 50);
    let revoked = app.delete(&format!("/api-keys/{}", last["id"].as_str().unwrap())).session(&s).send().await;
    assert_eq!(revoked.status, 204);
    app.api_key(&s, json!({"name": "after revoking one"})).await;
}

async fn admins_list_and_revoke_anyones_keys(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (bob, s) = app.signed_up("bob_user").await;
    let bobs = app.api_key(&s, json!({"name": "bob's"})).await;
    app.api_key(&admin, json!({"name": "ann's"})).await;

    let all = app.get("/admin/api-keys").session(&admin).send().await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body.as_array().unwrap().len(), 2);
    assert!(!all.body.to_string().contains(bobs["key"].as_str().unwrap()));
    let only_bob = app.get(&format!("/admin/api-keys?user_id={}", bob["id"].as_str().unwrap())).session(&admin).send().await;
    let names: Vec<&str> = only_bob.body.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob's"]);

    app.get("/admin/api-keys").session(&s).send().await.assert_detail(403, "Not an admin user");
    let by_bob = app.delete(&format!("/admin/api-keys/{}", bobs["id"].as_str().unwrap())).session(&s).send().await;
    by_bob.assert_detail(403, "Not an admin user");

    let revoked = app.delete(&format!("/admin/api-keys/{}", bobs["id"].as_str().unwrap())).session(&admin).send().await;
    assert_eq!(revoked.status, 204);
    assert_eq!(app.openai(Method::GET, "/models", bobs["key"].as_str().unwrap()).send().await.status, 401);
    let unknown = app.delete(&format!("/admin/api-keys/{}", uuid::Uuid::new_v4())).session(&admin).send().await;
    unknown.assert_detail(404, "API key not found");
}

async fn last_use_is_recorded_once_a_minute(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let key = app.api_key(&s, json!({"name": "k"})).await;
    let token = key["key"].as_str().unwrap();
    for _ in 0..5 {
        assert_eq!(app.openai(Method::GET, "/models", token).send().await.status, 200);
    }
    let used = app.wait_for_count("SELECT COUNT(*) FROM api_keys WHERE last_used_at IS NOT NULL", 1).await;
    assert_eq!(used, 1);
    let listed = app.get("/api-keys").session(&s).send().await;
    assert!(listed.body[0]["last_used_at"].is_string());
    // Later uses within the minute do not write again.
    app.execute("UPDATE api_keys SET last_used_at = '2020-01-01 00:00:00'").await;
    for _ in 0..3 {
        assert_eq!(app.openai(Method::GET, "/models", token).send().await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM api_keys WHERE last_used_at = '2020-01-01 00:00:00'").await, 1);
}
