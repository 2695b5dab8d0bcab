//! Several replicas on one PostgreSQL database: a generation started on one can be followed,
//! stopped and deleted on another, the database keeps one per chat and the user's quota, a
//! dead replica's generation is recovered as interrupted, and what one replica changes in
//! cached rows reaches the others at once.

use std::time::{Duration, Instant};

use ollama_emulator::Knobs;
use serde_json::{json, Value};

use crate::support::process::{ProcessOptions, ServerProcess};
use crate::support::{Backend, Session, SseEvent, StreamReader, TestApp};

/// A short timeout, so that recovery is seen within a test.
const HEARTBEAT_TIMEOUT: &str = "2";

fn slow_answer(tokens: usize) -> Knobs {
    Knobs { per_token_delay: Duration::from_millis(40), tokens: Some(tokens), ..Knobs::default() }
}

async fn two_replicas(extra: Vec<(&str, String)>) -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(Backend::Postgres, extra.clone()).await;
    let b = a.replica(extra).await;
    (a, b)
}

async fn open_completion(app: &TestApp, s: &Session, chat: &str, content: &str) -> StreamReader {
    app.open_completion(s, chat, "llama3.2:1b", content).await
}

fn content_of(events: &[SseEvent]) -> String {
    events.iter().filter(|e| e.event == "delta").filter_map(|e| e.data["content"].as_str()).collect()
}

/// Reads events until `n` deltas have come.
async fn read_deltas(stream: &mut StreamReader, n: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while events.iter().filter(|e: &&SseEvent| e.event == "delta").count() < n {
        events.push(stream.next_event().await.expect("the stream goes on"));
    }
    events
}

async fn stored_messages(app: &TestApp, s: &Session, chat: &str) -> Vec<Value> {
    let chat = app.get(&format!("/chats/chat/{chat}")).session(s).send().await;
    chat.body["messages"].as_array().cloned().unwrap_or_default()
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_started_on_one_replica_streams_whole_on_another() {
    let (a, b) = two_replicas(Vec::new()).await;
    let (_, s) = a.signed_up("bob_user").await;
    let chat = a.new_chat(&s, None).await;
    a.emulator.set_knobs(slow_answer(40));
    let mut on_a = open_completion(&a, &s, &chat, "tell me a long story").await;
    let mut seen_on_a = read_deltas(&mut on_a, 5).await;

    let mut on_b = StreamReader::open(b.get(&format!("/chats/{chat}/generation")).session(&s)).await;
    assert_eq!(on_b.status, 200);
    let followed = on_b.rest().await;
    seen_on_a.extend(on_a.rest().await);

    let start = &followed[0];
    assert_eq!(start.event, "start");
    assert_eq!(start.data["generation_id"], seen_on_a[0].data["generation_id"]);
    let end = followed.last().unwrap();
    assert_eq!(end.event, "done", "{followed:?}");
    assert_eq!(end.data["status"], "completed");
    let stored = end.data["message"]["content"].as_str().unwrap().to_owned();
    assert_eq!(content_of(&followed), stored, "every token once, in order, on the other replica");
    assert_eq!(content_of(&seen_on_a), stored);
    assert_eq!(stored.split_whitespace().count(), 40);
    assert_eq!(end.data["message"], seen_on_a.last().unwrap().data["message"]);
}

/// Two replicas, and a long answer being generated on the first (its first pieces read).
struct Generating {
    a: TestApp,
    b: TestApp,
    s: Session,
    chat: String,
    on_a: StreamReader,
}

async fn generating_on_the_first_of_two() -> Generating {
    let (a, b) = two_replicas(Vec::new()).await;
    let (_, s) = a.signed_up("bob_user").await;
    let chat = a.new_chat(&s, None).await;
    a.emulator.set_knobs(slow_answer(500));
    let mut on_a = open_completion(&a, &s, &chat, "go on and on").await;
    read_deltas(&mut on_a, 3).await;
    Generating { a, b, s, chat, on_a }
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_on_another_replica_stops_the_owner_and_keeps_the_partial_answer() {
    let Generating { a, b, s, chat, mut on_a } = generating_on_the_first_of_two().await;

    let stopped = b.post(&format!("/chats/{chat}/stop")).session(&s).send().await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.body["status"], "stopped");
    let partial = stopped.body["message"]["content"].as_str().unwrap().to_owned();
    assert!(!partial.is_empty());
    assert_eq!(a.emulator.wait_for_cancellations(1, Duration::from_secs(2)).await.len(), 1, "the owner's upstream request ended");
    let end = on_a.rest().await.pop().unwrap();
    assert_eq!(end.data["status"], "stopped");
    let messages = stored_messages(&b, &s, &chat).await;
    assert_eq!(messages.last().unwrap()["content"], partial.as_str());
    assert_eq!(messages.last().unwrap()["extended_metadata"]["status"], "stopped");
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_chat_on_another_replica_stops_its_generation() {
    let Generating { a, b, s, chat, mut on_a } = generating_on_the_first_of_two().await;

    let deleted = b.delete(&format!("/chats/chat/{chat}")).session(&s).send().await;
    assert_eq!(deleted.status, 200);
    assert_eq!(a.emulator.wait_for_cancellations(1, Duration::from_secs(2)).await.len(), 1);
    assert_eq!(on_a.rest().await.pop().unwrap().data["status"], "stopped");
    assert_eq!(a.count(&format!("SELECT COUNT(*) FROM messages WHERE chat_id = '{chat}'")).await, 0);
    assert_eq!(a.count("SELECT COUNT(*) FROM generations WHERE status = 'running'").await, 0);
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_keeps_one_generation_per_chat_and_the_quota_across_replicas() {
    let (a, b) = two_replicas(vec![("GENERATIONS_PER_USER", "1".into())]).await;
    a.signed_up("the_admin").await; // the first account is an admin, whose quota is unlimited
    let (_, s) = a.signed_up("bob_user").await;
    let chat = a.new_chat(&s, None).await;
    a.emulator.set_knobs(slow_answer(500));
    let mut on_a = open_completion(&a, &s, &chat, "go on and on").await;
    read_deltas(&mut on_a, 1).await;

    let second = b
        .post(&format!("/chats/{chat}/completions"))
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "content": "me too"}))
        .send()
        .await;
    second.assert_detail(409, "A reply is already being generated for this chat");
    let other_chat = b.new_chat(&s, None).await;
    let third = b
        .post(&format!("/chats/{other_chat}/completions"))
        .session(&s)
        .json(&json!({"model": "llama3.2:1b", "content": "and me"}))
        .send()
        .await;
    assert_eq!(third.status, 429, "the second answer at once is refused on the other replica");

    b.post(&format!("/chats/{chat}/stop")).session(&s).send().await;
    let fourth = open_completion(&b, &s, &other_chat, "now it is free").await;
    assert_eq!(fourth.status, 200);
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_is_refused_on_the_other_within_a_second() {
    // Without notices, the other replica would trust its cached row for a minute.
    let (a, b) = two_replicas(vec![("USER_CACHE_SECS", "60".into())]).await;
    let (_, s) = a.signed_up("bob_user").await;
    assert_eq!(b.get("/users/me").session(&s).send().await.status, 200);
    assert_eq!(a.post("/auth/logout").session(&s).send().await.status, 200);
    assert!(refused_within_a_second(&b, &s).await, "the logout reached the other replica");
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_listener_connection_is_cut_a_replica_reconnects_and_trusts_no_cached_row() {
    let (a, b) = two_replicas(vec![("USER_CACHE_SECS", "60".into())]).await;
    let (_, s) = a.signed_up("bob_user").await;
    assert_eq!(b.get("/users/me").session(&s).send().await.status, 200);
    let listeners = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{}' AND datname = current_database()",
        rovertchat::cluster::LISTENER_APPLICATION_NAME
    );
    a.wait_for_count(&listeners, 2).await;
    a.execute(&listeners.replace("COUNT(*)", "pg_terminate_backend(pid)")).await;
    // A change made while the connection is down is missed as a notice...
    assert_eq!(a.post("/auth/logout").session(&s).send().await.status, 200);
    a.wait_for_count(&listeners, 2).await;
    // ...but once it is back the cache is dropped, and later notices arrive again.
    assert!(refused_within_a_second(&b, &s).await, "the missed logout applies after the reconnect");
    let (_, other) = a.signed_up("alice_user").await;
    assert_eq!(b.get("/users/me").session(&other).send().await.status, 200);
    assert_eq!(a.post("/auth/logout").session(&other).send().await.status, 200);
    assert!(refused_within_a_second(&b, &other).await, "notices arrive after the reconnect");
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_limit_of_an_account_is_one_budget_across_replicas() {
    let limited = vec![("RATE_LIMITS", "on".into()), ("RATE_LIMIT_LOGIN", "100/minute".into())];
    let (a, b) = two_replicas(limited).await;
    a.register("bob_user").await;
    // The default: ten attempts per account per minute, whichever replica they reach.
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let guess = replica.post("/auth/login").form(&[("username", "bob_user"), ("password", "guess")]).send().await;
        assert_eq!(guess.status, 401, "attempt {i}");
    }
    for replica in [&a, &b] {
        let refused =
            replica.post("/auth/login").form(&[("username", "bob_user"), ("password", crate::support::PASSWORD)]).send().await;
        assert_eq!(refused.status, 429);
        assert!(refused.header("retry-after").is_some());
    }
}

async fn refused_within_a_second(app: &TestApp, s: &Session) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if app.get("/users/me").session(s).send().await.status == 401 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits for the chat's last message to be an interrupted answer, and returns it.
async fn interrupted_answer(app: &TestApp, s: &Session, chat: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let messages = stored_messages(app, s, chat).await;
        if let Some(last) = messages.last().filter(|m| m["role"] == "assistant") {
            return last.clone();
        }
        assert!(Instant::now() < deadline, "no answer was recovered: {messages:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a generation on a server process, lets it write a checkpoint, and kills the process.
async fn generation_killed_mid_answer(process: &mut ServerProcess, app: &TestApp, s: &Session, chat: &str) -> String {
    let request = app
        .client
        .post(process.url(&format!("/chats/{chat}/completions")))
        .bearer_auth(&s.access_token)
        .json(&json!({"model": "llama3.2:1b", "content": "a long story please"}));
    let mut stream = StreamReader::open_request(request).await;
    assert_eq!(stream.status, 200);
    let seen = read_deltas(&mut stream, 10).await;
    // The checkpoint is written every second while the answer grows.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    process.kill();
    content_of(&seen)
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_replica_is_killed_mid_answer_another_stores_what_it_had_as_interrupted() {
    let b = TestApp::spawn_with(Backend::Postgres, vec![("GENERATION_HEARTBEAT_TIMEOUT_SECS", HEARTBEAT_TIMEOUT.into())]).await;
    let database = b.database_url();
    let settings = [("DATABASE_URL", database.as_str()), ("GENERATION_HEARTBEAT_TIMEOUT_SECS", HEARTBEAT_TIMEOUT)];
    let mut a = ServerProcess::start_with(ProcessOptions {
        settings: &settings,
        ollama_url: Some(b.emulator.base_url()),
        ..ProcessOptions::default()
    });
    let (_, s) = b.signed_up("bob_user").await;
    let chat = b.new_chat(&s, None).await;
    b.emulator.set_knobs(slow_answer(500));
    // A client follows the answer on B while A generates it.
    let follower = {
        let b_address = b.address.clone();
        let request = b.client.get(format!("{b_address}/api/v1/chats/{chat}/generation")).bearer_auth(&s.access_token);
        tokio::spawn(async move {
            loop {
                let mut stream = StreamReader::open_request(request.try_clone().unwrap()).await;
                if stream.status == 200 {
                    return stream.rest().await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let seen = generation_killed_mid_answer(&mut a, &b, &s, &chat).await;

    let answer = interrupted_answer(&b, &s, &chat).await;
    assert_eq!(answer["extended_metadata"]["status"], "interrupted");
    let kept = answer["content"].as_str().unwrap();
    assert!(kept.starts_with(&seen), "the checkpoint holds at least what was streamed: {kept:?} / {seen:?}");
    let followed = tokio::time::timeout(Duration::from_secs(15), follower).await.expect("the follower's stream ends").unwrap();
    let end = followed.last().unwrap();
    assert_eq!((end.event.as_str(), &end.data["status"]), ("error", &json!("interrupted")));
    assert_eq!(end.data["message"]["content"], kept);
    assert!(content_of(&followed).starts_with(&seen));
    assert_eq!(b.count("SELECT COUNT(*) FROM generations WHERE status = 'interrupted'").await, 1);
    assert_eq!(b.count("SELECT COUNT(*) FROM generations WHERE status = 'running'").await, 0);
    b.emulator.set_knobs(Knobs::default());
    let next = open_completion(&b, &s, &chat, "and now?").await.rest().await;
    assert_eq!(next.last().unwrap().data["status"], "completed", "the chat is not blocked");
}

#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_restarted_after_a_kill_recovers_its_interrupted_answer() {
    let mut app = TestApp::spawn(Backend::Postgres).await;
    let database = app.database_url();
    let settings = [("DATABASE_URL", database.as_str()), ("GENERATION_HEARTBEAT_TIMEOUT_SECS", HEARTBEAT_TIMEOUT)];
    let ollama = app.emulator.base_url();
    let options = || ProcessOptions { settings: &settings, ollama_url: Some(ollama.clone()), ..ProcessOptions::default() };
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    // From here on one server at a time uses the database (the test's own is only a client).
    app.shut_down().await;
    let mut first = ServerProcess::start_with(options());
    app.emulator.set_knobs(slow_answer(500));
    let seen = generation_killed_mid_answer(&mut first, &app, &s, &chat).await;

    let restarted = ServerProcess::start_with(options());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body: Value = app
            .client
            .get(restarted.url(&format!("/chats/chat/{chat}")))
            .bearer_auth(&s.access_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let last = body["messages"].as_array().and_then(|m| m.last().cloned()).unwrap_or_default();
        if last["role"] == "assistant" {
            assert_eq!(last["extended_metadata"]["status"], "interrupted");
            assert!(last["content"].as_str().unwrap().starts_with(&seen));
            break;
        }
        assert!(Instant::now() < deadline, "the restarted server did not recover the answer: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
