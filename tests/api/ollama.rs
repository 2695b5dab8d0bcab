use std::time::Duration;

use ollama_emulator::Knobs;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::TestApp;

on_both_databases!(
    model_routes_pass_ollama_through,
    tags_are_cached_until_cleared,
    admin_model_routes_refuse_others,
    chat_stores_the_answer_and_titles_the_chat,
    chat_stores_thinking_and_the_known_model,
    ollama_errors_are_typed_and_store_nothing,
    a_slow_first_token_waits_within_the_timeout,
    a_failure_mid_answer_keeps_the_partial_answer,
    chat_without_a_message_list_answers_422,
);

async fn model_routes_pass_ollama_through(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    assert_eq!(app.get("/ollama/version").session(&admin).send().await.body, json!({"version": "0.9.0"}));
    let tags = app.get("/ollama/tags").session(&admin).send().await;
    let models = tags.body["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"llama3.2:1b") && names.contains(&"qwen3:0.6b"), "{names:?}");
    let qwen = models.iter().find(|m| m["name"] == "qwen3:0.6b").unwrap();
    assert_eq!(qwen["capabilities"], json!(["completion", "tools", "thinking"]));
    let keys: Vec<&str> = qwen.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["model", "name", "modified_at", "size", "digest", "details", "capabilities", "provider"]);
    app.get("/ollama/tags").send().await.assert_detail(401, "Not authenticated");

    let shown = app.post("/ollama/show").session(&admin).json(&json!({"model": "llama3.2:1b"})).send().await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["capabilities"], json!(["completion"]));
    let unknown = app.post("/ollama/show").session(&admin).json(&json!({"model": "nonexistent:1b"})).send().await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body["detail"].as_str().unwrap().contains("not found"));
    app.post("/ollama/show")
        .session(&admin)
        .json(&json!({}))
        .send()
        .await
        .assert_validation(&[("missing", json!(["body", "model"]))]);

    let pulled = app.post("/ollama/pull").session(&admin).json(&json!({"model": "tinyllama:latest"})).send().await;
    assert_eq!(pulled.status, 200);
    assert!(pulled.body.as_str().unwrap().contains("\"success\""), "{}", pulled.body);
    assert!(app.emulator.models().contains(&"tinyllama:latest".to_string()));
    let missing = app.post("/ollama/pull").session(&admin).json(&json!({"model": "nonexistent-model:latest"})).send().await;
    missing.assert_detail(404, "pull model manifest: file does not exist");

    let deleted = app.delete("/ollama/delete").session(&admin).json(&json!({"model": "tinyllama:latest"})).send().await;
    assert_eq!(deleted.body, json!({"message": "Model deleted successfully"}));
    let again = app.delete("/ollama/delete").session(&admin).json(&json!({"model": "tinyllama:latest"})).send().await;
    assert_eq!(again.status, 404);
    assert!(!app.emulator.models().contains(&"tinyllama:latest".to_string()));
}

async fn tags_are_cached_until_cleared(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    // Model lists are read by the server's probes (one at startup, then in the background) and
    // served from memory.
    let probes = app.emulator.requests().iter().filter(|r| r.path == "/api/tags").count();
    let tag_calls = || app.emulator.requests().iter().filter(|r| r.path == "/api/tags").count() - probes;
    let first = app.get("/ollama/tags").session(&admin).send().await;
    app.get("/ollama/tags").session(&admin).send().await;
    assert_eq!(tag_calls(), 0);
    assert_eq!(first.body["models"].as_array().unwrap().len(), 2);
    let shows = app.emulator.requests().iter().filter(|r| r.path == "/api/show").count();
    assert_eq!(shows, 2, "one show per model");
    let cleared = app.post("/ollama/cache/clear").session(&admin).send().await;
    assert_eq!(cleared.body, json!({"message": "Model cache cleared successfully"}));
    assert!(tag_calls() >= 1, "clearing reads the models again");
    app.get("/ollama/tags").session(&admin).send().await;
}

async fn admin_model_routes_refuse_others(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let (_, bob) = app.signed_up("bob_user").await;
    let guest = app
        .post("/auth/register")
        .session(&admin)
        .json(&json!({"username": "gina_guest", "email": "gina@example.com", "password": crate::support::PASSWORD, "role": "guest"}))
        .send()
        .await;
    assert_eq!(guest.body["role"], "guest");
    let gina = app.login("gina_guest", crate::support::PASSWORD).await;
    for session in [&bob, &gina] {
        let calls = [
            app.post("/ollama/pull").json(&json!({"model": "tinyllama:latest"})),
            app.delete("/ollama/delete").json(&json!({"model": "llama3.2:1b"})),
            app.post("/ollama/cache/clear"),
        ];
        for call in calls {
            call.session(session).send().await.assert_detail(403, "Not an admin user");
        }
    }
    app.post("/ollama/pull").json(&json!({"model": "tinyllama:latest"})).send().await.assert_detail(401, "Not authenticated");
    assert!(app.emulator.requests().iter().all(|r| r.path != "/api/pull" && r.path != "/api/delete"));
}

async fn chat_stores_the_answer_and_titles_the_chat(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    let question = "What is the capital of Portugal and why is it famous?";
    app.post_message(&s, &chat, "user", question).await;
    let response = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "stream": false, "messages": [{"role": "user", "content": question}]}))
        .send()
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = &response.body;
    assert_eq!(body["model"], "llama3.2:1b");
    assert_eq!(body["message"], json!({"role": "assistant", "content": format!("Echo: {question}")}));
    assert_eq!(body["done"], true);
    assert_eq!(body["done_reason"], "stop");
    assert_eq!(body["chat"], json!({"id": chat, "title": "What is the capital of Portuga..."}));
    let eval_count = body["eval_count"].as_i64().unwrap();
    assert!(eval_count > 0);

    // Only Ollama's fields go upstream.
    let sent = app.emulator.chat_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].get("chatId"), None);
    assert_eq!(sent[0]["messages"], json!([{"role": "user", "content": question}]));

    let opened = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await;
    assert_eq!(opened.body["chat"]["title"], "What is the capital of Portuga...");
    let messages = opened.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let answer = &messages[1];
    assert_eq!(answer["id"], body["id"]);
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"], format!("Echo: {question}"));
    assert_eq!(answer["tokens_used"], eval_count);
    assert_eq!(
        answer["extended_metadata"],
        json!({"prompt_eval_count": body["prompt_eval_count"], "eval_count": eval_count, "eval_duration": body["eval_duration"]})
    );
    assert_eq!(answer["model_id"], Value::Null);

    // A chat that already has a title keeps it.
    let titled = app.new_chat(&s, Some("Trip to Lisbon")).await;
    let kept = app
        .post("/ollama/chat")
        .session(&s)
        .json(
            &json!({"model": "llama3.2:1b", "chatId": titled, "messages": [{"role": "user", "content": "Best time to visit?"}]}),
        )
        .send()
        .await;
    assert_eq!(kept.body["chat"]["title"], "Trip to Lisbon");
    app.post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "messages": [{"role": "bot", "content": "hi"}]}))
        .send()
        .await
        .assert_validation(&[("literal_error", json!(["body", "messages", 0, "role"])), ("missing", json!(["body", "chatId"]))]);
}

async fn chat_stores_thinking_and_the_known_model(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let model_id = uuid::Uuid::new_v4();
    crate::on_pool!(app.store, pool => {
        sqlx::query("INSERT INTO models (id, name, is_active) VALUES ($1, $2, TRUE)").bind(model_id).bind("qwen3:0.6b").execute(pool).await.map(|_| ())
    })
    .unwrap();
    let chat = app.new_chat(&s, None).await;
    let response = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "qwen3:0.6b", "chatId": chat, "think": true, "messages": [{"role": "user", "content": "Think first"}]}))
        .send()
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let thinking = response.body["message"]["thinking"].as_str().unwrap().to_owned();
    assert!(!thinking.is_empty());
    assert_eq!(app.emulator.chat_requests()[0]["think"], true);
    let stored = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["messages"][0].clone();
    assert_eq!(stored["thinking"], thinking);
    assert_eq!(stored["model_id"], json!(model_id));
    let catalog = app.get("/chats/models").session(&s).send().await;
    assert_eq!(catalog.body["models"][0]["name"], "qwen3:0.6b");
}

async fn ollama_errors_are_typed_and_store_nothing(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.post_message(&s, &chat, "user", "hi").await;
    let unknown = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "nonexistent:1b", "chatId": chat, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body["detail"].as_str().unwrap().contains("not found"), "{}", unknown.body);
    app.post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "chatId": uuid::Uuid::new_v4(), "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .assert_detail(404, "Chat not found");
    let bad_think = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "think": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert_eq!(bad_think.status, 400, "{}", bad_think.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 1, "the user's message stays, no answer is stored");

    // Ollama down: a server whose Ollama is a closed port.
    let dead = TestApp::spawn_with(app.backend, vec![("OLLAMA_BASE_URL", "http://127.0.0.1:9".into())]).await;
    let (_, d) = dead.signed_up("bob_user").await;
    let dead_chat = dead.new_chat(&d, None).await;
    dead.post_message(&d, &dead_chat, "user", "hi").await;
    let down = dead
        .post("/ollama/chat")
        .session(&d)
        .json(&json!({"model": "llama3.2:1b", "chatId": dead_chat, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert_eq!(down.status, 502, "{}", down.body);
    // The upstream's address goes to the log, never into an answer.
    let detail = down.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("Cannot connect to Ollama: "), "{detail}");
    assert!(!detail.contains("127.0.0.1") && !detail.contains(":9"), "{detail}");
    assert_eq!(dead.get("/ollama/version").send().await.status, 401, "only for signed-in users");
    let version = dead.get("/ollama/version").session(&d).send().await;
    assert_eq!(version.status, 502);
    assert!(!version.body.to_string().contains("127.0.0.1"), "{}", version.body);
    assert_eq!(dead.get("/ollama/tags").session(&d).send().await.status, 502);
    assert_eq!(dead.count("SELECT COUNT(*) FROM messages WHERE role = 'assistant'").await, 0);
    assert_eq!(dead.count("SELECT COUNT(*) FROM messages WHERE role = 'user'").await, 1);
}

async fn a_slow_first_token_waits_within_the_timeout(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(Knobs { first_token_delay: Duration::from_millis(1500), ..Knobs::default() });
    let slow = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "take your time"}]}))
        .send()
        .await;
    assert_eq!(slow.status, 200, "{}", slow.body);

    let impatient = TestApp::spawn_with(app.backend, vec![("OLLAMA_FIRST_BYTE_TIMEOUT_SECS", "1".into())]).await;
    impatient.emulator.set_knobs(Knobs { first_token_delay: Duration::from_secs(3), ..Knobs::default() });
    let (_, i) = impatient.signed_up("bob_user").await;
    let chat = impatient.new_chat(&i, None).await;
    let timed_out = impatient
        .post("/ollama/chat")
        .session(&i)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "hurry"}]}))
        .send()
        .await;
    assert_eq!(timed_out.status, 504, "{}", timed_out.body);
    assert_eq!(impatient.count("SELECT COUNT(*) FROM messages").await, 0);
}

async fn a_failure_mid_answer_keeps_the_partial_answer(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(Knobs { error_after_tokens: Some((2, "out of memory".into())), ..Knobs::default() });
    let failed = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "one two three four five"}]}))
        .send()
        .await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(failed.body["detail"], "out of memory");
    let stored = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["messages"].clone();
    assert_eq!(stored.as_array().unwrap().len(), 1);
    assert_eq!(stored[0]["content"], "Echo: one");
    assert_eq!(stored[0]["extended_metadata"]["status"], "failed");
    assert_eq!(stored[0]["extended_metadata"]["error"], "out of memory");
}

async fn chat_without_a_message_list_answers_422(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    for messages in [Value::Null, json!("hi"), json!({"role": "user", "content": "hi"})] {
        app.post("/ollama/chat")
            .session(&s)
            .json(&json!({"model": "llama3.2:1b", "chatId": chat, "messages": messages}))
            .send()
            .await
            .assert_validation(&[("list_type", json!(["body", "messages"]))]);
    }
    assert_eq!(app.emulator.chat_requests().len(), 0);
}
