//! Several upstreams (#14): routing to a provider that has the model, loaded first, least busy,
//! sticky chats, failover before the first token only, cool-down and recovery, the admin's
//! provider API (keys encrypted and never shown, changes audited), and what non-admins see.

use std::time::{Duration, Instant};

use ollama_emulator::{Emulator, EmulatorConfig, Knobs, ModelSpec};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{Backend, Session, StreamReader, TestApp};

on_both_databases!(
    each_model_goes_to_a_provider_that_has_it_and_tags_are_the_union,
    a_loaded_model_wins_then_the_least_busy_provider,
    a_chat_sticks_to_the_provider_of_its_last_answer,
    a_provider_failing_before_the_first_token_hands_over_to_the_next,
    after_the_first_token_there_is_no_failover_and_the_partial_answer_is_kept,
    a_dead_provider_is_cooled_down_and_recovers_without_a_restart,
    a_hung_provider_delays_nothing,
    a_provider_that_takes_requests_but_never_starts_is_passed_over,
    pull_and_delete_act_on_the_named_provider,
    admins_manage_providers_and_keys_are_never_shown,
    non_admins_never_see_an_upstream_address,
    an_openai_compatible_provider_serves_its_models_under_its_prefix,
    the_spa_journey_survives_losing_the_first_ollama_mid_answer,
    the_spa_journey_survives_losing_the_second_ollama_mid_answer,
    the_spa_journey_survives_losing_the_openai_server_mid_answer,
);

fn spec(name: &str) -> ModelSpec {
    match name {
        "llama3.2:1b" => ModelSpec::llama3_2_1b(),
        "qwen3:0.6b" => ModelSpec::qwen3_0_6b(),
        other => ModelSpec::new(other, &["completion"]),
    }
}

async fn emulator_with(models: &[&str]) -> Emulator {
    Emulator::start_with(EmulatorConfig { models: Some(models.iter().map(|m| spec(m)).collect()), ..Default::default() }).await
}

/// A server whose providers are these emulators (`default`, `default-2`, ... in this order).
async fn app_with(backend: Backend, upstreams: &[&Emulator]) -> TestApp {
    let urls: Vec<String> = upstreams.iter().map(|e| e.base_url()).collect();
    TestApp::spawn_with(backend, vec![("OLLAMA_BASE_URL", urls.join(","))]).await
}

/// A server whose two providers (`default`, `default-2`) both have `llama3.2:1b`.
async fn two_llama_hosts(backend: Backend) -> (Emulator, Emulator, TestApp) {
    let first = emulator_with(&["llama3.2:1b"]).await;
    let second = emulator_with(&["llama3.2:1b"]).await;
    let app = app_with(backend, &[&first, &second]).await;
    (first, second, app)
}

/// The SPA's chat call, waiting for the whole answer.
async fn ask(app: &TestApp, session: &Session, chat: &str, model: &str, content: &str) -> crate::support::TestResponse {
    app.post("/ollama/chat")
        .session(session)
        .json(&json!({"model": model, "chatId": chat, "stream": false, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
}

async fn providers(app: &TestApp, admin: &Session) -> Vec<Value> {
    let listed = app.get("/admin/providers").session(admin).send().await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    listed.body.as_array().unwrap().clone()
}

async fn provider(app: &TestApp, admin: &Session, name: &str) -> Value {
    providers(app, admin).await.into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no provider {name}"))
}

/// Waits (at most 30 s) until the provider's state satisfies `ready`.
async fn wait_for_provider(app: &TestApp, admin: &Session, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = provider(app, admin, name).await;
        if ready(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "provider {name} never got there: {found}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Loads `model` on an emulator by asking it directly, then has the server read its state.
async fn load_directly(app: &TestApp, admin: &Session, emulator: &Emulator, model: &str) {
    let loaded = reqwest::Client::new()
        .post(format!("{}/api/chat", emulator.base_url()))
        .json(&json!({"model": model, "stream": false, "messages": [{"role": "user", "content": "warm up"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(loaded.status(), 200);
    assert_eq!(app.post("/ollama/cache/clear").session(admin).send().await.status, 200);
}

async fn usage_provider(app: &TestApp, chat: &str) -> String {
    let sql = format!("SELECT provider FROM generations WHERE CAST(chat_id AS TEXT) = '{chat}' ORDER BY started_at DESC LIMIT 1");
    crate::on_pool!(app.store, pool => {
        match app.backend {
            Backend::Postgres => sqlx::query_scalar::<_, Option<String>>(&sql).fetch_one(pool).await,
            Backend::Sqlite => {
                let id = uuid::Uuid::parse_str(chat).unwrap();
                sqlx::query_scalar::<_, Option<String>>("SELECT provider FROM generations WHERE chat_id = $1 ORDER BY started_at DESC LIMIT 1")
                    .bind(id)
                    .fetch_one(pool)
                    .await
            }
        }
    })
    .unwrap()
    .unwrap_or_default()
}

async fn each_model_goes_to_a_provider_that_has_it_and_tags_are_the_union(backend: Backend) {
    let first = emulator_with(&["llama3.2:1b", "qwen3:0.6b"]).await;
    let second = emulator_with(&["llama3.2:1b", "mistral:7b"]).await;
    let app = app_with(backend, &[&first, &second]).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    let (_, bob) = app.signed_up("bob_user").await;

    let tags = app.get("/ollama/tags").session(&bob).send().await;
    let listed: Vec<(&str, &str)> = tags.body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["provider"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("llama3.2:1b", "default"), ("qwen3:0.6b", "default"), ("mistral:7b", "default-2")]);
    assert_eq!(tags.body["models"][1]["capabilities"], json!(["completion", "tools", "thinking"]));

    let chat = app.new_chat(&bob, None).await;
    let answered = ask(&app, &bob, &chat, "mistral:7b", "Bonjour").await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.body["message"]["content"], "Echo: Bonjour");
    assert_eq!((first.chat_requests().len(), second.chat_requests().len()), (0, 1));
    assert_eq!(usage_provider(&app, &chat).await, "default-2");

    let other = app.new_chat(&bob, None).await;
    assert_eq!(ask(&app, &bob, &other, "qwen3:0.6b", "Hi").await.status, 200);
    assert_eq!((first.chat_requests().len(), second.chat_requests().len()), (1, 1));

    // The OpenAI-compatible API lists the union too.
    let key = app.api_key(&admin, json!({"name": "laptop"})).await["key"].as_str().unwrap().to_owned();
    let models = app.openai(reqwest::Method::GET, "/models", &key).send().await;
    let ids: Vec<&str> = models.body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["llama3.2:1b", "qwen3:0.6b", "mistral:7b"]);

    // A model nobody has is Ollama's "not found", as before.
    let unknown = ask(&app, &bob, &other, "nobody:1b", "Hi").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

async fn a_loaded_model_wins_then_the_least_busy_provider(backend: Backend) {
    let (first, second, app) = two_llama_hosts(backend).await;
    let (_, admin) = app.signed_up("admin_ann").await;

    // Both idle and cold: the first by name. Loaded on the second: the second.
    load_directly(&app, &admin, &second, "llama3.2:1b").await;
    let loaded = provider(&app, &admin, "default-2").await;
    assert_eq!(loaded["status"]["loaded_models"], json!(["llama3.2:1b"]), "{loaded}");
    let chat = app.new_chat(&admin, None).await;
    assert_eq!(ask(&app, &admin, &chat, "llama3.2:1b", "Which one?").await.status, 200);
    assert_eq!(second.chat_requests().len(), 2, "the direct one and ours");
    assert_eq!(first.chat_requests().len(), 0);

    // Busy there (an answer that does not start), the next answer goes to the idle one.
    second.set_knobs(Knobs { hang: true, ..Knobs::default() });
    let (_, bob) = app.signed_up("bob_user").await;
    let hanging = app.new_chat(&bob, None).await;
    let mut stream = app.open_completion(&bob, &hanging, "llama3.2:1b", "wait").await;
    assert_eq!(stream.next_event().await.unwrap().event, "start");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The emulator reads its knobs when the request arrives: it must have it before they change.
    while provider(&app, &admin, "default-2").await["status"]["running"] != 1 || second.in_flight_chats() != 1 {
        assert!(Instant::now() < deadline, "the hanging answer never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.set_knobs(Knobs::default());
    load_directly(&app, &admin, &first, "llama3.2:1b").await;
    let idle = app.new_chat(&admin, None).await;
    assert_eq!(ask(&app, &admin, &idle, "llama3.2:1b", "Anyone free?").await.status, 200);
    assert_eq!(first.chat_requests().len(), 2, "the idle provider answered (after the direct one)");
    let stopped = app.post(&format!("/chats/{hanging}/stop")).session(&bob).send().await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
}

async fn a_chat_sticks_to_the_provider_of_its_last_answer(backend: Backend) {
    let (first, second, app) = two_llama_hosts(backend).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    let chat = app.new_chat(&admin, None).await;
    assert_eq!(ask(&app, &admin, &chat, "llama3.2:1b", "One").await.status, 200);
    assert_eq!(first.chat_requests().len(), 1);

    // The second becomes the better choice for anyone else: loaded and preferred.
    load_directly(&app, &admin, &second, "llama3.2:1b").await;
    let id = provider(&app, &admin, "default-2").await["id"].as_str().unwrap().to_owned();
    let raised = app.put(&format!("/admin/providers/{id}")).session(&admin).json(&json!({"priority": 10})).send().await;
    assert_eq!(raised.status, 200, "{}", raised.body);
    wait_for_provider(&app, &admin, "default-2", |p| {
        p["status"]["healthy"] == true && p["status"]["loaded_models"] == json!(["llama3.2:1b"])
    })
    .await;
    let fresh = app.new_chat(&admin, None).await;
    assert_eq!(ask(&app, &admin, &fresh, "llama3.2:1b", "New").await.status, 200);
    assert_eq!(second.chat_requests().len(), 2, "a new chat goes to the better one");

    // The first chat stays where its conversation is warm.
    assert_eq!(ask(&app, &admin, &chat, "llama3.2:1b", "Two").await.status, 200);
    assert_eq!(first.chat_requests().len(), 2);
    assert_eq!(usage_provider(&app, &chat).await, "default");

    // Its provider gone, it moves on.
    drop(first);
    let moved = ask(&app, &admin, &chat, "llama3.2:1b", "Three").await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(usage_provider(&app, &chat).await, "default-2");
}

async fn a_provider_failing_before_the_first_token_hands_over_to_the_next(backend: Backend) {
    let (first, second, app) = two_llama_hosts(backend).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    first.set_knobs(Knobs {
        fail_before_first_byte: Some((500, "llama runner process has terminated".into())),
        ..Knobs::default()
    });
    let chat = app.new_chat(&admin, None).await;
    let events = app.open_completion(&admin, &chat, "llama3.2:1b", "Still there?").await.rest().await;
    let end = events.last().unwrap();
    assert_eq!(end.event, "done", "{events:?}");
    assert_eq!(end.data["message"]["content"], "Echo: Still there?");
    assert_eq!((first.chat_requests().len(), second.chat_requests().len()), (1, 1));

    // Unreachable is the same: the answer comes from the other one.
    drop(first);
    let other = app.new_chat(&admin, None).await;
    let answered = ask(&app, &admin, &other, "llama3.2:1b", "And now?").await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(second.chat_requests().len(), 2);
}

async fn after_the_first_token_there_is_no_failover_and_the_partial_answer_is_kept(backend: Backend) {
    let (first, second, app) = two_llama_hosts(backend).await;
    let (_, bob) = app.signed_up("bob_user").await;
    // Paced, so that the first tokens reach the server before the connection is cut.
    first.set_knobs(Knobs { drop_after_tokens: Some(2), per_token_delay: Duration::from_millis(30), ..Knobs::default() });
    let chat = app.new_chat(&bob, None).await;
    let failed = ask(&app, &bob, &chat, "llama3.2:1b", "one two three four").await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(second.chat_requests().len(), 0, "no second answer after the first token");
    let stored = app.get(&format!("/chats/chat/{chat}")).session(&bob).send().await.body["messages"].clone();
    assert_eq!(stored.as_array().unwrap().len(), 1);
    assert_eq!(stored[0]["content"], "Echo: one");
    assert_eq!(stored[0]["extended_metadata"]["status"], "failed");
}

async fn a_dead_provider_is_cooled_down_and_recovers_without_a_restart(backend: Backend) {
    let first = emulator_with(&["llama3.2:1b", "qwen3:0.6b"]).await;
    let second = emulator_with(&["llama3.2:1b"]).await;
    let port = first.addr().port();
    let app = app_with(backend, &[&first, &second]).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    drop(first);

    // Killed while in use: its requests go elsewhere, and it is cooled down.
    let chat = app.new_chat(&admin, None).await;
    assert_eq!(ask(&app, &admin, &chat, "llama3.2:1b", "Hello?").await.status, 200);
    assert_eq!(second.chat_requests().len(), 1);
    let down = provider(&app, &admin, "default").await;
    assert_eq!(down["status"]["healthy"], false);
    assert!(down["status"]["last_error"].as_str().unwrap().starts_with("Cannot connect to Ollama"), "{down}");
    let tags = app.get("/ollama/tags").session(&admin).send().await;
    assert_eq!(tags.body["models"].as_array().unwrap().len(), 1, "only what a reachable provider has: {}", tags.body);

    // Back on its port: the background probe finds it, and its models are served again.
    let back = Emulator::start_with(EmulatorConfig {
        port: Some(port),
        models: Some(vec![spec("llama3.2:1b"), spec("qwen3:0.6b")]),
        ..Default::default()
    })
    .await;
    wait_for_provider(&app, &admin, "default", |p| p["status"]["healthy"] == true).await;
    let other = app.new_chat(&admin, None).await;
    assert_eq!(ask(&app, &admin, &other, "qwen3:0.6b", "Welcome back").await.status, 200);
    assert_eq!(back.chat_requests().len(), 1);
}

async fn a_hung_provider_delays_nothing(backend: Backend) {
    let working = emulator_with(&["llama3.2:1b"]).await;
    let app = app_with(backend, &[&working]).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    // A host that accepts connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            connections.push(socket);
        }
    });
    let quick = Duration::from_secs(3);
    let added = app
        .post("/admin/providers")
        .session(&admin)
        .json(&json!({"name": "stuck", "base_url": hung_url, "priority": 100}))
        .timeout(quick)
        .send()
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let tags = app.get("/ollama/tags").session(&admin).timeout(quick).send().await;
    assert_eq!(tags.body["models"].as_array().unwrap().len(), 1);
    let chat = app.new_chat(&admin, None).await;
    let answered = app
        .post("/ollama/chat")
        .session(&admin)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
        .timeout(quick)
        .send()
        .await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    let stuck = wait_for_provider(&app, &admin, "stuck", |p| !p["status"]["last_error"].is_null()).await;
    assert_eq!(stuck["status"]["healthy"], false);
    assert!(stuck["status"]["last_error"].as_str().unwrap().contains("did not answer"), "{stuck}");
    held.abort();
}

async fn a_provider_that_takes_requests_but_never_starts_is_passed_over(backend: Backend) {
    let first = emulator_with(&["llama3.2:1b"]).await;
    let second = emulator_with(&["llama3.2:1b"]).await;
    let urls = format!("{},{}", first.base_url(), second.base_url());
    let app = TestApp::spawn_with(backend, vec![("OLLAMA_BASE_URL", urls), ("PROVIDER_STALL_SECS", "1".to_owned())]).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    load_directly(&app, &admin, &first, "llama3.2:1b").await;
    load_directly(&app, &admin, &second, "llama3.2:1b").await;

    // Both have the model loaded and are idle, so "default" is asked first; it answers its
    // probes but never starts an answer.
    first.set_knobs(Knobs { hang: true, ..Knobs::default() });
    let chat = app.new_chat(&admin, None).await;
    let asked = Instant::now();
    let answered = ask(&app, &admin, &chat, "llama3.2:1b", "Anyone there?").await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "waited {:?}: the first-byte timeout, not the stall limit",
        asked.elapsed()
    );
    assert_eq!(usage_provider(&app, &chat).await, "default-2");
    assert_eq!(first.chat_requests().len(), 2, "the direct one and the stalled one");
    let stalled = provider(&app, &admin, "default").await;
    assert_eq!(stalled["status"]["healthy"], false, "{stalled}");
    assert!(stalled["status"]["last_error"].as_str().unwrap().contains("no first token"), "{stalled}");

    // Its probes pass, yet the next chat goes to the other provider without waiting.
    assert_eq!(app.post("/ollama/cache/clear").session(&admin).send().await.status, 200);
    let next = app.new_chat(&admin, None).await;
    assert_eq!(ask(&app, &admin, &next, "llama3.2:1b", "And now?").await.status, 200);
    assert_eq!(usage_provider(&app, &next).await, "default-2");
    assert_eq!(first.chat_requests().len(), 2, "nothing more went to the stalled provider");

    // When the other one fails, the stalled one is still tried (before giving up), and its first
    // token ends the stall.
    first.set_knobs(Knobs::default());
    second.set_knobs(Knobs { fail_before_first_byte: Some((500, "out of memory".into())), ..Knobs::default() });
    let last = app.new_chat(&admin, None).await;
    let recovered = ask(&app, &admin, &last, "llama3.2:1b", "Back?").await;
    assert_eq!(recovered.status, 200, "{}", recovered.body);
    assert_eq!(usage_provider(&app, &last).await, "default");
    let answering = provider(&app, &admin, "default").await;
    assert_eq!(answering["status"]["healthy"], true, "{answering}");
    assert!(answering["status"]["last_error"].is_null(), "{answering}");
}

async fn pull_and_delete_act_on_the_named_provider(backend: Backend) {
    let (first, second, app) = two_llama_hosts(backend).await;
    let (_, admin) = app.signed_up("admin_ann").await;

    let mut stream = StreamReader::open(
        app.post("/ollama/pull")
            .session(&admin)
            .json(&json!({"model": "tinyllama:latest", "stream": true, "provider": "default-2"})),
    )
    .await;
    let mut lines = Vec::new();
    while let Some(line) = stream.next_line().await {
        lines.push(line);
    }
    assert!(lines.iter().all(|l| l["provider"] == "default-2"), "{lines:?}");
    assert_eq!(lines.last().unwrap()["status"], "success");
    assert!(second.models().contains(&"tinyllama:latest".to_owned()));
    assert!(!first.models().contains(&"tinyllama:latest".to_owned()));
    let tags = app.get("/ollama/tags").session(&admin).send().await;
    let tiny = tags.body["models"].as_array().unwrap().iter().find(|m| m["name"] == "tinyllama:latest").cloned();
    assert_eq!(tiny.expect("listed at once")["provider"], "default-2");

    // By id too; an unknown provider is 404.
    let id = provider(&app, &admin, "default").await["id"].as_str().unwrap().to_owned();
    let pulled =
        app.post("/ollama/pull").session(&admin).json(&json!({"model": "tinyllama:latest", "provider": id})).send().await;
    assert_eq!(pulled.status, 200, "{}", pulled.body);
    assert!(first.models().contains(&"tinyllama:latest".to_owned()));
    app.post("/ollama/pull")
        .session(&admin)
        .json(&json!({"model": "tinyllama:latest", "provider": "nowhere"}))
        .send()
        .await
        .assert_detail(404, "Provider not found");

    // Deleted from one; without a provider, from every one that has it.
    let deleted = app
        .delete("/ollama/delete")
        .session(&admin)
        .json(&json!({"model": "tinyllama:latest", "provider": "default"}))
        .send()
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(!first.models().contains(&"tinyllama:latest".to_owned()) && second.models().contains(&"tinyllama:latest".to_owned()));
    assert_eq!(app.delete("/ollama/delete").session(&admin).json(&json!({"model": "llama3.2:1b"})).send().await.status, 200);
    assert!(first.models().is_empty() && !second.models().contains(&"llama3.2:1b".to_owned()));
    let pulled_events = app.count("SELECT COUNT(*) FROM audit_events WHERE action = 'model.pulled'").await;
    assert_eq!(pulled_events, 2);
}

async fn admins_manage_providers_and_keys_are_never_shown(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let secret = "sk-very-secret-key-123";
    let created = app
        .post("/admin/providers")
        .session(&admin)
        .json(&json!({"name": "gpu-2", "base_url": "http://10.0.0.12:11434/", "api_key": secret, "priority": 5, "model_prefix": "gpu2/", "enabled": false}))
        .send()
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["base_url"], "http://10.0.0.12:11434");
    assert_eq!(created.body["has_api_key"], true);
    assert_eq!((created.body["kind"].as_str(), created.body["priority"].as_i64()), (Some("ollama"), Some(5)));
    assert!(!created.body.to_string().contains(secret));
    let listed = app.get("/admin/providers").session(&admin).send().await;
    assert!(!listed.body.to_string().contains(secret));
    let names: Vec<&str> = listed.body.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gpu-2", "default"], "the preferred first");
    let default = &listed.body[1];
    assert_eq!(default["status"]["healthy"], true);
    assert_eq!(default["status"]["models"], json!(["llama3.2:1b", "qwen3:0.6b"]));
    assert!(default["status"]["version"].is_string() && default["status"]["latency_ms"].is_u64(), "{default}");

    // Stored sealed: the column never holds the key.
    let stored = app.count(&format!("SELECT COUNT(*) FROM model_providers WHERE api_key_encrypted LIKE 'v1:%' AND api_key_encrypted NOT LIKE '%{secret}%'")).await;
    assert_eq!(stored, 1);

    app.post("/admin/providers")
        .session(&admin)
        .json(&json!({"name": "gpu-2", "base_url": "http://10.0.0.13:11434"}))
        .send()
        .await
        .assert_detail(409, "A provider with this name already exists");
    app.post("/admin/providers")
        .session(&admin)
        .json(&json!({"name": "bad name", "kind": "grpc", "base_url": "ftp://x", "priority": 5000}))
        .send()
        .await
        .assert_validation(&[
            ("string_pattern_mismatch", json!(["body", "name"])),
            ("literal_error", json!(["body", "kind"])),
            ("url_scheme", json!(["body", "base_url"])),
            ("less_than_equal", json!(["body", "priority"])),
        ]);
    app.post("/admin/providers")
        .session(&admin)
        .json(&json!({}))
        .send()
        .await
        .assert_validation(&[("missing", json!(["body", "name"])), ("missing", json!(["body", "base_url"]))]);

    let changed = app
        .put(&format!("/admin/providers/{id}"))
        .session(&admin)
        .json(&json!({"api_key": null, "model_prefix": null, "name": "gpu-two"}))
        .send()
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!((changed.body["has_api_key"].as_bool(), changed.body["name"].as_str()), (Some(false), Some("gpu-two")));
    assert_eq!(changed.body["model_prefix"], Value::Null);
    assert_eq!(changed.body["priority"], 5, "left out, kept");
    let missing = uuid::Uuid::new_v4();
    app.put(&format!("/admin/providers/{missing}"))
        .session(&admin)
        .json(&json!({}))
        .send()
        .await
        .assert_detail(404, "Provider not found");
    assert_eq!(app.delete(&format!("/admin/providers/{id}")).session(&admin).send().await.status, 204);
    app.delete(&format!("/admin/providers/{id}")).session(&admin).send().await.assert_detail(404, "Provider not found");

    // Each change is in the audit log, and no key in it.
    let audit = app.get("/admin/audit?limit=50").session(&admin).send().await;
    let events: Vec<&Value> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("provider."))
        .collect();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["provider.deleted", "provider.updated", "provider.created"]);
    assert!(events.iter().all(|e| e["target"] == json!({"type": "provider", "id": id})), "{events:?}");
    assert_eq!(events[1]["details"]["api_key_changed"], true);
    assert_eq!(events[2]["details"]["has_api_key"], true);
    assert!(!audit.body.to_string().contains(secret));
}

async fn non_admins_never_see_an_upstream_address(backend: Backend) {
    let (first, second, app) = two_llama_hosts(backend).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    let (_, bob) = app.signed_up("bob_user").await;
    let addresses = [first.addr().to_string(), second.addr().to_string()];
    let shows_an_address = |body: &Value| addresses.iter().any(|a| body.to_string().contains(a.as_str()));

    app.get("/admin/providers").session(&bob).send().await.assert_detail(403, "Not an admin user");
    for path in ["/ollama/tags", "/chats/models", "/ollama/version"] {
        let seen = app.get(path).session(&bob).send().await;
        assert_eq!(seen.status, 200, "{path}: {}", seen.body);
        assert!(!shows_an_address(&seen.body), "{path}: {}", seen.body);
    }
    let catalog = app.get("/chats/models").session(&admin).send().await;
    assert!(shows_an_address(&catalog.body), "admins see where providers are: {}", catalog.body);

    // Both down: a clear 502 that names the providers, not where they are.
    drop(first);
    drop(second);
    let chat = app.new_chat(&bob, None).await;
    let down = ask(&app, &bob, &chat, "llama3.2:1b", "anyone?").await;
    assert_eq!(down.status, 502, "{}", down.body);
    let detail = down.body["detail"].as_str().unwrap();
    assert!(detail.contains("default") && detail.contains("default-2"), "{detail}");
    assert!(!shows_an_address(&down.body) && !detail.contains("127.0.0.1"), "{detail}");
    let tags = app.get("/ollama/tags").session(&bob).send().await;
    assert_eq!(tags.status, 502, "{}", tags.body);
    assert!(!tags.body.to_string().contains("127.0.0.1"), "{}", tags.body);
}

/// A database adopted from the original keeps its providers' rows; duplicate names are told
/// apart, and they are listed with the defaults of the new columns.
#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_database_keeps_its_providers() {
    let database = crate::adoption::fixture_database().await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO model_providers (id, name, api_url, auth_type, created_by, created_at, is_active) VALUES \
         ('11111111-1111-4111-8111-111111111111', 'Local', 'http://127.0.0.1:9', NULL, NULL, '2026-01-01 10:00:00', true), \
         ('22222222-2222-4222-8222-222222222222', 'Local', 'http://127.0.0.1:8', 'bearer', NULL, NULL, false)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let app = TestApp::spawn_on_postgres(database).await;
    let ann = app.login("admin_ann", "Ann-pass-2024!").await;
    let listed = providers(&app, &ann).await;
    let rows: Vec<(&str, &str, bool, bool)> = listed
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["kind"].as_str().unwrap(),
                p["enabled"].as_bool().unwrap(),
                p["has_api_key"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("Local", "ollama", true, false), ("Local-22222222", "ollama", false, false), ("default", "ollama", true, false)]
    );
    let (_, dave) = app.signed_up("dave_new").await;
    let chat = app.new_chat(&dave, None).await;
    assert_eq!(ask(&app, &dave, &chat, "llama3.2:1b", "hello").await.status, 200, "the configured provider answers");
}

/// Three upstreams: two Ollama hosts with overlapping models and an OpenAI-compatible server
/// (with an API key) whose models are listed under a prefix.
async fn an_openai_compatible_provider_serves_its_models_under_its_prefix(backend: Backend) {
    let first = emulator_with(&["llama3.2:1b", "qwen3:0.6b"]).await;
    let second = emulator_with(&["llama3.2:1b"]).await;
    let key = "sk-cloud-key-42";
    let cloud = Emulator::start_with(EmulatorConfig {
        openai: true,
        api_key: Some(key.into()),
        models: Some(vec![spec("llama3.2:1b"), spec("cloudy:7b")]),
        ..Default::default()
    })
    .await;
    let app = app_with(backend, &[&first, &second]).await;
    let (_, admin) = app.signed_up("admin_ann").await;
    let (_, bob) = app.signed_up("bob_user").await;
    let body = json!({"name": "cloud", "kind": "openai", "base_url": cloud.base_url(), "api_key": key, "model_prefix": "cloud/"});
    let added = app.post("/admin/providers").session(&admin).json(&body).send().await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert!(!added.body.to_string().contains(key));
    let ready = wait_for_provider(&app, &admin, "cloud", |p| p["status"]["healthy"] == true).await;
    assert_eq!(ready["status"]["models"], json!(["cloud/cloudy:7b", "cloud/llama3.2:1b"]));

    let tags = app.get("/ollama/tags").session(&bob).send().await;
    let listed: Vec<(&str, &str)> = tags.body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["provider"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [("cloud/llama3.2:1b", "cloud"), ("cloud/cloudy:7b", "cloud"), ("llama3.2:1b", "default"), ("qwen3:0.6b", "default")],
        "providers by priority, then name"
    );
    let shown = app.post("/ollama/show").session(&bob).json(&json!({"model": "cloud/cloudy:7b"})).send().await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["capabilities"], json!(["completion"]));

    // A chat on a prefixed model goes to the OpenAI-compatible server, under its own name.
    let chat = app.new_chat(&bob, None).await;
    let events = app.open_completion(&bob, &chat, "cloud/cloudy:7b", "Hello cloud").await.rest().await;
    let end = events.last().unwrap();
    assert_eq!(end.event, "done", "{events:?}");
    assert!(end.data["message"]["content"].as_str().unwrap().starts_with("Echo:"), "{}", end.data);
    let sent = cloud.chat_completion_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["model"], "cloudy:7b");
    assert_eq!((first.chat_requests().len(), second.chat_requests().len()), (0, 0));
    assert_eq!(usage_provider(&app, &chat).await, "cloud");
    let whole = ask(&app, &bob, &app.new_chat(&bob, None).await, "cloud/cloudy:7b", "Once more").await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    assert_eq!(whole.body["model"], "cloud/cloudy:7b");
    assert!(whole.body["eval_count"].as_u64().unwrap() > 0, "usage is counted: {}", whole.body);

    // A wrong key: the provider is reported unusable, and the key appears nowhere.
    let id = ready["id"].as_str().unwrap().to_owned();
    let wrong = app.put(&format!("/admin/providers/{id}")).session(&admin).json(&json!({"api_key": "sk-wrong-one"})).send().await;
    assert_eq!(wrong.status, 200, "{}", wrong.body);
    let refused = wait_for_provider(&app, &admin, "cloud", |p| !p["status"]["last_error"].is_null()).await;
    assert_eq!(refused["status"]["healthy"], false);
    assert!(!refused.to_string().contains("sk-wrong-one") && !refused.to_string().contains(key), "{refused}");

    // Killed: what only it serves fails clearly; what others serve goes on.
    drop(cloud);
    let gone = ask(&app, &bob, &app.new_chat(&bob, None).await, "cloud/cloudy:7b", "Still there?").await;
    assert!(gone.status == 404 || gone.status == 502, "{}", gone.body);
    assert!(!gone.body.to_string().contains("127.0.0.1"), "{}", gone.body);
    assert_eq!(ask(&app, &bob, &app.new_chat(&bob, None).await, "llama3.2:1b", "Local?").await.status, 200);
}

async fn the_spa_journey_survives_losing_the_first_ollama_mid_answer(backend: Backend) {
    spa_journey_losing(backend, "default").await;
}

async fn the_spa_journey_survives_losing_the_second_ollama_mid_answer(backend: Backend) {
    spa_journey_losing(backend, "default-2").await;
}

async fn the_spa_journey_survives_losing_the_openai_server_mid_answer(backend: Backend) {
    spa_journey_losing(backend, "cloud").await;
}

/// The SPA's turn in a chat: it stores the question, then asks `/ollama/chat` (which stores the
/// answer) with the conversation so far.
async fn spa_turn(app: &TestApp, session: &Session, chat: &str, content: &str) -> crate::support::TestResponse {
    let question = json!({"role": "user", "content": content});
    let stored = app.post(&format!("/chats/{chat}/messages")).session(session).json(&question).send().await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    ask(app, session, chat, "llama3.2:1b", content).await
}

/// The SPA's calls (model list, chat, the admin's model page) with two Ollama hosts and one
/// OpenAI-compatible server that all serve one model; `victim` is asked first for it and is
/// killed while the answer waits for its first token: the answer comes from another one.
async fn spa_journey_losing(backend: Backend, victim: &str) {
    let key = "sk-journey-key";
    let mut upstreams = vec![
        ("default", emulator_with(&["llama3.2:1b", "qwen3:0.6b"]).await),
        ("default-2", emulator_with(&["llama3.2:1b", "mistral:7b"]).await),
    ];
    let cloud = Emulator::start_with(EmulatorConfig {
        openai: true,
        api_key: Some(key.into()),
        models: Some(vec![spec("llama3.2:1b")]),
        ..Default::default()
    })
    .await;
    let app = app_with(backend, &[&upstreams[0].1, &upstreams[1].1]).await;
    upstreams.push(("cloud", cloud));
    let (_, admin) = app.signed_up("admin_ann").await;
    let (_, bob) = app.signed_up("bob_user").await;
    let body = json!({"name": "cloud", "kind": "openai", "base_url": upstreams[2].1.base_url(), "api_key": key});
    assert_eq!(app.post("/admin/providers").session(&admin).json(&body).send().await.status, 201);
    for (name, _) in &upstreams {
        wait_for_provider(&app, &admin, name, |p| p["status"]["healthy"] == true).await;
    }
    let id = provider(&app, &admin, victim).await["id"].as_str().unwrap().to_owned();
    let preferred = app.put(&format!("/admin/providers/{id}")).session(&admin).json(&json!({"priority": 10})).send().await;
    assert_eq!(preferred.status, 200, "{}", preferred.body);

    // The model list: the union, each model once, no address anywhere.
    let tags = app.get("/ollama/tags").session(&bob).send().await;
    assert_eq!(tags.status, 200, "{}", tags.body);
    let mut names: Vec<&str> = tags.body["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["llama3.2:1b", "mistral:7b", "qwen3:0.6b"]);
    assert!(!tags.body.to_string().contains("127.0.0.1"), "{}", tags.body);
    assert_eq!(app.get("/chats/models").session(&bob).send().await.status, 200);

    // A chat whose answer waits on the victim, which dies before the first token.
    let at = upstreams.iter().position(|(name, _)| *name == victim).unwrap();
    upstreams[at].1.set_knobs(Knobs { first_token_delay: Duration::from_secs(30), ..Knobs::default() });
    let chat = app.new_chat(&bob, None).await;
    let kill = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while upstreams[at].1.in_flight_chats() == 0 {
            assert!(Instant::now() < deadline, "the answer never reached {victim}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        upstreams.remove(at).1.shutdown().await;
    };
    let (answered, ()) = tokio::join!(spa_turn(&app, &bob, &chat, "Who answers?"), kill);
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.body["message"]["content"], "Echo: Who answers?");
    let answered_by = usage_provider(&app, &chat).await;
    assert!(upstreams.iter().any(|(name, _)| *name == answered_by), "answered by {answered_by}");

    // The chat goes on, and the SPA reads it back whole.
    assert_eq!(spa_turn(&app, &bob, &chat, "And again?").await.status, 200);
    let opened = app.get(&format!("/chats/chat/{chat}")).session(&bob).send().await;
    let contents: Vec<&str> =
        opened.body["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["Who answers?", "Echo: Who answers?", "And again?", "Echo: And again?"]);

    // The model list still answers, without what only the victim had.
    let dead = wait_for_provider(&app, &admin, victim, |p| p["status"]["healthy"] == false).await;
    assert!(!dead["status"]["last_error"].is_null(), "{dead}");
    let tags = app.get("/ollama/tags").session(&bob).send().await;
    assert_eq!(tags.status, 200, "{}", tags.body);
    let names: Vec<&str> = tags.body["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"llama3.2:1b"), "{names:?}");
    let only_victims = match victim {
        "default" => Some("qwen3:0.6b"),
        "default-2" => Some("mistral:7b"),
        _ => None,
    };
    if let Some(gone) = only_victims {
        assert!(!names.contains(&gone), "{names:?}");
        let refused = ask(&app, &bob, &app.new_chat(&bob, None).await, gone, "Anyone?").await;
        assert!(refused.status == 404 || refused.status == 502, "{}", refused.body);
        assert!(!refused.body.to_string().contains("127.0.0.1"), "{}", refused.body);
    }

    // The admin's model page: version, details of a model, the providers.
    assert_eq!(app.get("/ollama/version").session(&admin).send().await.status, 200);
    let shown = app.post("/ollama/show").session(&admin).json(&json!({"model": "llama3.2:1b"})).send().await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(app.get("/chats/models").session(&admin).send().await.status, 200);
}
