//! Usage: one `generations` row per answer, however it ended, and the reports built from them.

use std::time::Duration;

use ollama_emulator::Knobs;
use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{StreamReader, TestApp};

on_both_databases!(
    every_answer_leaves_one_usage_row_however_it_ended,
    usage_reports_sum_per_day_model_and_user,
    usage_periods_are_validated,
    admins_see_the_overview,
);

const ROWS: &str = "SELECT COUNT(*) FROM generations";

async fn every_answer_leaves_one_usage_row_however_it_ended(app: TestApp) {
    let (user, s) = app.signed_up("bob_user").await;
    // Completed, in a chat.
    let chat = app.new_chat(&s, None).await;
    let events = StreamReader::open(
        app.post(&format!("/chats/{chat}/completions"))
            .session(&s)
            .json(&json!({"model": "llama3.2:1b", "content": "one two three"})),
    )
    .await
    .rest()
    .await;
    assert_eq!(events.last().unwrap().event, "done");
    app.wait_for_count(ROWS, 1).await;
    let completed = format!(
        "SELECT COUNT(*) FROM generations WHERE status = 'completed' AND user_id = '{}' AND completion_tokens = 4 AND prompt_tokens > 0 \
         AND model = 'llama3.2:1b' AND first_token_ms IS NOT NULL AND duration_ms IS NOT NULL AND api_key_id IS NULL",
        user["id"].as_str().unwrap()
    );
    // SQLite keeps UUIDs as blobs: compare on PostgreSQL only, count on both.
    if app.is_postgres() {
        assert_eq!(app.count(&completed).await, 1);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM generations WHERE status = 'completed' AND chat_id IS NOT NULL").await, 1);

    // Stopped.
    app.emulator.set_knobs(Knobs { per_token_delay: Duration::from_millis(50), tokens: Some(100), ..Knobs::default() });
    let chat2 = app.new_chat(&s, None).await;
    let mut stream = StreamReader::open(
        app.post(&format!("/chats/{chat2}/completions")).session(&s).json(&json!({"model": "llama3.2:1b", "content": "long"})),
    )
    .await;
    stream.next_event().await;
    stream.next_event().await;
    assert_eq!(app.post(&format!("/chats/{chat2}/stop")).session(&s).send().await.status, 200);
    app.wait_for_count(ROWS, 2).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM generations WHERE status = 'stopped' AND completion_tokens > 0").await, 1);

    // Failed mid-answer.
    app.emulator.set_knobs(Knobs { error_after_tokens: Some((2, "boom".into())), ..Knobs::default() });
    let events = StreamReader::open(
        app.post(&format!("/chats/{chat}/completions")).session(&s).json(&json!({"model": "llama3.2:1b", "content": "a b c d"})),
    )
    .await
    .rest()
    .await;
    assert_eq!(events.last().unwrap().event, "error");
    app.wait_for_count(ROWS, 3).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM generations WHERE status = 'failed' AND completion_tokens = 2").await, 1);

    // Through an API key.
    app.emulator.set_knobs(Knobs::default());
    let key = app.api_key(&s, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned();
    let body = json!({"model": "qwen3:0.6b", "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await.status, 200);
    app.wait_for_count(ROWS, 4).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM generations WHERE api_key_id IS NOT NULL AND chat_id IS NULL").await, 1);

    // Usage outlives its chats.
    assert_eq!(app.delete("/chats/my").session(&s).send().await.status, 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 0);
    assert_eq!(app.count(ROWS).await, 4);
    let report = app.get("/usage/me").session(&s).send().await;
    assert_eq!(report.body["total"]["requests"], 4, "{}", report.body);
}

async fn usage_reports_sum_per_day_model_and_user(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (bob, s) = app.signed_up("bob_user").await;
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    for (session, model, content) in [
        (&s, "llama3.2:1b", "one two"),
        (&s, "llama3.2:1b", "three"),
        (&s, "qwen3:0.6b", "four"),
        (&admin, "llama3.2:1b", "five"),
    ] {
        let chat = app.new_chat(session, None).await;
        let done = StreamReader::open(
            app.post(&format!("/chats/{chat}/completions")).session(session).json(&json!({"model": model, "content": content})),
        )
        .await
        .rest()
        .await;
        assert_eq!(done.last().unwrap().event, "done");
    }
    app.wait_for_count(ROWS, 4).await;
    let today = chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string();

    let mine = app.get("/usage/me").session(&s).send().await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(mine.body["total"]["requests"], 3);
    assert_eq!(mine.body["total"]["completion_tokens"], 3 + 2 + 2);
    let by_day = mine.body["by_day"].as_array().unwrap();
    assert_eq!(by_day.len(), 30, "every day of the default period");
    assert_eq!(by_day.last().unwrap()["day"], json!(today));
    assert_eq!(by_day.last().unwrap()["requests"], 3);
    assert_eq!(by_day[0]["requests"], 0);
    let models: Vec<(&str, i64)> = mine.body["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["model"].as_str().unwrap(), m["requests"].as_i64().unwrap()))
        .collect();
    assert_eq!(models, [("llama3.2:1b", 2), ("qwen3:0.6b", 1)]);
    assert!(mine.body.get("by_user").is_none());

    let everyone = app.get(&format!("/admin/usage?from={today}&to={today}")).session(&admin).send().await;
    assert_eq!(everyone.status, 200, "{}", everyone.body);
    assert_eq!(everyone.body["total"]["requests"], 4);
    assert_eq!(everyone.body["by_day"].as_array().unwrap().len(), 1);
    let users: Vec<(&str, i64)> = everyone.body["by_user"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap(), u["requests"].as_i64().unwrap()))
        .collect();
    assert_eq!(users, [("bob_user", 3), ("ann_admin", 1)]);
    let only_bob = app.get(&format!("/admin/usage?user_id={bob_id}")).session(&admin).send().await;
    assert_eq!(only_bob.body["total"]["requests"], 3);
    assert_eq!(only_bob.body["by_user"][0]["user_id"], json!(bob_id));

    let yesterday = (chrono::Utc::now().date_naive() - chrono::Days::new(1)).format("%Y-%m-%d").to_string();
    let before = app.get(&format!("/usage/me?from={yesterday}&to={yesterday}")).session(&s).send().await;
    assert_eq!(before.body["total"], json!({"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}));
    assert_eq!(before.body["by_model"], json!([]));
    app.get("/admin/usage").session(&s).send().await.assert_detail(403, "Not an admin user");
}

async fn usage_periods_are_validated(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    for query in ["from=yesterday", "to=2026-13-01", "from=2026-02-01&to=2026-01-01", "from=2020-01-01&to=2026-01-01"] {
        let response = app.get(&format!("/usage/me?{query}")).session(&s).send().await;
        assert_eq!(response.status, 422, "{query}: {}", response.body);
        let issue: &Value = &response.body["detail"][0];
        assert_eq!(issue["loc"][0], "query", "{query}");
    }
}

async fn admins_see_the_overview(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (_, s) = app.signed_up("bob_user").await;
    let guest = app
        .post("/auth/register")
        .session(&admin)
        .json(&json!({"username": "gina_guest", "email": "gina@example.com", "password": crate::support::PASSWORD, "role": "guest", "is_active": false}))
        .send()
        .await;
    assert_eq!(guest.status, 201);
    for content in ["one", "two three"] {
        let chat = app.new_chat(&s, None).await;
        let done = StreamReader::open(
            app.post(&format!("/chats/{chat}/completions"))
                .session(&s)
                .json(&json!({"model": "llama3.2:1b", "content": content})),
        )
        .await
        .rest()
        .await;
        assert_eq!(done.last().unwrap().event, "done");
    }
    app.new_chat(&admin, None).await;
    app.wait_for_count(ROWS, 2).await;

    let stats = app.get("/admin/stats").session(&admin).send().await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    let body = &stats.body;
    assert_eq!(
        body["users"],
        json!({"total": 3, "guest": {"active": 0, "inactive": 1}, "user": {"active": 1, "inactive": 0}, "admin": {"active": 1, "inactive": 0}})
    );
    assert_eq!((body["chats"].as_i64(), body["messages"].as_i64()), (Some(3), Some(4)));
    assert_eq!(body["today"]["requests"], 2);
    assert_eq!(body["today"]["completion_tokens"], 2 + 3);
    assert_eq!(body["today"]["by_model"][0]["model"], "llama3.2:1b");
    assert_eq!(body["last_30_days"]["requests"], 2);
    assert_eq!(body["running_generations"], 0);
    assert_eq!(body["upstream_up"], true);
    app.get("/admin/stats").session(&s).send().await.assert_detail(403, "Not an admin user");
}
