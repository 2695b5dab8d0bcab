//! Black-box tests of the OpenAI-compatible mode over HTTP.

use std::time::Duration;

use ollama_emulator::{Emulator, EmulatorConfig, Knobs, ModelSpec};
use reqwest::{Client, Response};
use serde_json::{json, Value};

async fn openai(knobs: Knobs) -> Emulator {
    Emulator::start_with(EmulatorConfig { openai: true, knobs, ..EmulatorConfig::default() }).await
}

async fn complete(emulator: &Emulator, body: Value) -> Response {
    Client::new().post(format!("{}/v1/chat/completions", emulator.base_url())).json(&body).send().await.unwrap()
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

/// The `data:` payloads of a server-sent event stream, `[DONE]` as a JSON string.
async fn events(response: Response) -> Vec<Value> {
    assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("\n\n"), "events end with a blank line: {text:?}");
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {event:?}"));
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

fn deltas(events: &[Value]) -> Vec<&Value> {
    events.iter().filter_map(|e| e.pointer("/choices/0/delta")).collect()
}

fn joined(events: &[Value], field: &str) -> String {
    deltas(events).iter().filter_map(|d| d.get(field).and_then(Value::as_str)).collect()
}

fn finish_reasons(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e.pointer("/choices/0/finish_reason").and_then(Value::as_str)).collect()
}

#[tokio::test]
async fn models_health_and_only_the_openai_api() {
    let config = EmulatorConfig {
        openai: true,
        models: Some(vec![ModelSpec::new("mistral:7b", &["completion", "tools"]), ModelSpec::qwen3_0_6b()]),
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start_with(config).await;
    let client = Client::new();
    let models: Value = client.get(format!("{}/v1/models", emulator.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["mistral:7b", "qwen3:0.6b"]);
    assert_eq!(models["data"][0]["object"], "model");
    assert!(models["data"][0]["created"].as_i64().unwrap() > 0);

    let health = client.get(format!("{}/health", emulator.base_url())).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let native = client.get(format!("{}/api/tags", emulator.base_url())).send().await.unwrap();
    assert_eq!(native.status(), 404);
    let body: Value = native.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Invalid URL (GET /api/tags)");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let root = client.get(emulator.base_url()).send().await.unwrap();
    assert_eq!(root.status(), 404);

    // And an Ollama emulator has no /v1.
    let ollama = Emulator::start().await;
    let missing = client.get(format!("{}/v1/models", ollama.base_url())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), "404 page not found");
}

#[tokio::test]
async fn a_stream_is_chunks_a_finish_reason_and_done() {
    let emulator = openai(Knobs::default()).await;
    let body = json!({"model": "llama3.2:1b", "stream": true, "messages": user("hello there")});
    let events = events(complete(&emulator, body).await).await;
    let first = &events[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "llama3.2:1b");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert!(events.iter().filter(|e| e.is_object()).all(|e| e["id"] == first["id"] && e.get("usage").is_none()));
    let contents: Vec<&str> = deltas(&events).iter().filter_map(|d| d["content"].as_str()).filter(|c| !c.is_empty()).collect();
    assert_eq!(contents, ["Echo:", " hello", " there"]);
    assert_eq!(finish_reasons(&events), ["stop"]);
    let finish = &events[events.len() - 2];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(emulator.completed_chats(), 1);
    assert_eq!(emulator.in_flight_chats(), 0);
    assert_eq!(emulator.chat_completion_requests()[0]["messages"], user("hello there"));
}

#[tokio::test]
async fn usage_comes_last_when_asked_for() {
    let emulator = openai(Knobs::default()).await;
    let body = json!({"model": "llama3.2:1b", "stream": true, "stream_options": {"include_usage": true},
                      "messages": user("one two three")});
    let events = events(complete(&emulator, body).await).await;
    let usage_chunk = &events[events.len() - 2];
    assert_eq!(usage_chunk["choices"], json!([]));
    // Prompt: 3 words + 10; completion: 4 content chunks ("Echo:", " one", " two", " three").
    assert_eq!(usage_chunk["usage"], json!({"prompt_tokens": 13, "completion_tokens": 4, "total_tokens": 17}));
    assert!(events[..events.len() - 2].iter().all(|e| e["usage"].is_null() && e.get("usage").is_some()));
}

#[tokio::test]
async fn a_thinking_model_reasons_unless_told_not_to() {
    let emulator = openai(Knobs::default()).await;
    let events_of = |body: Value| {
        let emulator = &emulator;
        async move { events(complete(emulator, body).await).await }
    };
    let thought = events_of(json!({"model": "qwen3:0.6b", "stream": true, "messages": user("Think first")})).await;
    assert_eq!(joined(&thought, "reasoning_content"), "The user said 11 characters.");
    assert_eq!(joined(&thought, "content"), "Echo: Think first");
    let reasoning_at = deltas(&thought).iter().position(|d| d.get("reasoning_content").is_some()).unwrap();
    let content_at = deltas(&thought).iter().position(|d| d["content"].as_str().is_some_and(|c| !c.is_empty())).unwrap();
    assert!(reasoning_at < content_at);

    for off in [json!({"reasoning_effort": "none"}), json!({"chat_template_kwargs": {"enable_thinking": false}})] {
        let mut body = json!({"model": "qwen3:0.6b", "stream": true, "messages": user("hi")});
        body.as_object_mut().unwrap().extend(off.as_object().unwrap().clone());
        assert_eq!(joined(&events_of(body).await, "reasoning_content"), "");
    }

    let whole: Value =
        complete(&emulator, json!({"model": "qwen3:0.6b", "messages": user("Think first")})).await.json().await.unwrap();
    assert_eq!(whole["choices"][0]["message"]["reasoning_content"], "The user said 11 characters.");
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city", "days"]}}}])
}

#[tokio::test]
async fn tool_calls_stream_in_fragments() {
    let emulator = openai(Knobs::default()).await;
    let body = json!({"model": "qwen3:0.6b", "stream": true, "reasoning_effort": "none", "tools": weather_tool(),
                      "messages": user("Oslo")});
    let events = events(complete(&emulator, body).await).await;
    let calls: Vec<&Value> = deltas(&events).iter().filter_map(|d| d.get("tool_calls")).map(|c| &c[0]).collect();
    assert!(calls.len() >= 3, "a head and argument fragments: {calls:?}");
    let head = calls[0];
    assert_eq!(head["index"], 0);
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"], json!({"name": "get_weather", "arguments": ""}));
    assert!(head["id"].as_str().unwrap().starts_with("call_"));
    assert!(calls[1..].iter().all(|c| c["index"] == 0 && c.get("id").is_none() && c["function"].get("name").is_none()));
    let arguments: String = calls.iter().map(|c| c["function"]["arguments"].as_str().unwrap()).collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Oslo", "days": 1}));
    assert_eq!(finish_reasons(&events), ["tool_calls"]);

    let whole: Value = complete(&emulator, json!({"model": "qwen3:0.6b", "tools": weather_tool(), "messages": user("Oslo")}))
        .await
        .json()
        .await
        .unwrap();
    let choice = &whole["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap()["city"], "Oslo");

    // After the tool's result the model answers.
    let messages = json!([{"role": "user", "content": "Oslo"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "11 degrees"}]);
    let answer: Value = complete(&emulator, json!({"model": "qwen3:0.6b", "tools": weather_tool(), "messages": messages}))
        .await
        .json()
        .await
        .unwrap();
    assert!(answer["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let none: Value = complete(
        &emulator,
        json!({"model": "qwen3:0.6b", "tools": weather_tool(), "tool_choice": "none", "messages": user("x")}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(none["choices"][0]["message"].get("tool_calls").is_none());

    let refused = complete(&emulator, json!({"model": "llama3.2:1b", "tools": weather_tool(), "messages": user("x")})).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["message"], "\"llama3.2:1b\" does not support tools");
}

#[tokio::test]
async fn a_whole_completion_and_its_length_limit() {
    let emulator = openai(Knobs { reply: Some("a b c d".into()), ..Knobs::default() }).await;
    let response = complete(&emulator, json!({"model": "llama3.2:1b", "messages": user("hi there")})).await;
    assert_eq!(response.headers()["content-type"], "application/json; charset=utf-8");
    let whole: Value = response.json().await.unwrap();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "llama3.2:1b");
    assert_eq!(whole["choices"][0]["message"], json!({"role": "assistant", "content": "a b c d"}));
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert_eq!(whole["usage"], json!({"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}));

    let cut: Value =
        complete(&emulator, json!({"model": "llama3.2:1b", "max_tokens": 2, "messages": user("x")})).await.json().await.unwrap();
    assert_eq!(cut["choices"][0]["message"]["content"], "a b");
    assert_eq!(cut["choices"][0]["finish_reason"], "length");
    let body = json!({"model": "llama3.2:1b", "stream": true, "max_completion_tokens": 3, "messages": user("x")});
    let streamed = events(complete(&emulator, body).await).await;
    assert_eq!(joined(&streamed, "content"), "a b c");
    assert_eq!(finish_reasons(&streamed), ["length"]);
    assert_eq!(emulator.completed_chats(), 3);
}

#[tokio::test]
async fn errors_are_in_openais_shape() {
    let emulator = openai(Knobs::default()).await;
    let unknown = complete(&emulator, json!({"model": "gpt-9", "messages": user("x")})).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.unwrap(),
        json!({"error": {"message": "The model `gpt-9` does not exist.", "type": "invalid_request_error",
                         "param": null, "code": "model_not_found"}})
    );
    let empty = complete(&emulator, json!({"model": "llama3.2:1b", "messages": []})).await;
    assert_eq!(empty.status(), 400);
    assert_eq!(empty.json::<Value>().await.unwrap()["error"]["type"], "invalid_request_error");
    let malformed = Client::new()
        .post(format!("{}/v1/chat/completions", emulator.base_url()))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(malformed.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let wrong_method = Client::new().get(format!("{}/v1/chat/completions", emulator.base_url())).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);

    emulator.set_knobs(Knobs { fail_before_first_byte: Some((429, "slow down".into())), ..Knobs::default() });
    let limited = complete(&emulator, json!({"model": "llama3.2:1b", "stream": true, "messages": user("x")})).await;
    assert_eq!(limited.status(), 429);
    let error = limited.json::<Value>().await.unwrap();
    assert_eq!(error["error"]["message"], "slow down");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");

    emulator.set_knobs(Knobs { error_after_tokens: Some((2, "the GPU fell over".into())), ..Knobs::default() });
    let body = json!({"model": "llama3.2:1b", "stream": true, "messages": user("one two three")});
    let broken = complete(&emulator, body.clone()).await;
    assert_eq!(broken.status(), 200);
    let events = events(broken).await;
    assert_eq!(joined(&events, "content"), "Echo: one");
    assert!(finish_reasons(&events).is_empty());
    assert_eq!(events[events.len() - 2]["error"]["message"], "the GPU fell over");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let whole = complete(&emulator, json!({"model": "llama3.2:1b", "messages": user("one two three")})).await;
    assert_eq!(whole.status(), 500);
    assert_eq!(whole.json::<Value>().await.unwrap()["error"]["type"], "server_error");

    emulator.set_knobs(Knobs { error_after_tokens: Some((0, "no".into())), ..Knobs::default() });
    let before_any = complete(&emulator, body).await;
    assert_eq!(before_any.status(), 500);
    assert_eq!(before_any.json::<Value>().await.unwrap()["error"]["message"], "no");
}

#[tokio::test]
async fn an_api_key_is_required_when_set() {
    let config = EmulatorConfig { openai: true, api_key: Some("sk-test-123".into()), ..EmulatorConfig::default() };
    let emulator = Emulator::start_with(config).await;
    let url = format!("{}/v1/models", emulator.base_url());
    let client = Client::new();

    let missing = client.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().starts_with("You didn't provide an API key"));
    assert_eq!(body["error"]["code"], Value::Null);
    let wrong = client.get(&url).bearer_auth("sk-other").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    let right = client.get(&url).bearer_auth("sk-test-123").send().await.unwrap();
    assert_eq!(right.status(), 200);
    let chat = client
        .post(format!("{}/v1/chat/completions", emulator.base_url()))
        .bearer_auth("sk-test-123")
        .json(&json!({"model": "llama3.2:1b", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(client.get(format!("{}/health", emulator.base_url())).send().await.unwrap().status(), 200);

    let recorded = emulator.requests();
    let authorization = |i: usize| recorded[i].headers.iter().find(|(name, _)| name == "authorization").map(|(_, v)| v.clone());
    assert_eq!(authorization(0), None);
    assert_eq!(authorization(2).as_deref(), Some("Bearer sk-test-123"));

    // Ollama mode with a key: Ollama's error shape.
    let config = EmulatorConfig { api_key: Some("k".into()), ..EmulatorConfig::default() };
    let ollama = Emulator::start_with(config).await;
    let refused = client.get(format!("{}/api/tags", ollama.base_url())).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({"error": "unauthorized"}));
}

#[tokio::test]
async fn knobs_shape_the_completions_too() {
    let emulator = openai(Knobs { tokens: Some(5), reply: Some("x".into()), ..Knobs::default() }).await;
    let whole: Value = complete(&emulator, json!({"model": "llama3.2:1b", "messages": user("hi")})).await.json().await.unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], "x x x x x");

    // Paced, so that the status line leaves before the connection is cut.
    let pace = Duration::from_millis(10);
    emulator.set_knobs(Knobs { drop_after_tokens: Some(2), per_token_delay: pace, ..Knobs::default() });
    let body = json!({"model": "llama3.2:1b", "stream": true, "messages": user("one two three")});
    let mut dropped = complete(&emulator, body.clone()).await;
    assert_eq!(dropped.status(), 200);
    let mut read = String::new();
    let broke = loop {
        match dropped.chunk().await {
            Ok(Some(bytes)) => read.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(broke, "the body breaks off: {read:?}");
    assert!(read.contains("\"content\":\" one\"") && !read.contains("[DONE]"), "{read}");
}

#[tokio::test]
async fn a_client_leaving_is_a_cancellation() {
    let knobs = Knobs { per_token_delay: Duration::from_millis(20), tokens: Some(200), ..Knobs::default() };
    let emulator = openai(knobs).await;
    let body = json!({"model": "llama3.2:1b", "stream": true, "messages": user("hi")});
    let mut response = complete(&emulator, body).await;
    let mut seen = String::new();
    while !seen.contains("\"content\":\"Echo:\"") {
        seen.push_str(&String::from_utf8_lossy(&response.chunk().await.unwrap().unwrap()));
    }
    assert_eq!(emulator.in_flight_chats(), 1);
    drop(response);
    let gone = emulator.wait_for_cancellations(1, Duration::from_secs(5)).await;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].path, "/v1/chat/completions");
    assert_eq!(gone[0].model, "llama3.2:1b");
    assert!(gone[0].at_token >= 1 && gone[0].at_token < 200);
    assert_eq!(emulator.in_flight_chats(), 0);
    assert_eq!(emulator.completed_chats(), 0);

    emulator.set_knobs(Knobs { hang: true, ..Knobs::default() });
    let hung = Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let url = format!("{}/v1/chat/completions", emulator.base_url());
    let timed_out = hung.post(url).json(&json!({"model": "llama3.2:1b", "messages": user("x")})).send().await;
    assert!(timed_out.unwrap_err().is_timeout());
    let gone = emulator.wait_for_cancellations(2, Duration::from_secs(5)).await;
    assert_eq!(gone.len(), 2);
    assert_eq!(gone[1].at_token, 0);
}

#[tokio::test]
async fn parallel_slots_apply() {
    let knobs = Knobs { parallel: Some(1), max_queue: Some(0), hang: true, ..Knobs::default() };
    let emulator = openai(knobs).await;
    let base = emulator.base_url();
    let holder = tokio::spawn(async move {
        Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "llama3.2:1b", "messages": user("x")}))
            .send()
            .await
    });
    while emulator.in_flight_chats() == 0 {
        tokio::task::yield_now().await;
    }
    // The first took the only slot in the same step as it was counted, so the second finds
    // the queue full (the timeout only keeps a broken emulator from hanging the test).
    let busy = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(format!("{}/v1/chat/completions", emulator.base_url()))
        .json(&json!({"model": "llama3.2:1b", "messages": user("y")}))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 503);
    let error = busy.json::<Value>().await.unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(error["error"]["message"].as_str().unwrap().starts_with("server busy"));
    holder.abort();
}
