//! Safe on the internet: who may call what, token attacks, races, bad input, faults, rate
//! limits, cross-site requests, and what reaches the logs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, EncodingKey, Header};
use ollama_emulator::Knobs;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{create_pg_database, Backend, Session, StreamReader, TcpProxy, TestApp, ACCESS_SECRET, PASSWORD};

on_both_databases!(
    every_route_answers_each_kind_of_caller_as_intended,
    retired_refresh_tokens_revoke_their_chain,
    forged_and_tampered_tokens_are_refused,
    concurrent_edits_and_deletes_of_a_chat_never_fail_or_orphan,
    bad_input_is_refused_and_nothing_is_stored,
    ollama_killed_mid_answer_keeps_the_partial_answer,
    rate_limits_answer_429_with_retry_after,
    login_is_limited_per_account_across_addresses,
    each_limited_route_counts_against_its_budget,
    cross_site_requests_with_cookies_are_refused,
    creating_and_deleting_all_chats_at_once_never_fails,
);

/// The callers of the matrix, in the order their statuses are listed.
const ACTORS: [&str; 6] = ["anonymous", "guest", "owner", "other", "deactivated", "admin"];

/// Every route and what each caller gets. The owner owns the chat and message in the path; the
/// user in `/users/{user_id}` paths is a separate account. Keep one row per route: the test
/// fails when the router has a route without a row, or a row has no route.
const MATRIX: &[(&str, &str, [u16; 6])] = &[
    ("post", "/auth/register", [201, 201, 201, 201, 201, 201]),
    ("post", "/auth/login", [200, 200, 200, 200, 200, 200]),
    ("post", "/auth/refresh", [401, 200, 200, 200, 401, 200]),
    ("post", "/auth/logout", [401, 200, 200, 200, 400, 200]),
    ("get", "/users/me", [401, 200, 200, 200, 400, 200]),
    ("put", "/users/me", [401, 200, 200, 200, 400, 200]),
    ("get", "/users/me/settings", [401, 200, 200, 200, 400, 200]),
    ("put", "/users/me/settings", [401, 200, 200, 200, 400, 200]),
    ("get", "/users", [401, 403, 403, 403, 400, 200]),
    ("get", "/users/{user_id}", [401, 403, 403, 403, 400, 200]),
    ("put", "/users/{user_id}", [401, 403, 403, 403, 400, 200]),
    ("delete", "/users/{user_id}", [401, 403, 403, 403, 400, 200]),
    ("post", "/users/{user_id}/activate", [401, 403, 403, 403, 400, 200]),
    ("get", "/user-settings/me", [401, 200, 200, 200, 400, 200]),
    ("put", "/user-settings/me", [401, 200, 200, 200, 400, 200]),
    ("get", "/user-settings/{user_id}", [401, 403, 403, 403, 400, 200]),
    ("put", "/user-settings/{user_id}", [401, 403, 403, 403, 400, 200]),
    ("delete", "/user-settings/{user_id}", [401, 403, 403, 403, 400, 204]),
    ("get", "/health", [200, 200, 200, 200, 200, 200]),
    ("get", "/health/db", [200, 200, 200, 200, 200, 200]),
    ("get", "/chats/my", [401, 200, 200, 200, 400, 200]),
    ("post", "/chats/my", [401, 201, 201, 201, 400, 201]),
    ("delete", "/chats/my", [401, 200, 200, 200, 400, 200]),
    ("get", "/chats/models", [401, 200, 200, 200, 400, 200]),
    // Without `q`: the caller is checked before the query.
    ("get", "/chats/search", [401, 422, 422, 422, 400, 422]),
    ("get", "/chats/export", [401, 200, 200, 200, 400, 200]),
    ("post", "/chats/import", [401, 200, 200, 200, 400, 200]),
    ("get", "/chats/{chat_id}/export", [401, 404, 200, 404, 400, 404]),
    ("get", "/chats/chat/{chat_id}", [401, 404, 200, 404, 400, 404]),
    ("patch", "/chats/chat/{chat_id}", [401, 404, 200, 404, 400, 404]),
    ("delete", "/chats/chat/{chat_id}", [401, 404, 200, 404, 400, 404]),
    ("post", "/chats/{chat_id}/messages", [401, 404, 200, 404, 400, 404]),
    ("delete", "/chats/{chat_id}/messages/bulk", [401, 404, 200, 404, 400, 404]),
    ("get", "/chats/{chat_id}/messages/{message_id}", [401, 404, 200, 404, 400, 404]),
    ("patch", "/chats/{chat_id}/messages/{message_id}", [401, 404, 200, 404, 400, 404]),
    ("delete", "/chats/{chat_id}/messages/{message_id}", [401, 404, 200, 404, 400, 404]),
    ("post", "/chats/{chat_id}/completions", [401, 404, 200, 404, 400, 404]),
    ("post", "/chats/{chat_id}/stop", [401, 404, 404, 404, 400, 404]),
    ("get", "/chats/{chat_id}/generation", [401, 404, 404, 404, 400, 404]),
    ("get", "/chat/conversations", [401, 200, 200, 200, 400, 200]),
    ("post", "/chat/conversations", [401, 201, 201, 201, 400, 201]),
    ("delete", "/chat/conversations/{chat_id}", [401, 404, 200, 404, 400, 404]),
    ("get", "/chat/conversations/{chat_id}/messages", [401, 404, 200, 404, 400, 404]),
    ("post", "/chat/conversations/{chat_id}/messages", [401, 404, 200, 404, 400, 404]),
    ("get", "/ollama/version", [401, 200, 200, 200, 400, 200]),
    ("get", "/ollama/tags", [401, 200, 200, 200, 400, 200]),
    ("post", "/ollama/show", [401, 200, 200, 200, 400, 200]),
    ("post", "/ollama/pull", [401, 403, 403, 403, 400, 200]),
    ("delete", "/ollama/delete", [401, 403, 403, 403, 400, 200]),
    ("post", "/ollama/cache/clear", [401, 403, 403, 403, 400, 200]),
    ("post", "/ollama/chat", [401, 404, 200, 404, 400, 404]),
    ("post", "/api-keys", [401, 201, 201, 201, 400, 201]),
    ("get", "/api-keys", [401, 200, 200, 200, 400, 200]),
    ("delete", "/api-keys/{key_id}", [401, 404, 204, 404, 400, 404]),
    ("get", "/admin/api-keys", [401, 403, 403, 403, 400, 200]),
    ("delete", "/admin/api-keys/{key_id}", [401, 403, 403, 403, 400, 204]),
    ("get", "/usage/me", [401, 200, 200, 200, 400, 200]),
    ("get", "/admin/usage", [401, 403, 403, 403, 400, 200]),
    ("get", "/admin/models", [401, 403, 403, 403, 400, 200]),
    ("put", "/admin/models/{name}", [401, 403, 403, 403, 400, 200]),
    ("get", "/admin/quotas", [401, 403, 403, 403, 400, 200]),
    ("put", "/admin/quotas", [401, 403, 403, 403, 400, 200]),
    ("get", "/admin/audit", [401, 403, 403, 403, 400, 200]),
    ("get", "/admin/stats", [401, 403, 403, 403, 400, 200]),
    ("get", "/admin/providers", [401, 403, 403, 403, 400, 200]),
    ("post", "/admin/providers", [401, 403, 403, 403, 400, 201]),
    ("put", "/admin/providers/{provider_id}", [401, 403, 403, 403, 400, 200]),
    ("delete", "/admin/providers/{provider_id}", [401, 403, 403, 403, 400, 204]),
];

/// A valid body for the route, so that only authorization decides the status.
fn body_for(method: &str, path: &str, actor: &str) -> Option<Value> {
    Some(match (method, path) {
        ("post", "/auth/register") => {
            json!({"username": format!("new_{actor}"), "email": format!("new_{actor}@example.com"), "password": PASSWORD})
        }
        ("put", _) => json!({}),
        ("post", "/api-keys") => json!({"name": format!("{actor}'s key")}),
        ("patch", "/chats/chat/{chat_id}") => json!({"title": "renamed"}),
        ("patch", _) => json!({"content": "edited"}),
        ("post", "/chats/{chat_id}/messages") | ("post", "/chat/conversations/{chat_id}/messages") => {
            json!({"role": "user", "content": "hi"})
        }
        ("delete", "/chats/{chat_id}/messages/bulk") => json!({"message_ids": [uuid::Uuid::new_v4()]}),
        ("post", "/chats/{chat_id}/completions") => json!({"model": "llama3.2:1b", "content": "hi"}),
        ("post", "/ollama/show") => json!({"model": "llama3.2:1b"}),
        ("post", "/chats/import") => json!([]),
        ("post", "/ollama/pull") => json!({"model": "tinyllama:latest"}),
        ("delete", "/ollama/delete") => json!({"model": "tinyllama:latest"}),
        ("post", "/admin/providers") => {
            json!({"name": format!("spare_{actor}"), "base_url": "http://127.0.0.1:9", "enabled": false})
        }
        ("post", "/ollama/chat") => {
            json!({"model": "llama3.2:1b", "chatId": "{chat_id}", "messages": [{"role": "user", "content": "hi"}]})
        }
        _ => return None,
    })
}

async fn every_route_answers_each_kind_of_caller_as_intended(app: TestApp) {
    let listed: BTreeSet<(String, String)> = MATRIX.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    let routed: BTreeSet<(String, String)> =
        rovertchat::routes::all_routes().iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(listed, routed, "the matrix must list every route of the router, and only those");

    let (_, admin) = app.signed_up("admin_ann").await;
    let guest_user = app
        .post("/auth/register")
        .session(&admin)
        .json(&json!({"username": "gina_guest", "email": "gina@example.com", "password": PASSWORD, "role": "guest"}))
        .send()
        .await;
    assert_eq!(guest_user.body["role"], "guest");
    let mut sessions: Vec<Option<Session>> = vec![None, Some(app.login("gina_guest", PASSWORD).await)];
    let (_, owner) = app.signed_up("owner_olga").await;
    sessions.push(Some(owner.clone()));
    sessions.push(Some(app.signed_up("other_otto").await.1));
    let (dee, dee_session) = app.signed_up("dee_deactivated").await;
    sessions.push(Some(dee_session));
    sessions.push(Some(admin.clone()));
    app.delete(&format!("/users/{}", dee["id"].as_str().unwrap())).session(&admin).send().await;
    let target = app.register("target_tom").await["id"].as_str().unwrap().to_owned();
    app.register("login_lena").await;

    // Logout revokes the caller's tokens: it runs last.
    let mut rows: Vec<&(&str, &str, [u16; 6])> = MATRIX.iter().filter(|(_, p, _)| *p != "/auth/logout").collect();
    rows.extend(MATRIX.iter().filter(|(_, p, _)| *p == "/auth/logout"));
    let mut failures = Vec::new();
    for (method, template, expected) in rows {
        // Fresh resources per route: the owner's own calls may delete them.
        let chat = app.new_chat(&owner, None).await;
        let message = app.post_message(&owner, &chat, "user", "hello").await["id"].as_str().unwrap().to_owned();
        if *template == "/ollama/delete" {
            app.post("/ollama/pull").session(&admin).json(&json!({"model": "tinyllama:latest"})).send().await;
        }
        // The owner's key, in the key routes' paths.
        let key = if template.contains("{key_id}") {
            app.api_key(&owner, json!({"name": "owned"})).await["id"].as_str().unwrap().to_owned()
        } else {
            String::new()
        };
        // A disabled provider of its own, in the provider routes' paths.
        let provider = if template.contains("{provider_id}") {
            let body = json!({"name": format!("spare_{}", uuid::Uuid::new_v4().simple()), "base_url": "http://127.0.0.1:9", "enabled": false});
            let created = app.post("/admin/providers").session(&admin).json(&body).send().await;
            created.body["id"].as_str().unwrap().to_owned()
        } else {
            String::new()
        };
        let path = template
            .replace("{provider_id}", &provider)
            .replace("{chat_id}", &chat)
            .replace("{message_id}", &message)
            .replace("{user_id}", &target)
            .replace("{key_id}", &key)
            .replace("{name}", "llama3.2:1b");
        for (index, actor) in ACTORS.iter().enumerate() {
            let mut request = app.request(method.to_uppercase().parse().unwrap(), &path);
            if let Some(body) = body_for(method, template, actor) {
                request = request.json(&serde_json::from_str(&body.to_string().replace("{chat_id}", &chat)).unwrap());
            }
            if *template == "/auth/login" {
                request = request.form(&[("username", "login_lena"), ("password", PASSWORD)]);
            }
            if let Some(session) = &sessions[index] {
                request = if *template == "/auth/refresh" {
                    request.cookie(&format!("refresh_token={}", session.refresh_token))
                } else {
                    request.session(session)
                };
            }
            let response = request.send().await;
            if response.status.as_u16() != expected[index] {
                failures.push(format!(
                    "{} {template} as {actor}: {} (expected {}) {}",
                    method.to_uppercase(),
                    response.status,
                    expected[index],
                    response.body
                ));
            }
            if *template == "/auth/refresh" && response.status == 200 {
                // Rotation retired the old refresh token: keep the new one.
                let access = response.body["access_token"].as_str().unwrap().to_owned();
                let refresh = response.body["refresh_token"].as_str().unwrap().to_owned();
                sessions[index] = Some(Session { access_token: access, refresh_token: refresh });
            }
            if *template == "/users/{user_id}" && *method == "delete" && response.status == 200 {
                app.post(&format!("/users/{target}/activate")).session(&admin).send().await;
            }
        }
    }
    assert!(failures.is_empty(), "{} unexpected statuses:\n{}", failures.len(), failures.join("\n"));
}

async fn retired_refresh_tokens_revoke_their_chain(app: TestApp) {
    let strict = TestApp::spawn_with(app.backend, vec![("REFRESH_REUSE_GRACE_SECS", "0".into())]).await;
    let (_, s) = strict.signed_up("bob_user").await;
    let refresh = |token: &str| strict.post("/auth/refresh").cookie(&format!("refresh_token={token}")).send();
    let first = refresh(&s.refresh_token).await;
    assert_eq!(first.status, 200);
    let second_token = first.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, s.refresh_token, "each refresh issues a new refresh token");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The retired token comes back: someone copied it. The whole chain is revoked.
    refresh(&s.refresh_token).await.assert_detail(401, "Could not validate credentials");
    refresh(&second_token).await.assert_detail(401, "Could not validate credentials");
    assert!(strict.count("SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at IS NOT NULL").await >= 2);
    // Another login of the same user is a separate chain and still works.
    let other = strict.login("bob_user", PASSWORD).await;
    assert_eq!(refresh(&other.refresh_token).await.status, 200);

    // With the default grace window, the SPA's parallel tabs may refresh with the same token.
    let (_, t) = app.signed_up("tab_user").await;
    let tab_a = app.post("/auth/refresh").cookie(&format!("refresh_token={}", t.refresh_token)).send().await;
    let tab_b = app.post("/auth/refresh").cookie(&format!("refresh_token={}", t.refresh_token)).send().await;
    assert_eq!((tab_a.status.as_u16(), tab_b.status.as_u16()), (200, 200));
    let next = tab_a.body["refresh_token"].as_str().unwrap();
    assert_eq!(app.post("/auth/refresh").cookie(&format!("refresh_token={next}")).send().await.status, 200);

    // Logout revokes every chain.
    let (_, l) = app.signed_up("leaving_user").await;
    app.post("/auth/logout").session(&l).send().await;
    app.post("/auth/refresh")
        .cookie(&format!("refresh_token={}", l.refresh_token))
        .send()
        .await
        .assert_detail(401, "Could not validate credentials");
}

async fn forged_and_tampered_tokens_are_refused(app: TestApp) {
    app.register("admin_ann").await;
    let (bob, s) = app.signed_up("bob_user").await;
    let claims = json!({"sub": bob["id"], "username": "bob_user", "role": "user", "exp": jsonwebtoken::get_current_timestamp() + 600, "type": "access", "token_version": 1});
    let other_alg =
        encode(&Header::new(jsonwebtoken::Algorithm::HS512), &claims, &EncodingKey::from_secret(ACCESS_SECRET.as_bytes()))
            .unwrap();
    // Claims changed after signing (role: admin) keep the old signature.
    let mut parts: Vec<String> = s.access_token.split('.').map(str::to_owned).collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
    payload["role"] = json!("admin");
    parts[1] = engine.encode(payload.to_string());
    let tampered = parts.join(".");
    for (what, token) in [("another algorithm", other_alg), ("tampered claims", tampered), ("not a JWT", "x".repeat(5000))] {
        let response = app.get("/users").bearer(&token).send().await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
    }
}

async fn concurrent_edits_and_deletes_of_a_chat_never_fail_or_orphan(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    for round in 0..3 {
        let chat = app.new_chat(&s, None).await;
        let message = app.post_message(&s, &chat, "user", "first").await["id"].as_str().unwrap().to_owned();
        let mut calls = Vec::new();
        for i in 0..10 {
            calls
                .push(app.patch(&format!("/chats/chat/{chat}")).session(&s).json(&json!({"title": format!("title {i}")})).send());
            calls.push(
                app.post(&format!("/chats/{chat}/messages"))
                    .session(&s)
                    .json(&json!({"role": "user", "content": format!("m{i}")}))
                    .send(),
            );
            calls.push(
                app.patch(&format!("/chats/{chat}/messages/{message}"))
                    .session(&s)
                    .json(&json!({"content": format!("edit {i}")}))
                    .send(),
            );
            if i == 5 {
                calls.push(app.delete(&format!("/chats/chat/{chat}")).session(&s).send());
            }
        }
        let responses = futures_util::future::join_all(calls).await;
        for r in &responses {
            assert!(r.status.as_u16() < 500, "round {round}: {} {}", r.status, r.body);
            assert!([200, 404].contains(&r.status.as_u16()), "round {round}: {} {}", r.status, r.body);
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM messages WHERE chat_id NOT IN (SELECT id FROM chats)").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 0);
}

async fn bad_input_is_refused_and_nothing_is_stored(backend: Backend) {
    let small = TestApp::spawn_with(backend, vec![("MAX_BODY_BYTES", "4096".into())]).await;
    let (_, s) = small.signed_up("bob_user").await;
    let chat = small.new_chat(&s, None).await;
    let messages = format!("/chats/{chat}/messages");
    let huge = small.post(&messages).session(&s).json(&json!({"role": "user", "content": "x".repeat(10_000)})).send().await;
    huge.assert_detail(413, "Request body too large");

    let mut deep = json!("leaf");
    for _ in 0..300 {
        deep = json!({ "d": deep });
    }
    let cases: Vec<(&str, reqwest::Body, &str)> = vec![
        ("malformed JSON", "{\"role\": ".into(), "json_invalid"),
        ("deep nesting", json!({"role": "user", "content": "x", "extended_metadata": deep}).to_string().into(), "json_invalid"),
        ("invalid UTF-8", vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'].into(), "json_invalid"),
        ("NUL byte", json!({"role": "user", "content": "a\u{0000}b"}).to_string().into(), "string_nul"),
        (
            "NUL in metadata",
            json!({"role": "user", "content": "ok", "extended_metadata": {"k\u{0000}": 1}}).to_string().into(),
            "string_nul",
        ),
        ("wrong type", json!({"role": "user", "content": 5}).to_string().into(), "string_type"),
        ("not an object", "[1, 2]".into(), "model_attributes_type"),
    ];
    for (what, body, kind) in cases {
        let response = small.post(&messages).session(&s).raw("application/json", body).send().await;
        assert_eq!(response.status, 422, "{what}: {}", response.body);
        assert_eq!(response.body["detail"][0]["type"], kind, "{what}: {}", response.body);
    }
    let nul_login = small.post("/auth/login").form(&[("username", "bob\u{0000}"), ("password", "x")]).send().await;
    assert_eq!(nul_login.status, 422, "{}", nul_login.body);
    let nul_query = small.get("/users?limit=1%00").session(&s).send().await;
    assert!(nul_query.status == 422 || nul_query.status == 403, "{}", nul_query.body);
    small
        .patch(&format!("/chats/chat/{chat}"))
        .session(&s)
        .json(&json!({"title": "t".repeat(10_00)}))
        .send()
        .await
        .assert_validation(&[("string_too_long", json!(["body", "title"]))]);
    assert_eq!(small.count("SELECT COUNT(*) FROM messages").await, 0);

    // Unknown fields are ignored; long content within the limit is stored whole.
    let long = "ü".repeat(1500);
    let ok = small.post(&messages).session(&s).json(&json!({"role": "user", "content": long, "surprise": true})).send().await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["content"].as_str().unwrap().chars().count(), 1500);
    assert_eq!(small.count("SELECT COUNT(*) FROM messages").await, 1);
}

async fn ollama_killed_mid_answer_keeps_the_partial_answer(mut app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(Knobs { per_token_delay: Duration::from_millis(50), tokens: Some(100), ..Knobs::default() });
    let mut stream = StreamReader::open(
        app.post(&format!("/chats/{chat}/completions")).session(&s).json(&json!({"model": "llama3.2:1b", "content": "go"})),
    )
    .await;
    for _ in 0..4 {
        stream.next_event().await.unwrap();
    }
    // Ollama dies: its server stops and every connection is closed.
    let ollama = std::mem::replace(&mut app.emulator, ollama_emulator::Emulator::start().await);
    ollama.shutdown().await;
    let end = stream.rest().await.last().cloned().unwrap();
    assert_eq!(end.event, "error", "{end:?}");
    assert_eq!(app.wait_for_count("SELECT COUNT(*) FROM messages WHERE role = 'assistant'", 1).await, 1);
    let stored = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["messages"][1].clone();
    assert_eq!(stored["extended_metadata"]["status"], "failed");
    assert!(stored["content"].as_str().unwrap().starts_with("Echo:"));
}

async fn rate_limits_answer_429_with_retry_after(backend: Backend) {
    let limited = TestApp::spawn_with(backend, vec![("RATE_LIMITS", "on".into())]).await;
    let register = |ip: &'static str| {
        limited
            .post("/auth/register")
            .header("x-forwarded-for", ip)
            .header("x-real-ip", ip)
            .json(&json!({"username": "bob_user", "email": "bob@example.com", "password": PASSWORD}))
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..5 {
        // A spoofed address from an untrusted peer does not open a new bucket.
        statuses.push(register(["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"][i]).await.status.as_u16());
    }
    assert_eq!(statuses, [201, 400, 400, 400, 400]);
    let limited_response = register("6.6.6.6").await;
    limited_response.assert_detail(429, "Rate limit exceeded: 5 per 1 minute");
    let retry_after: u64 = limited_response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Other routes have their own budgets.
    assert_eq!(limited.get("/health").send().await.status, 200);

    // Behind a trusted proxy, each forwarded client has its own budget.
    let proxied = TestApp::spawn_with(backend, vec![("RATE_LIMITS", "on".into()), ("TRUSTED_PROXIES", "127.0.0.1".into())]).await;
    for client in ["9.9.9.1", "9.9.9.2"] {
        for _ in 0..5 {
            let r = proxied
                .post("/auth/login")
                .header("x-real-ip", client)
                .form(&[("username", "nobody"), ("password", "x")])
                .send()
                .await;
            assert_eq!(r.status, 401);
        }
    }
}

async fn login_is_limited_per_account_across_addresses(backend: Backend) {
    let limited =
        TestApp::spawn_with(backend, vec![("RATE_LIMITS", "on".into()), ("TRUSTED_PROXIES", "127.0.0.0/8".into())]).await;
    limited.register("bob_user").await;
    for i in 0..10 {
        let r = limited
            .post("/auth/login")
            .header("x-real-ip", &format!("10.0.0.{i}"))
            .form(&[("username", "bob_user"), ("password", "guess")])
            .send()
            .await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let blocked = limited
        .post("/auth/login")
        .header("x-real-ip", "10.0.1.1")
        .form(&[("username", "BOB_USER"), ("password", PASSWORD)])
        .send()
        .await;
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert!(blocked.header("retry-after").is_some());
}

/// Each route the original limits counts against its budget, `HEAD` together with `GET`; the
/// alias `/users/me/settings` shares the budget of `/user-settings/me`; and exactly these
/// routes document a rate limit.
async fn each_limited_route_counts_against_its_budget(app: TestApp) {
    let once_a_minute =
        ["REGISTER", "LOGIN", "REFRESH", "LOGOUT", "PROFILE_READ", "PROFILE_WRITE", "SETTINGS_READ", "SETTINGS_WRITE"]
            .map(|kind| (format!("RATE_LIMIT_{kind}"), "1/minute".to_owned()));
    let mut settings = vec![("RATE_LIMITS", "on".to_owned())];
    settings.extend(once_a_minute.iter().map(|(name, value)| (name.as_str(), value.clone())));
    let limited = TestApp::spawn_with(app.backend, settings).await;
    let refused = |response: crate::support::TestResponse, what: &str| {
        assert_eq!(response.status, 429, "{what}: {}", response.body);
        assert!(response.header("retry-after").is_some(), "{what}");
    };

    limited.register("bob_user").await;
    refused(
        limited
            .post("/auth/register")
            .json(&json!({"username": "eve_user", "email": "eve@example.com", "password": PASSWORD}))
            .send()
            .await,
        "register",
    );
    let s = limited.login("bob_user", PASSWORD).await;
    refused(limited.post("/auth/login").form(&[("username", "bob_user"), ("password", PASSWORD)]).send().await, "login");
    let refresh = |token: &str| limited.post("/auth/refresh").cookie(&format!("refresh_token={token}")).send();
    let renewed = refresh(&s.refresh_token).await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    refused(refresh(renewed.body["refresh_token"].as_str().unwrap()).await, "refresh");

    assert_eq!(limited.get("/users/me").session(&s).send().await.status, 200);
    refused(limited.request("HEAD".parse().unwrap(), "/users/me").session(&s).send().await, "HEAD /users/me");
    assert_eq!(limited.put("/users/me").session(&s).json(&json!({})).send().await.status, 200);
    refused(limited.put("/users/me").session(&s).json(&json!({})).send().await, "PUT /users/me");
    assert_eq!(limited.get("/user-settings/me").session(&s).send().await.status, 200);
    refused(limited.get("/users/me/settings").session(&s).send().await, "GET /users/me/settings");
    assert_eq!(limited.put("/users/me/settings").session(&s).json(&json!({})).send().await.status, 200);
    refused(limited.put("/user-settings/me").session(&s).json(&json!({})).send().await, "PUT /user-settings/me");
    for _ in 0..3 {
        assert_eq!(limited.get("/chats/my").session(&s).send().await.status, 200, "not a limited route");
    }
    assert_eq!(limited.post("/auth/logout").session(&s).send().await.status, 200);
    refused(limited.post("/auth/logout").session(&s).send().await, "logout");

    let spec = serde_json::to_value(rovertchat::openapi::spec()).unwrap();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().iter().map(move |(method, operation)| (method, path, operation)))
        .filter(|(_, _, operation)| {
            operation["responses"]["429"]["description"].as_str().is_some_and(|d| d.starts_with("Rate limit exceeded (see"))
        })
        .map(|(method, path, _)| (method.clone(), path.trim_start_matches("/api/v1").to_owned()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("post", "/auth/register"),
        ("post", "/auth/login"),
        ("post", "/auth/refresh"),
        ("post", "/auth/logout"),
        ("get", "/users/me"),
        ("put", "/users/me"),
        ("get", "/user-settings/me"),
        ("put", "/user-settings/me"),
        ("get", "/users/me/settings"),
        ("put", "/users/me/settings"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, expected);
}

async fn cross_site_requests_with_cookies_are_refused(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let evil = app.post("/chats/my").session(&s).header("origin", "http://evil.example").send().await;
    evil.assert_detail(403, "Cross-site request refused");
    let spa = app.post("/chats/my").session(&s).header("origin", "http://localhost:5173").send().await;
    assert_eq!(spa.status, 201);
    let bearer = app.post("/chats/my").bearer(&s.access_token).header("origin", "http://evil.example").send().await;
    assert_eq!(bearer.status, 201, "bearer requests carry no ambient credentials");
    // The cookie authenticates whatever else is sent, so an extra Authorization header changes nothing.
    let both = app
        .post("/chats/my")
        .session(&s)
        .header("authorization", "Bearer whatever")
        .header("origin", "http://evil.example")
        .send()
        .await;
    both.assert_detail(403, "Cross-site request refused");
    let same_origin = app.post("/chats/my").session(&s).header("origin", &app.address).send().await;
    assert_eq!(same_origin.status, 201);
    assert_eq!(
        app.get("/chats/my").session(&s).header("origin", "http://evil.example").send().await.status,
        200,
        "reads are not state changes"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 3);

    // Handing out cookies to a foreign page is refused too (login CSRF), cookies or not.
    let foreign_login = app
        .post("/auth/login")
        .header("origin", "http://evil.example")
        .form(&[("username", "bob_user"), ("password", PASSWORD)])
        .send()
        .await;
    foreign_login.assert_detail(403, "Cross-site request refused");
    assert!(foreign_login.set_cookies().is_empty());
    let foreign_register = app
        .post("/auth/register")
        .header("origin", "http://evil.example")
        .json(&json!({"username": "mallory", "email": "mallory@example.com", "password": PASSWORD}))
        .send()
        .await;
    foreign_register.assert_detail(403, "Cross-site request refused");
    let foreign_refresh = app
        .post("/auth/refresh")
        .header("origin", "http://evil.example")
        .cookie(&format!("refresh_token={}", s.refresh_token))
        .send()
        .await;
    foreign_refresh.assert_detail(403, "Cross-site request refused");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    let spa_login = app
        .post("/auth/login")
        .header("origin", "http://localhost:5173")
        .form(&[("username", "bob_user"), ("password", PASSWORD)])
        .send()
        .await;
    assert_eq!(spa_login.status, 200);

    let preflight = app
        .request(reqwest::Method::OPTIONS, "/chats/my")
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("http://localhost:5173"));
    assert_eq!(preflight.header("access-control-allow-credentials"), Some("true"));
    let foreign = app
        .request(reqwest::Method::OPTIONS, "/chats/my")
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_then_recovers_by_itself() {
    let mut database = create_pg_database().await;
    let mut url = url::Url::parse(&database.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432)).parse().unwrap();
    let proxy = TcpProxy::start(target).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    database.url = url.to_string();
    let app = TestApp::spawn_on_postgres(database).await;
    let (_, s) = app.signed_up("bob_user").await;
    assert_eq!(app.get("/users/me").session(&s).send().await.status, 200);

    proxy.set_up(false);
    let started = Instant::now();
    // (`/users/me` itself may be answered from the user cache for a few seconds.)
    let down = app.get("/chats/my").session(&s).send().await;
    down.assert_detail(503, "Database unavailable");
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    let health = app.get("/health/db").send().await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["db_status"], "unreachable");
    let chat_down = app.post("/chats/my").session(&s).send().await;
    assert_eq!(chat_down.body, json!({"detail": "Database unavailable"}), "no driver text in 5xx bodies");

    proxy.set_up(true);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = app.get("/chats/my").session(&s).send().await;
        if response.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {} {}", response.status, response.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.get("/health/db").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_requests_but_never_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = ollama_emulator::Emulator::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let access_secret = "log-test-access-secret-0123456789abcdefghij";
    let refresh_secret = "log-test-refresh-secret-0123456789abcdefghi";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rovertchat"))
        .env_clear()
        .env("PORT", port.to_string())
        .env("DATA_DIR", dir.path().join("data"))
        .env("LOG_DIR", dir.path().join("logs"))
        .env("JWT_SECRET_KEY", access_secret)
        .env("JWT_REFRESH_SECRET_KEY", refresh_secret)
        .env("OLLAMA_BASE_URL", emulator.base_url())
        .env("LOG_LEVEL", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the server binary starts");
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let password = "Very-secret-pass-42!";
    client
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": "log_user", "email": "log@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/auth/login"))
        .form(&[("username", "log_user"), ("password", "wrong-password-77")])
        .send()
        .await
        .unwrap();
    let login: Value = client
        .post(format!("{base}/auth/login"))
        .form(&[("username", "log_user"), ("password", password)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();
    let cookie = format!("access_token={access}");
    client.get(format!("{base}/users/me")).header("cookie", &cookie).send().await.unwrap();
    let chat: Value =
        client.post(format!("{base}/chats/my")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    client
        .post(format!("{base}/ollama/chat"))
        .header("cookie", &cookie)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat["id"], "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    client.post(format!("{base}/auth/refresh")).header("cookie", format!("refresh_token={refresh}")).send().await.unwrap();
    client.post(format!("{base}/auth/logout")).bearer_auth(access).send().await.unwrap();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();

    let mut logs = String::new();
    for entry in std::fs::read_dir(dir.path().join("logs")).unwrap() {
        logs.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(logs.contains("/api/v1/auth/login") && logs.contains("status=200"), "request lines are logged:\n{logs}");
    for secret in [password, "wrong-password-77", access, refresh, access_secret, refresh_secret] {
        assert!(!logs.contains(secret), "a secret reached the log: {secret}");
    }
    let stored_secrets = std::fs::read_to_string(dir.path().join("data/jwt-secrets.json")).ok();
    assert!(stored_secrets.is_none(), "configured secrets are not written to disk");
}

/// Two clients of one user create chats and delete all of them in a loop: the deletes lock the
/// same rows, which must never deadlock into a 500.
async fn creating_and_deleting_all_chats_at_once_never_fails(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let client = |_: usize| async {
        let mut statuses = Vec::new();
        for _ in 0..120 {
            statuses.push(app.post("/chats/my").session(&s).send().await.status.as_u16());
            statuses.push(app.delete("/chats/my").session(&s).send().await.status.as_u16());
        }
        statuses
    };
    let all: Vec<u16> = futures_util::future::join_all((0..4).map(client)).await.concat();
    let failures: Vec<&u16> = all.iter().filter(|status| **status >= 500).collect();
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:?}", failures.len(), all.len());
    assert!(all.iter().all(|status| [200, 201].contains(status)), "{all:?}");
}
