//! The OpenAI-compatible API (`/v1`), as any OpenAI client sees it. The official Python SDK's
//! run over the same routes is `.ci/openai-conformance.py`.

use std::time::Duration;

use ollama_emulator::Knobs;
use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{Backend, SseEvent, StreamReader, TestApp};

on_both_databases!(
    models_are_listed_in_openais_shapes,
    a_chat_completion_in_one_piece_has_usage_and_is_not_stored_as_a_chat,
    a_streamed_completion_sends_chunks_usage_and_done,
    thinking_comes_back_as_reasoning_content,
    tool_calls_round_trip_in_openais_shape,
    image_parts_become_ollama_images,
    options_are_translated_to_ollamas,
    embeddings_as_floats_and_base64,
    errors_are_in_openais_shape,
    a_key_narrowed_to_models_refuses_the_others,
    a_client_that_leaves_cancels_the_upstream_request,
    the_per_key_rate_limit_answers_429_with_retry_after,
);

async fn key_for(app: &TestApp, username: &str, body: Value) -> String {
    let (_, s) = app.signed_up(username).await;
    app.api_key(&s, body).await["key"].as_str().unwrap().to_owned()
}

async fn models_are_listed_in_openais_shapes(app: TestApp) {
    let key = key_for(&app, "ann_admin", json!({"name": "k"})).await;
    let listed = app.openai(Method::GET, "/models", &key).send().await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["object"], "list");
    let ids: Vec<&str> = listed.body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["llama3.2:1b", "qwen3:0.6b"]);
    let first = &listed.body["data"][0];
    assert_eq!(first["object"], "model");
    assert_eq!(first["owned_by"], "library");
    assert!(first["created"].as_i64().unwrap() > 1_600_000_000);

    let one = app.openai(Method::GET, "/models/llama3.2:1b", &key).send().await;
    assert_eq!(one.status, 200);
    assert_eq!(&one.body, first);
    let missing = app.openai(Method::GET, "/models/library/nope:latest", &key).send().await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["code"], "model_not_found");
    assert_eq!(
        missing.body["error"]["message"],
        "The model `library/nope:latest` does not exist or you do not have access to it."
    );
}

async fn a_chat_completion_in_one_piece_has_usage_and_is_not_stored_as_a_chat(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let body = json!({"model": "llama3.2:1b", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"}
    ]});
    let response = app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await;
    assert_eq!(response.status, 200, "{}", response.body);
    let completion = &response.body;
    assert_eq!(completion["object"], "chat.completion");
    assert!(completion["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(completion["model"], "llama3.2:1b");
    let choice = &completion["choices"][0];
    assert_eq!(choice["message"], json!({"role": "assistant", "content": "Echo: Why is the sky blue?"}));
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &completion["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(usage["completion_tokens"].as_u64().unwrap(), 6);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), usage["prompt_tokens"].as_u64().unwrap() + 6);

    let upstream = app.emulator.chat_requests();
    assert_eq!(upstream.len(), 1);
    assert_eq!(
        upstream[0]["messages"],
        json!([
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}
        ])
    );
    assert_eq!(upstream[0]["stream"], true);
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);
    let recorded = app
        .wait_for_count("SELECT COUNT(*) FROM generations WHERE api_key_id IS NOT NULL AND chat_id IS NULL AND status = 'completed' AND completion_tokens = 6", 1)
        .await;
    assert_eq!(recorded, 1, "the usage is recorded with the key");
}

fn chunk_deltas(events: &[SseEvent], field: &str) -> String {
    events.iter().filter_map(|e| e.data["choices"][0]["delta"][field].as_str()).collect()
}

async fn a_streamed_completion_sends_chunks_usage_and_done(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let body = json!({"model": "llama3.2:1b", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Tell me about lighthouses"}]});
    let mut stream = StreamReader::open(app.openai(Method::POST, "/chat/completions", &key).json(&body)).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    let events = stream.rest().await;
    let last = events.last().unwrap();
    assert_eq!(last.data, json!("[DONE]"));
    let chunks = &events[..events.len() - 1];
    assert!(chunks.iter().all(|e| e.data["object"] == "chat.completion.chunk"));
    let id = &chunks[0].data["id"];
    assert!(chunks.iter().all(|e| &e.data["id"] == id && e.data["created"] == chunks[0].data["created"]));
    assert_eq!(chunks[0].data["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[1..].iter().all(|e| e.data["choices"][0]["delta"].get("role").is_none()), "only the first chunk has the role");
    assert_eq!(chunk_deltas(chunks, "content"), "Echo: Tell me about lighthouses");
    let finish = &chunks[chunks.len() - 2].data;
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = &chunks[chunks.len() - 1].data;
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);

    // Without include_usage there is no usage chunk.
    let body = json!({"model": "llama3.2:1b", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let events = StreamReader::open(app.openai(Method::POST, "/chat/completions", &key).json(&body)).await.rest().await;
    assert!(events.iter().all(|e| e.data.get("usage").is_none()));
    assert_eq!(events.last().unwrap().data, json!("[DONE]"));
}

async fn thinking_comes_back_as_reasoning_content(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let body = json!({"model": "qwen3:0.6b", "messages": [{"role": "user", "content": "Hello"}]});
    let whole = app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let message = &whole.body["choices"][0]["message"];
    assert_eq!(message["content"], "Echo: Hello");
    assert_eq!(message["reasoning_content"], "The user said 5 characters.");

    let streamed = json!({"model": "qwen3:0.6b", "stream": true, "messages": [{"role": "user", "content": "Hello"}]});
    let events = StreamReader::open(app.openai(Method::POST, "/chat/completions", &key).json(&streamed)).await.rest().await;
    assert_eq!(chunk_deltas(&events, "reasoning_content"), "The user said 5 characters.");
    assert_eq!(chunk_deltas(&events, "content"), "Echo: Hello");

    let effort = json!({"model": "qwen3:0.6b", "reasoning_effort": "none", "messages": [{"role": "user", "content": "Hello"}]});
    let off = app.openai(Method::POST, "/chat/completions", &key).json(&effort).send().await;
    assert_eq!(off.status, 200);
    assert!(off.body["choices"][0]["message"].get("reasoning_content").is_none());
    assert_eq!(app.emulator.chat_requests().last().unwrap()["think"], false);
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

async fn tool_calls_round_trip_in_openais_shape(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let ask = json!({"role": "user", "content": "Weather in Lisbon?"});
    let body = json!({"model": "qwen3:0.6b", "reasoning_effort": "none", "tools": [weather_tool()], "messages": [ask]});
    let response = app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await;
    assert_eq!(response.status, 200, "{}", response.body);
    let choice = &response.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments = call["function"]["arguments"].as_str().expect("arguments are a JSON string");
    assert!(serde_json::from_str::<Value>(arguments).unwrap().is_object());
    let call_id = call["id"].as_str().unwrap().to_owned();
    assert!(!call_id.is_empty());
    assert_eq!(app.emulator.chat_requests().last().unwrap()["tools"], json!([weather_tool()]));

    // The client runs the tool and sends the result back.
    let assistant = choice["message"].clone();
    let body = json!({"model": "qwen3:0.6b", "reasoning_effort": "none", "tools": [weather_tool()], "messages": [
        ask, assistant, {"role": "tool", "tool_call_id": call_id, "content": "{\"temp_c\": 18}"}
    ]});
    let answered = app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.body["choices"][0]["finish_reason"], "stop");
    let sent = app.emulator.chat_requests().last().unwrap()["messages"].clone();
    assert_eq!(sent[1]["tool_calls"][0]["function"]["name"], "get_weather");
    assert!(sent[1]["tool_calls"][0]["function"]["arguments"].is_object(), "Ollama gets arguments as an object: {sent}");
    assert_eq!(sent[2], json!({"role": "tool", "content": "{\"temp_c\": 18}", "tool_name": "get_weather"}));

    // Streamed, the call comes as a delta with its index, and the finish reason says so.
    let streamed = json!({"model": "qwen3:0.6b", "reasoning_effort": "none", "stream": true, "tools": [weather_tool()],
                          "messages": [{"role": "user", "content": "Weather in Porto?"}]});
    let events = StreamReader::open(app.openai(Method::POST, "/chat/completions", &key).json(&streamed)).await.rest().await;
    let call_chunk =
        events.iter().find(|e| e.data["choices"][0]["delta"].get("tool_calls").is_some()).expect("a tool call chunk");
    assert_eq!(call_chunk.data["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
    let finish = events.iter().find_map(|e| e.data["choices"][0]["finish_reason"].as_str()).unwrap();
    assert_eq!(finish, "tool_calls");

    // tool_choice "none" sends no tools.
    let none = json!({"model": "qwen3:0.6b", "tools": [weather_tool()], "tool_choice": "none", "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(app.openai(Method::POST, "/chat/completions", &key).json(&none).send().await.status, 200);
    assert!(app.emulator.chat_requests().last().unwrap().get("tools").is_none());
}

async fn image_parts_become_ollama_images(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in"},
        {"type": "text", "text": "this picture?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}
    ]}]});
    let response = app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await;
    assert_eq!(response.status, 200, "{}", response.body);
    let sent = &app.emulator.chat_requests()[0]["messages"][0];
    assert_eq!(sent["content"], "What is in\nthis picture?");
    assert_eq!(sent["images"], json!([png]));

    let remote = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]}]});
    let refused = app.openai(Method::POST, "/chat/completions", &key).json(&remote).send().await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["type"], "invalid_request_error");
}

async fn options_are_translated_to_ollamas(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "one two three four five"}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 3, "stop": "\n\n", "seed": 42,
        "presence_penalty": 0.5, "frequency_penalty": -0.5, "response_format": {"type": "json_object"}});
    let response = app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["choices"][0]["finish_reason"], "length");
    let sent = &app.emulator.chat_requests()[0];
    assert_eq!(
        sent["options"],
        json!({"temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "num_predict": 3, "seed": 42, "stop": ["\n\n"]})
    );
    assert_eq!(sent["format"], "json");

    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 50,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}});
    assert_eq!(app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await.status, 200);
    let sent = &app.emulator.chat_requests()[1];
    assert_eq!(sent["format"], schema);
    assert_eq!(sent["options"]["num_predict"], 50);
}

async fn embeddings_as_floats_and_base64(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let floats = app
        .openai(Method::POST, "/embeddings", &key)
        .json(&json!({"model": "llama3.2:1b", "input": ["a lighthouse", "a ship"]}))
        .send()
        .await;
    assert_eq!(floats.status, 200, "{}", floats.body);
    assert_eq!(floats.body["object"], "list");
    let data = floats.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let vector: Vec<f32> = serde_json::from_value(data[0]["embedding"].clone()).unwrap();
    assert_eq!(vector, ollama_emulator::embed::vector("a lighthouse", 16));
    assert_eq!(floats.body["usage"]["prompt_tokens"], 4);

    let packed = app
        .openai(Method::POST, "/embeddings", &key)
        .json(&json!({"model": "llama3.2:1b", "input": "a lighthouse", "encoding_format": "base64"}))
        .send()
        .await;
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(packed.body["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let unpacked: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(unpacked, vector);

    let tokens =
        app.openai(Method::POST, "/embeddings", &key).json(&json!({"model": "llama3.2:1b", "input": [[1, 2, 3]]})).send().await;
    assert_eq!(tokens.status, 400);
    let unknown = app.openai(Method::POST, "/embeddings", &key).json(&json!({"model": "nope", "input": "x"})).send().await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

async fn errors_are_in_openais_shape(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    let unknown = app
        .openai(Method::POST, "/chat/completions", &key)
        .json(&json!({"model": "nope:1b", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.body["error"]["code"], "model_not_found");
    assert!(unknown.body["error"]["message"].as_str().unwrap().contains("not found"));
    let keys: Vec<&String> = unknown.body["error"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["message", "type", "param", "code"]);

    for body in [
        json!({"messages": [{"role": "user", "content": "Hi"}]}),
        json!({"model": "llama3.2:1b", "messages": []}),
        json!({"model": "llama3.2:1b", "messages": [{"role": "wizard", "content": "Hi"}]}),
        json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Hi"}], "temperature": 3}),
        json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Hi"}], "n": 2}),
        json!({"model": "llama3.2:1b", "messages": "Hi"}),
        json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "extreme"}),
    ] {
        let response = app.openai(Method::POST, "/chat/completions", &key).json(&body).send().await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        assert_eq!(response.body["error"]["type"], "invalid_request_error", "{body}");
    }
    let not_json = app.openai(Method::POST, "/chat/completions", &key).raw("application/json", "{").send().await;
    assert_eq!(not_json.status, 400, "{}", not_json.body);
    assert!(not_json.body["error"].is_object());

    app.emulator.set_knobs(Knobs { fail_before_first_byte: Some((500, "out of memory".into())), ..Knobs::default() });
    let failed = app
        .openai(Method::POST, "/chat/completions", &key)
        .json(&json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(failed.body["error"]["type"], "api_error");
    assert!(!failed.body.to_string().contains("127.0.0.1"), "no upstream address: {}", failed.body);

    app.emulator.set_knobs(Knobs { error_after_tokens: Some((2, "the GPU fell over".into())), ..Knobs::default() });
    let body = json!({"model": "llama3.2:1b", "stream": true, "messages": [{"role": "user", "content": "one two three four"}]});
    let events = StreamReader::open(app.openai(Method::POST, "/chat/completions", &key).json(&body)).await.rest().await;
    let last = events.last().unwrap();
    assert_eq!(
        last.data["error"]["message"], "the GPU fell over",
        "a failure after the first token ends the stream with an error event"
    );
    assert!(events.iter().all(|e| e.data != json!("[DONE]")));
}

async fn a_key_narrowed_to_models_refuses_the_others(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k", "models": ["qwen3:0.6b"]})).await;
    let listed = app.openai(Method::GET, "/models", &key).send().await;
    let ids: Vec<&str> = listed.body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["qwen3:0.6b"]);
    assert_eq!(app.openai(Method::GET, "/models/llama3.2:1b", &key).send().await.status, 404);
    let refused = app
        .openai(Method::POST, "/chat/completions", &key)
        .json(&json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["error"]["message"], "You may not use model llama3.2:1b");
    assert_eq!(refused.body["error"]["type"], "permission_error");
    let embed = app.openai(Method::POST, "/embeddings", &key).json(&json!({"model": "llama3.2:1b", "input": "x"})).send().await;
    assert_eq!(embed.status, 403);
    assert!(app.emulator.chat_requests().is_empty(), "nothing reached the upstream");
}

async fn a_client_that_leaves_cancels_the_upstream_request(app: TestApp) {
    let key = key_for(&app, "bob_user", json!({"name": "k"})).await;
    app.emulator.set_knobs(Knobs { per_token_delay: Duration::from_millis(50), tokens: Some(200), ..Knobs::default() });
    let body = json!({"model": "llama3.2:1b", "stream": true, "messages": [{"role": "user", "content": "A long story"}]});
    let mut stream = StreamReader::open(app.openai(Method::POST, "/chat/completions", &key).json(&body)).await;
    assert!(stream.next_event().await.is_some());
    drop(stream);
    let gone = app.emulator.wait_for_cancellations(1, Duration::from_secs(5)).await;
    assert_eq!(gone.len(), 1, "the upstream request is dropped with the client");
    assert!(gone[0].at_token < 200);
    let stopped = app.wait_for_count("SELECT COUNT(*) FROM generations WHERE status = 'stopped'", 1).await;
    assert_eq!(stopped, 1);

    // Not streamed: the same when the client gives up waiting.
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "Another long story"}]});
    let impatient = app
        .openai(Method::POST, "/chat/completions", &key)
        .json(&body)
        .timeout(Duration::from_millis(500))
        .builder()
        .send()
        .await;
    assert!(impatient.is_err());
    let gone = app.emulator.wait_for_cancellations(2, Duration::from_secs(5)).await;
    assert_eq!(gone.len(), 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);
}

async fn the_per_key_rate_limit_answers_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        vec![
            ("RATE_LIMITS", "on".into()),
            ("RATE_LIMIT_API_KEY", "3/minute".into()),
            ("RATE_LIMIT_REGISTER", "100/minute".into()),
            ("RATE_LIMIT_LOGIN", "100/minute".into()),
        ],
    )
    .await;
    let (_, s) = app.signed_up("bob_user").await;
    let first = app.api_key(&s, json!({"name": "a"})).await["key"].as_str().unwrap().to_owned();
    let second = app.api_key(&s, json!({"name": "b"})).await["key"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(app.openai(Method::GET, "/models", &first).send().await.status, 200);
    }
    let limited = app.openai(Method::GET, "/models", &first).send().await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(limited.body["error"]["type"], "rate_limit_error");
    assert_eq!(limited.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(app.openai(Method::GET, "/models", &second).send().await.status, 200, "each key has its own budget");
}
