//! Quotas: daily tokens and requests, answers at once, per role, per user and per API key,
//! checked when an answer starts.

use ollama_emulator::Knobs;
use reqwest::Method;
use serde_json::json;

use crate::on_both_databases;
use crate::support::{Session, StreamReader, TestApp};

on_both_databases!(
    quotas_have_defaults_and_are_replaced_whole,
    daily_limits_refuse_the_request_after_the_boundary,
    a_key_can_have_its_own_daily_tokens,
    guests_run_one_answer_at_once,
);

async fn ask(app: &TestApp, session: &Session) -> crate::support::TestResponse {
    let chat = app.new_chat(session, None).await;
    let body = json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "one two three"}]});
    app.post("/ollama/chat").session(session).json(&body).send().await
}

async fn quotas_have_defaults_and_are_replaced_whole(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (bob, bob_s) = app.signed_up("bob_user").await;
    let defaults = app.get("/admin/quotas").session(&admin).send().await;
    assert_eq!(defaults.status, 200);
    assert_eq!(
        defaults.body,
        json!({"roles": {
        "guest": {"tokens_per_day": 20000, "requests_per_day": 100, "concurrent_generations": 1},
        "user": {"tokens_per_day": null, "requests_per_day": null, "concurrent_generations": 4},
        "admin": {"tokens_per_day": null, "requests_per_day": null, "concurrent_generations": null},
    }, "users": {}})
    );

    let bob_id = bob["id"].as_str().unwrap();
    let new = json!({"roles": {"user": {"tokens_per_day": 5000, "requests_per_day": null, "concurrent_generations": 2}},
                     "users": {bob_id: {"tokens_per_day": null, "requests_per_day": 10, "concurrent_generations": null}}});
    let saved = app.put("/admin/quotas").session(&admin).json(&new).send().await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(
        saved.body["roles"]["user"],
        json!({"tokens_per_day": 5000, "requests_per_day": null, "concurrent_generations": 2})
    );
    assert_eq!(saved.body["roles"]["guest"]["tokens_per_day"], 20000, "a role left out keeps its built-in limits");
    assert_eq!(saved.body["users"][bob_id]["requests_per_day"], 10);
    assert_eq!(app.get("/admin/quotas").session(&admin).send().await.body, saved.body);

    for (body, at) in [
        (json!({"roles": {"owner": {}}}), json!(["body", "roles", "owner"])),
        (json!({"roles": {"user": {"tokens_per_day": -1}}}), json!(["body", "roles", "user", "tokens_per_day"])),
        (json!({"roles": {"user": {"tokens_per_day": "lots"}}}), json!(["body", "roles", "user", "tokens_per_day"])),
        (json!({"users": {"bob": {}}}), json!(["body", "users", "bob"])),
        (json!({"roles": {"user": {"per_hour": 3}}}), json!(["body", "roles", "user", "per_hour"])),
    ] {
        let refused = app.put("/admin/quotas").session(&admin).json(&body).send().await;
        assert_eq!(refused.status, 422, "{body}: {}", refused.body);
        assert_eq!(refused.body["detail"][0]["loc"], at, "{body}");
    }
    app.get("/admin/quotas").session(&bob_s).send().await.assert_detail(403, "Not an admin user");
    app.put("/admin/quotas").session(&bob_s).json(&json!({})).send().await.assert_detail(403, "Not an admin user");
}

async fn daily_limits_refuse_the_request_after_the_boundary(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (bob, bob_s) = app.signed_up("bob_user").await;
    let (_, carl_s) = app.signed_up("carl_user").await;
    let bob_id = bob["id"].as_str().unwrap();
    let quotas = json!({"users": {bob_id: {"requests_per_day": 2}}, "roles": {"user": {"tokens_per_day": 1}}});
    assert_eq!(app.put("/admin/quotas").session(&admin).json(&quotas).send().await.status, 200);

    // Bob: his own entry (2 requests a day, no token limit) replaces the role's.
    assert_eq!(ask(&app, &bob_s).await.status, 200);
    assert_eq!(ask(&app, &bob_s).await.status, 200);
    let refused = ask(&app, &bob_s).await;
    refused.assert_detail(429, "Rate limit exceeded: 2 requests per day; it resets at 00:00 UTC");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let now = chrono::Utc::now();
    let midnight = (now.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).unwrap();
    let expected = (midnight - now.naive_utc()).num_seconds() as u64;
    assert!(retry.abs_diff(expected) <= 5, "Retry-After {retry}, seconds to midnight {expected}");

    // Carl: the role's 1 token a day; the answer that crosses it is served whole, the next refused.
    let first = ask(&app, &carl_s).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["message"]["content"], "Echo: one two three", "never cut half-way");
    let chat = app.new_chat(&carl_s, None).await;
    let stream = app
        .post(&format!("/chats/{chat}/completions"))
        .session(&carl_s)
        .json(&json!({"model": "llama3.2:1b", "content": "hi"}))
        .send()
        .await;
    stream.assert_detail(429, "Rate limit exceeded: 1 tokens per day; it resets at 00:00 UTC");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM messages WHERE role = 'user' AND content = 'hi'").await,
        0,
        "a refused question is not stored"
    );
    // Admins are unlimited by default.
    for _ in 0..3 {
        assert_eq!(ask(&app, &admin).await.status, 200);
    }
}

async fn a_key_can_have_its_own_daily_tokens(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let capped = app.api_key(&s, json!({"name": "capped", "tokens_per_day": 1})).await;
    assert_eq!(capped["tokens_per_day"], 1);
    let capped = capped["key"].as_str().unwrap().to_owned();
    let free = app.api_key(&s, json!({"name": "free"})).await["key"].as_str().unwrap().to_owned();
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(app.openai(Method::POST, "/chat/completions", &capped).json(&body).send().await.status, 200);
    app.wait_for_count("SELECT COUNT(*) FROM generations", 1).await;
    let refused = app.openai(Method::POST, "/chat/completions", &capped).json(&body).send().await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(
        refused.body["error"]["message"],
        "Rate limit exceeded: 1 tokens per day for this API key; it resets at 00:00 UTC"
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        app.openai(Method::POST, "/chat/completions", &free).json(&body).send().await.status,
        200,
        "the owner's other keys go on"
    );
}

async fn guests_run_one_answer_at_once(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (_, gina) = app.guest_made_by(&admin, "gina_guest").await;
    let policy =
        app.put("/admin/models/llama3.2:1b").session(&admin).json(&json!({"allowed_roles": ["user", "guest"]})).send().await;
    assert_eq!(policy.status, 200);
    app.emulator.set_knobs(Knobs { hang: true, ..Knobs::default() });
    let mut chats = Vec::new();
    for _ in 0..5 {
        chats.push(app.new_chat(&gina, None).await);
    }
    let opened = futures_util::future::join_all(chats.iter().map(|chat| {
        let (app, gina) = (&app, &gina);
        async move {
            StreamReader::open(
                app.post(&format!("/chats/{chat}/completions"))
                    .session(gina)
                    .json(&json!({"model": "llama3.2:1b", "content": "hi"})),
            )
            .await
        }
    }))
    .await;
    let statuses: Vec<u16> = opened.iter().map(|s| s.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 4, "{statuses:?}");
    let refused = opened.iter().find(|s| s.status == 429).unwrap();
    assert_eq!(refused.headers["retry-after"], "5");
}
