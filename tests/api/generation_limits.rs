//! The bounds of generations: how many run per user, how long an answer may get, which model
//! options a request may set, and what a refused request leaves behind.

use std::time::Duration;

use ollama_emulator::Knobs;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{Backend, Session, SseEvent, StreamReader, TestApp};

on_both_databases!(
    one_user_runs_at_most_four_generations_at_once,
    answers_end_at_max_answer_tokens,
    model_options_are_limited_to_an_allow_list,
    keep_alive_is_for_admins,
    a_refused_request_leaves_no_question_behind,
);

async fn open_completion(app: &TestApp, s: &Session, chat: &str, body: Value) -> StreamReader {
    StreamReader::open(app.post(&format!("/chats/{chat}/completions")).session(s).json(&body)).await
}

fn ask(content: &str) -> Value {
    json!({"model": "llama3.2:1b", "content": content})
}

fn deltas(events: &[SseEvent]) -> String {
    events.iter().filter(|e| e.event == "delta").filter_map(|e| e.data["content"].as_str()).collect()
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

async fn stored_messages(app: &TestApp, s: &Session, chat: &str) -> Vec<Value> {
    app.get(&format!("/chats/chat/{chat}")).session(s).send().await.body["messages"].as_array().cloned().unwrap_or_default()
}

const BUSY: &str = "Rate limit exceeded: 4 replies generating at once per user";

async fn one_user_runs_at_most_four_generations_at_once(app: TestApp) {
    // The first account is the admin, whose answers are not capped by default.
    app.signed_up("ann_admin").await;
    let (_, s) = app.signed_up("bob_user").await;
    let mut chats = Vec::new();
    for _ in 0..200 {
        chats.push(app.new_chat(&s, None).await);
    }
    app.emulator.set_knobs(Knobs { hang: true, ..Knobs::default() });
    let attempts = chats.iter().map(|chat| {
        let (app, s) = (&app, &s);
        async move { (chat.clone(), open_completion(app, s, chat, ask("hi")).await) }
    });
    let opened = futures_util::future::join_all(attempts).await;
    let (accepted, refused): (Vec<_>, Vec<_>) = opened.into_iter().partition(|(_, stream)| stream.status == 200);
    assert_eq!(accepted.len(), 4, "accepted: {}", accepted.len());
    assert_eq!(refused.len(), 196);
    for (_, stream) in &refused {
        assert_eq!(stream.status, 429);
        assert_eq!(stream.headers["retry-after"], "5");
    }
    let idle_chat = &refused[0].0;
    app.post(&format!("/chats/{idle_chat}/completions")).session(&s).json(&ask("hi")).send().await.assert_detail(429, BUSY);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.emulator.in_flight_chats() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.emulator.chat_requests().len(), 4, "refused requests never reach Ollama");
    assert_eq!(app.wait_for_count("SELECT COUNT(*) FROM messages", 4).await, 4, "refused requests store nothing");

    // The limit is per user, and a finished generation frees its place.
    let (_, carol) = app.signed_up("carol_user").await;
    let carols = app.new_chat(&carol, None).await;
    assert_eq!(open_completion(&app, &carol, &carols, ask("hi")).await.status, 200);
    let busy_chat = &accepted[0].0;
    assert_eq!(app.post(&format!("/chats/{busy_chat}/stop")).session(&s).send().await.status, 200);
    assert_eq!(open_completion(&app, &s, idle_chat, ask("hi")).await.status, 200);
    let ollama_chat = json!({"model": "llama3.2:1b", "chatId": refused[1].0, "messages": [{"role": "user", "content": "hi"}]});
    app.post("/ollama/chat").session(&s).json(&ollama_chat).send().await.assert_detail(429, BUSY);
}

async fn answers_end_at_max_answer_tokens(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("MAX_ANSWER_TOKENS", "10".into())]).await;
    let (_, s) = app.signed_up("bob_user").await;

    // An upstream that honours `num_predict` ends the answer itself.
    app.emulator.set_knobs(Knobs { tokens: Some(50), ..Knobs::default() });
    let chat = app.new_chat(&s, None).await;
    let events = open_completion(&app, &s, &chat, ask("go on")).await.rest().await;
    let done = events.last().unwrap();
    assert_eq!((done.event.as_str(), done.data["status"].as_str()), ("done", Some("length")), "{done:?}");
    assert_eq!(words(&deltas(&events)), 10);
    assert_eq!(done.data["message"]["extended_metadata"]["status"], "length");
    assert_eq!(done.data["message"]["tokens_used"], 10);
    assert_eq!(app.emulator.chat_requests()[0]["options"], json!({"num_predict": 10}));

    // One that ignores it is cut by the server.
    let ignoring =
        Knobs { tokens: Some(50), ignore_num_predict: true, per_token_delay: Duration::from_millis(5), ..Knobs::default() };
    app.emulator.set_knobs(ignoring);
    let chat = app.new_chat(&s, None).await;
    let events = open_completion(&app, &s, &chat, ask("go on")).await.rest().await;
    let done = events.last().unwrap();
    assert_eq!((done.event.as_str(), done.data["status"].as_str()), ("done", Some("length")), "{done:?}");
    assert_eq!(words(&deltas(&events)), 10);
    let stored = &stored_messages(&app, &s, &chat).await[1];
    assert_eq!(words(stored["content"].as_str().unwrap()), 10);
    assert_eq!(stored["extended_metadata"]["status"], "length");
    assert_eq!(app.emulator.wait_for_cancellations(1, Duration::from_secs(2)).await.len(), 1, "the upstream request was dropped");

    // The SPA's call tells it the same way Ollama does.
    let chat = app.new_chat(&s, None).await;
    let ollama_chat = |stream: bool| json!({"model": "llama3.2:1b", "chatId": chat, "stream": stream, "messages": [{"role": "user", "content": "go on"}]});
    let answer = app.post("/ollama/chat").session(&s).json(&ollama_chat(false)).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["done_reason"], "length");
    assert_eq!(words(answer.body["message"]["content"].as_str().unwrap()), 10);
    let mut stream = StreamReader::open(app.post("/ollama/chat").session(&s).json(&ollama_chat(true))).await;
    let mut lines = Vec::new();
    while let Some(line) = stream.next_line().await {
        lines.push(line);
    }
    let (last, chunks) = lines.split_last().unwrap();
    assert_eq!((last["done"].clone(), last["done_reason"].clone()), (json!(true), json!("length")));
    let streamed: String = chunks.iter().map(|c| c["message"]["content"].as_str().unwrap()).collect();
    assert_eq!(words(&streamed), 10);

    // A smaller limit of the request is kept; a larger one is refused.
    app.emulator.set_knobs(Knobs { tokens: Some(50), ..Knobs::default() });
    let chat = app.new_chat(&s, None).await;
    let short = json!({"model": "llama3.2:1b", "content": "go on", "options": {"num_predict": 3}});
    let events = open_completion(&app, &s, &chat, short).await.rest().await;
    assert_eq!(words(&deltas(&events)), 3);
    assert_eq!(app.emulator.chat_requests().last().unwrap()["options"], json!({"num_predict": 3}));
    let long = json!({"model": "llama3.2:1b", "content": "go on", "options": {"num_predict": 11}});
    let refused = app.post(&format!("/chats/{chat}/completions")).session(&s).json(&long).send().await;
    refused.assert_validation(&[("less_than_equal", json!(["body", "options", "num_predict"]))]);
    assert_eq!(refused.body["detail"][0]["msg"], "Input should be less than or equal to 10");
}

async fn model_options_are_limited_to_an_allow_list(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    let completions = format!("/chats/{chat}/completions");
    let cases = [
        (json!({"num_gpu": 999}), "extra_forbidden", "num_gpu"),
        (json!({"use_mmap": false}), "extra_forbidden", "use_mmap"),
        (json!({"num_ctx": 1_048_576}), "less_than_equal", "num_ctx"),
        (json!({"num_ctx": 0}), "greater_than_equal", "num_ctx"),
        (json!({"num_predict": -1}), "greater_than_equal", "num_predict"),
        (json!({"num_predict": 1_000_000}), "less_than_equal", "num_predict"),
        (json!({"temperature": "hot"}), "float_parsing", "temperature"),
        (json!({"temperature": 9}), "less_than_equal", "temperature"),
        (json!({"stop": "x"}), "list_type", "stop"),
    ];
    for (options, kind, key) in cases {
        let body = json!({"model": "llama3.2:1b", "content": "hi", "options": options});
        let refused = app.post(&completions).session(&s).json(&body).send().await;
        refused.assert_validation(&[(kind, json!(["body", "options", key]))]);
        let body =
            json!({"model": "llama3.2:1b", "chatId": chat, "options": options, "messages": [{"role": "user", "content": "hi"}]});
        let refused = app.post("/ollama/chat").session(&s).json(&body).send().await;
        refused.assert_validation(&[(kind, json!(["body", "options", key]))]);
    }
    let body = json!({"model": "llama3.2:1b", "content": "hi", "options": [1]});
    app.post(&completions).session(&s).json(&body).send().await.assert_validation(&[("dict_type", json!(["body", "options"]))]);
    assert!(app.emulator.chat_requests().is_empty(), "nothing refused reached Ollama");
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);

    // Allowed options go upstream as sent, with the answer's length limit added.
    let allowed = json!({"temperature": 0.2, "top_p": 0.9, "seed": 42, "num_ctx": 8192, "stop": ["\n\n"]});
    let body = json!({"model": "llama3.2:1b", "content": "hi", "options": allowed});
    let events = open_completion(&app, &s, &chat, body).await.rest().await;
    assert_eq!(events.last().unwrap().event, "done");
    let mut expected = allowed.clone();
    expected["num_predict"] = json!(16384);
    assert_eq!(app.emulator.chat_requests()[0]["options"], expected);

    // What the SPA sends.
    let spa = json!({"model": "llama3.2:1b", "chatId": chat, "stream": false, "think": null, "options": null,
                     "messages": [{"role": "user", "content": "hi", "thinking": null, "images": null}]});
    let answer = app.post("/ollama/chat").session(&s).json(&spa).send().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.emulator.chat_requests()[1]["options"], json!({"num_predict": 16384}));
}

async fn keep_alive_is_for_admins(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    for keep_alive in [json!(-1), json!(0), json!("24h")] {
        let body = json!({"model": "llama3.2:1b", "content": "hi", "keep_alive": keep_alive});
        app.post(&format!("/chats/{chat}/completions"))
            .session(&s)
            .json(&body)
            .send()
            .await
            .assert_detail(403, "Only admins can set keep_alive: it keeps or unloads the model for everyone");
        let body = json!({"model": "llama3.2:1b", "chatId": chat, "keep_alive": keep_alive, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(app.post("/ollama/chat").session(&s).json(&body).send().await.status, 403);
    }
    assert!(app.emulator.chat_requests().is_empty());

    let admins = app.new_chat(&admin, None).await;
    let body = json!({"model": "llama3.2:1b", "content": "hi", "keep_alive": "1h"});
    let events = open_completion(&app, &admin, &admins, body).await.rest().await;
    assert_eq!(events.last().unwrap().event, "done");
    assert_eq!(app.emulator.chat_requests()[0]["keep_alive"], "1h");
    let body = json!({"model": "llama3.2:1b", "content": "hi", "keep_alive": {"minutes": 5}});
    let refused = app.post(&format!("/chats/{admins}/completions")).session(&admin).json(&body).send().await;
    refused.assert_validation(&[("string_type", json!(["body", "keep_alive"]))]);
}

/// A question whose request Ollama refused is not kept: sent again, it is in the chat once,
/// and in the history of later turns once.
async fn a_refused_request_leaves_no_question_behind(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    let question = "Best time to visit?";

    let unknown = json!({"model": "nonexistent:1b", "content": question});
    let events = open_completion(&app, &s, &chat, unknown).await.rest().await;
    let end = events.last().unwrap();
    assert_eq!((end.event.as_str(), end.data["status"].as_str()), ("error", Some("failed")), "{events:?}");
    assert!(end.data["detail"].as_str().unwrap().contains("not found"), "{}", end.data);
    assert_eq!(stored_messages(&app, &s, &chat).await, Vec::<Value>::new());

    app.emulator.set_knobs(Knobs {
        fail_before_first_byte: Some((500, "llama runner process has terminated".into())),
        ..Knobs::default()
    });
    let events = open_completion(&app, &s, &chat, ask(question)).await.rest().await;
    assert_eq!(events.last().unwrap().event, "error", "{events:?}");
    assert_eq!(stored_messages(&app, &s, &chat).await, Vec::<Value>::new());

    app.emulator.set_knobs(Knobs::default());
    let events = open_completion(&app, &s, &chat, ask(question)).await.rest().await;
    assert_eq!(events.last().unwrap().data["status"], "completed", "{events:?}");
    let messages = stored_messages(&app, &s, &chat).await;
    let kept: Vec<(&str, &str)> =
        messages.iter().map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap())).collect();
    assert_eq!(kept, [("user", question), ("assistant", "Echo: Best time to visit?")]);
    let sent = app.emulator.chat_requests();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2]["messages"], json!([{"role": "user", "content": question}]), "the history has the question once");

    // Ollama unreachable: the same.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let offline = TestApp::spawn_with(app.backend, vec![("OLLAMA_BASE_URL", format!("http://{closed}"))]).await;
    let (_, s) = offline.signed_up("bob_user").await;
    let chat = offline.new_chat(&s, None).await;
    let events = open_completion(&offline, &s, &chat, ask(question)).await.rest().await;
    let end = events.last().unwrap();
    assert_eq!(end.event, "error", "{events:?}");
    assert!(end.data["detail"].as_str().unwrap().starts_with("Cannot connect to Ollama"), "{}", end.data);
    assert_eq!(offline.count("SELECT COUNT(*) FROM messages").await, 0);
}
