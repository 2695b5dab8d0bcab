use std::time::{Duration, Instant};

use ollama_emulator::Knobs;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{Backend, Session, StreamReader, TestApp};

on_both_databases!(
    completions_stream_deltas_before_the_answer_is_finished,
    a_client_that_leaves_still_gets_its_answer_stored,
    an_answer_is_kept_when_the_database_lost_its_start,
    stop_drops_the_upstream_request_and_keeps_the_partial_answer,
    reattaching_replays_then_follows_without_repeats,
    failures_mid_stream_are_reported_and_stored,
    a_question_that_cannot_be_stored_keeps_no_answer,
    a_slow_model_gets_heartbeats,
    many_concurrent_streams_each_store_one_answer,
    ollama_chat_streams_ndjson_in_ollamas_shape,
    an_impatient_spa_client_does_not_cancel_the_answer,
    deleting_a_chat_stops_its_generation,
    pull_progress_streams_through,
    shutdown_stops_generations_and_stores_partials,
);

fn slow(per_token_ms: u64, tokens: usize) -> Knobs {
    Knobs { per_token_delay: Duration::from_millis(per_token_ms), tokens: Some(tokens), ..Knobs::default() }
}

async fn open_completion(app: &TestApp, s: &Session, chat: &str, content: &str) -> StreamReader {
    app.open_completion(s, chat, "llama3.2:1b", content).await
}

fn deltas(events: &[crate::support::SseEvent]) -> String {
    events.iter().filter(|e| e.event == "delta").filter_map(|e| e.data["content"].as_str()).collect()
}

const ASSISTANT_ROWS: &str = "SELECT COUNT(*) FROM messages WHERE role = 'assistant'";

async fn completions_stream_deltas_before_the_answer_is_finished(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(slow(30, 20));
    let mut stream = open_completion(&app, &s, &chat, "Tell me a story about a lighthouse keeper").await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    assert!(stream.headers.get("content-encoding").is_none());

    let start = stream.next_event().await.unwrap();
    assert_eq!(start.event, "start");
    let user_message_id = start.data["user_message_id"].as_str().unwrap().to_owned();
    assert!(start.data["generation_id"].is_string());
    let first = stream.next_event().await.unwrap();
    assert_eq!(first.event, "delta");
    assert_eq!(app.emulator.completed_chats(), 0, "the first delta arrives while the model is still answering");

    let mut events = vec![first];
    events.extend(stream.rest().await);
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["status"], "completed");
    let text = deltas(&events);
    assert_eq!(done.data["message"]["content"], text.as_str());
    assert_eq!(done.data["message"]["tokens_used"], 20);
    assert_eq!(done.data["chat"]["title"], "Tell me a story about a lighth...");

    let opened = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await;
    let messages = opened.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["id"], user_message_id.as_str());
    assert_eq!(messages[1]["content"], text.as_str());
    // The conversation went upstream from the database.
    assert_eq!(
        app.emulator.chat_requests()[0]["messages"],
        json!([{"role": "user", "content": "Tell me a story about a lighthouse keeper"}])
    );
}

async fn a_client_that_leaves_still_gets_its_answer_stored(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(slow(20, 30));
    let mut stream = open_completion(&app, &s, &chat, "hello").await;
    stream.next_event().await.unwrap();
    stream.next_event().await.unwrap();
    drop(stream);
    assert_eq!(app.wait_for_count(ASSISTANT_ROWS, 1).await, 1);
    let stored = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["messages"][1].clone();
    assert_eq!(stored["tokens_used"], 30);
    assert_eq!(stored["extended_metadata"].get("status"), None, "a complete answer: {stored}");
    assert!(app.emulator.cancellations().is_empty());
    app.wait_until_no_generation(&s, &chat).await;
    assert_eq!(app.count(ASSISTANT_ROWS).await, 1, "stored exactly once");
}

/// A generation's start is committed without waiting for the disk; a database crash in that
/// moment loses the row, and the end must write it again rather than drop the answer.
async fn an_answer_is_kept_when_the_database_lost_its_start(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(slow(30, 10));
    let mut stream = open_completion(&app, &s, &chat, "hello").await;
    assert_eq!(stream.next_event().await.unwrap().event, "start");
    app.execute("DELETE FROM generations").await;
    let events = stream.rest().await;
    let done = events.last().unwrap();
    assert_eq!(done.event, "done", "{events:?}");
    assert_eq!(done.data["status"], "completed");
    assert_eq!(app.count(ASSISTANT_ROWS).await, 1);
    let restored = "SELECT COUNT(*) FROM generations WHERE status = 'completed' AND completion_tokens = 10 \
                    AND message_id IS NOT NULL AND user_message_id IS NOT NULL AND ended_at IS NOT NULL";
    assert_eq!(app.count(restored).await, 1);
    let opened = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await;
    assert_eq!(opened.body["messages"].as_array().unwrap().len(), 2);
}

async fn stop_drops_the_upstream_request_and_keeps_the_partial_answer(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(slow(100, 100));
    let mut stream = open_completion(&app, &s, &chat, "go on and on").await;
    stream.next_event().await.unwrap();
    stream.next_event().await.unwrap();
    stream.next_event().await.unwrap();
    let stopped_at = Instant::now();
    let stop = app.post(&format!("/chats/{chat}/stop")).session(&s).send().await;
    assert_eq!(stop.status, 200, "{}", stop.body);
    assert_eq!(stop.body["status"], "stopped");
    let cancelled = app.emulator.wait_for_cancellations(1, Duration::from_secs(2)).await;
    assert_eq!(cancelled.len(), 1);
    let lag = cancelled[0].at.saturating_duration_since(stopped_at);
    assert!(lag < Duration::from_millis(100), "the emulator saw its connection closed {lag:?} after the stop");

    let rest = stream.rest().await;
    let end = rest.last().unwrap();
    assert_eq!((end.event.as_str(), end.data["status"].as_str()), ("done", Some("stopped")));
    let stored = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["messages"][1].clone();
    assert_eq!(stored["extended_metadata"]["status"], "stopped");
    assert_eq!(stored["content"], stop.body["message"]["content"]);
    let partial = stored["content"].as_str().unwrap();
    assert!(partial.starts_with("Echo:") && partial.split(' ').count() < 100, "{partial}");
    assert_eq!(app.count(ASSISTANT_ROWS).await, 1);
    app.post(&format!("/chats/{chat}/stop"))
        .session(&s)
        .send()
        .await
        .assert_detail(404, "No reply is being generated for this chat");
}

async fn reattaching_replays_then_follows_without_repeats(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.get(&format!("/chats/{chat}/generation"))
        .session(&s)
        .send()
        .await
        .assert_detail(404, "No reply is being generated for this chat");
    app.emulator.set_knobs(slow(40, 25));
    let mut first = open_completion(&app, &s, &chat, "a long answer please").await;
    for _ in 0..5 {
        first.next_event().await.unwrap();
    }
    drop(first); // the browser navigated away
    let mut again = StreamReader::open(app.get(&format!("/chats/{chat}/generation")).session(&s)).await;
    assert_eq!(again.status, 200);
    let events = again.rest().await;
    assert_eq!(events[0].event, "start");
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    let replayed = deltas(&events);
    assert_eq!(replayed, done.data["message"]["content"].as_str().unwrap(), "every delta exactly once, in order");
    // What was produced before re-attaching comes as one delta, then each token as it comes.
    let caught_up = events[1].data["content"].as_str().unwrap();
    assert!(caught_up.split_whitespace().count() >= 4, "{caught_up:?}");
    let tokens_after = 25 - caught_up.split_whitespace().count();
    assert_eq!(events.iter().filter(|e| e.event == "delta").count(), 1 + tokens_after);
}

async fn failures_mid_stream_are_reported_and_stored(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    for (knobs, expected) in [
        (Knobs { error_after_tokens: Some((3, "out of memory".into())), ..slow(5, 10) }, "out of memory"),
        (Knobs { drop_after_tokens: Some(3), ..slow(5, 10) }, "The connection to Ollama was lost"),
    ] {
        let chat = app.new_chat(&s, None).await;
        app.emulator.set_knobs(knobs);
        let mut stream = open_completion(&app, &s, &chat, "fail please").await;
        let events = stream.rest().await;
        let end = events.last().unwrap();
        assert_eq!(end.event, "error", "{events:?}");
        assert!(end.data["detail"].as_str().unwrap().starts_with(expected), "{}", end.data);
        let stored = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["messages"][1].clone();
        assert_eq!(stored["content"], deltas(&events).as_str());
        assert_eq!(stored["extended_metadata"]["status"], "failed");
        assert!(stored["extended_metadata"]["error"].as_str().unwrap().starts_with(expected));
    }
    assert_eq!(app.count(ASSISTANT_ROWS).await, 2);
}

/// The user's message is written while the answer starts; when it cannot be written, the
/// answer is stopped, nothing is kept, and the client is told to send it again.
async fn a_question_that_cannot_be_stored_keeps_no_answer(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.execute(if app.is_postgres() {
        "CREATE FUNCTION refuse_questions() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.role = 'user' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_questions BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_questions();"
    } else {
        "CREATE TRIGGER refuse_questions BEFORE INSERT ON messages WHEN NEW.role = 'user' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
    })
    .await;
    app.emulator.set_knobs(slow(50, 100));
    // The question is written while the upstream request starts. Refused at once, it would
    // stop the answer before its request was even sent (nothing upstream to cancel); on
    // PostgreSQL its write is held until the request is in flight, so that the request's
    // cancellation is seen. (SQLite can only hold every write, the generation's own row too.)
    let mut stream = if app.is_postgres() {
        app.with_writes_held("messages", async {
            let stream = open_completion(&app, &s, &chat, "will not be kept").await;
            let deadline = Instant::now() + Duration::from_secs(10);
            while app.emulator.in_flight_chats() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stream
        })
        .await
    } else {
        open_completion(&app, &s, &chat, "will not be kept").await
    };
    assert_eq!(stream.status, 200);
    let events = stream.rest().await;
    let end = events.last().unwrap();
    assert_eq!(end.event, "error", "{events:?}");
    assert_eq!(end.data["status"], "failed");
    assert_eq!(end.data["message"], Value::Null);
    assert!(end.data["detail"].as_str().unwrap().starts_with("Your message could not be stored"), "{}", end.data);
    if app.is_postgres() {
        let cancelled = app.emulator.wait_for_cancellations(1, Duration::from_secs(2)).await;
        assert_eq!(cancelled.len(), 1, "the upstream request was dropped");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);
    let opened = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await;
    assert_eq!(opened.body["messages"], json!([]));
}

async fn a_slow_model_gets_heartbeats(app: TestApp) {
    let app = TestApp::spawn_with(app.backend, vec![("SSE_HEARTBEAT_SECS", "1".into())]).await;
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(Knobs { first_token_delay: Duration::from_millis(3500), ..Knobs::default() });
    let mut stream = open_completion(&app, &s, &chat, "cold model").await;
    assert_eq!(stream.next_event().await.unwrap().event, "start");
    let first_delta = stream.next_event().await.unwrap();
    assert_eq!(first_delta.event, "delta");
    assert!(stream.comments >= 2, "saw {} heartbeats before the first token", stream.comments);
    assert_eq!(stream.rest().await.last().unwrap().event, "done");
}

async fn many_concurrent_streams_each_store_one_answer(app: TestApp) {
    // One user with 200 chats: the engine, not the per-user limit, is under test here.
    let app = TestApp::spawn_with(app.backend, vec![("GENERATIONS_PER_USER", "200".into())]).await;
    let (_, s) = app.signed_up("bob_user").await;
    let mut chats = Vec::new();
    for _ in 0..200 {
        chats.push(app.new_chat(&s, None).await);
    }
    app.emulator.set_knobs(slow(10, 10));
    let runs = chats.iter().map(|chat| {
        let app = &app;
        let s = &s;
        async move {
            let mut stream = open_completion(app, s, chat, "hi").await;
            assert_eq!(stream.status, 200);
            stream.rest().await.last().map(|e| e.event.clone())
        }
    });
    let ends = futures_util::future::join_all(runs).await;
    assert!(ends.iter().all(|e| e.as_deref() == Some("done")), "{ends:?}");
    assert_eq!(app.count(ASSISTANT_ROWS).await, 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM (SELECT chat_id FROM messages WHERE role = 'assistant' GROUP BY chat_id HAVING COUNT(*) = 1) AS one_each").await,
        200
    );
}

async fn ollama_chat_streams_ndjson_in_ollamas_shape(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(slow(10, 5));
    let mut stream = StreamReader::open(app.post("/ollama/chat").session(&s).json(
        &json!({"model": "llama3.2:1b", "chatId": chat, "stream": true, "messages": [{"role": "user", "content": "stream it"}]}),
    ))
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "application/x-ndjson");
    let mut lines: Vec<Value> = Vec::new();
    while let Some(line) = stream.next_line().await {
        lines.push(line);
    }
    let (last, chunks) = lines.split_last().unwrap();
    assert_eq!(chunks.len(), 5);
    for chunk in chunks {
        assert_eq!(chunk["model"], "llama3.2:1b");
        assert_eq!(chunk["done"], false);
        assert_eq!(chunk["message"]["role"], "assistant");
    }
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"], 5);
    assert_eq!(last["chat"], json!({"id": chat, "title": "stream it"}));
    let stored_id = last["id"].as_str().unwrap();
    let text: String = chunks.iter().map(|c| c["message"]["content"].as_str().unwrap()).collect();
    let stored = app.get(&format!("/chats/{chat}/messages/{stored_id}")).session(&s).send().await;
    assert_eq!(stored.body["content"], text.as_str());

    app.emulator.set_knobs(Knobs::default());
    let refused = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "nonexistent:1b", "chatId": chat, "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await;
    assert_eq!(refused.status, 404, "an error before the first chunk is a real status: {}", refused.body);
}

async fn an_impatient_spa_client_does_not_cancel_the_answer(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(Knobs { first_token_delay: Duration::from_millis(800), ..Knobs::default() });
    let gave_up = app
        .post("/ollama/chat")
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "still there?"}]}))
        .builder()
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    assert_eq!(app.wait_for_count(ASSISTANT_ROWS, 1).await, 1);
    assert!(app.emulator.cancellations().is_empty());
}

async fn deleting_a_chat_stops_its_generation(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(slow(50, 100));
    let mut stream = open_completion(&app, &s, &chat, "long").await;
    stream.next_event().await.unwrap();
    stream.next_event().await.unwrap();
    assert_eq!(app.delete(&format!("/chats/chat/{chat}")).session(&s).send().await.status, 200);
    assert_eq!(app.emulator.wait_for_cancellations(1, Duration::from_secs(2)).await.len(), 1);
    let rest = stream.rest().await;
    // The end is published after the answer was (not) stored: nothing can be written later.
    assert_eq!(rest.last().unwrap().data["status"], "stopped");
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0, "no orphaned messages");
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 0);
}

async fn pull_progress_streams_through(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let mut stream =
        StreamReader::open(app.post("/ollama/pull").session(&admin).json(&json!({"model": "tinyllama:latest", "stream": true})))
            .await;
    assert_eq!(stream.status, 200);
    let mut statuses = Vec::new();
    while let Some(line) = stream.next_line().await {
        statuses.push(line["status"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(statuses.first().map(String::as_str), Some("pulling manifest"));
    assert_eq!(statuses.last().map(String::as_str), Some("success"));
    assert!(statuses.len() > 3);

    let mut failing = StreamReader::open(
        app.post("/ollama/pull").session(&admin).json(&json!({"model": "nonexistent:latest", "stream": true})),
    )
    .await;
    let mut last = Value::Null;
    while let Some(line) = failing.next_line().await {
        last = line;
    }
    assert_eq!(last, json!({"error": "pull model manifest: file does not exist", "provider": "default"}));
}

async fn shutdown_stops_generations_and_stores_partials(app: TestApp) {
    let mut app = TestApp::spawn_with(app.backend, vec![("SHUTDOWN_GRACE_SECS", "1".into())]).await;
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.emulator.set_knobs(slow(50, 200));
    let mut stream = open_completion(&app, &s, &chat, "never ending").await;
    stream.next_event().await.unwrap();
    stream.next_event().await.unwrap();
    let started = Instant::now();
    app.shut_down().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    let end = stream.rest().await.last().cloned().unwrap();
    assert_eq!(end.data["status"], "stopped");
    assert_eq!(app.count(ASSISTANT_ROWS).await, 1);
    let stored: String = crate::on_pool!(app.store, pool => {
        sqlx::query_scalar::<_, String>("SELECT content FROM messages WHERE role = 'assistant'").fetch_one(pool).await
    })
    .unwrap_or_default();
    assert!(stored.starts_with("Echo:"));
    let _ = Backend::Sqlite;
}
