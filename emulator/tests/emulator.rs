//! Black-box tests of the emulator over HTTP.

use std::time::{Duration, Instant};

use ollama_emulator::{Emulator, EmulatorConfig, Knobs, ModelSpec};
use reqwest::{Client, Response};
use serde_json::{json, Value};

fn client() -> Client {
    Client::new()
}

async fn post(emulator: &Emulator, path: &str, body: Value) -> Response {
    client().post(format!("{}{path}", emulator.base_url())).json(&body).send().await.unwrap()
}

async fn chat(emulator: &Emulator, body: Value) -> Response {
    post(emulator, "/api/chat", body).await
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

fn content_type(response: &Response) -> String {
    response.headers()["content-type"].to_str().unwrap().to_string()
}

/// All NDJSON lines of a response body.
async fn read_lines(response: Response) -> Vec<Value> {
    let text = response.text().await.unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "every line ends with \\n: {text:?}");
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// Reads NDJSON lines as they arrive.
struct LineReader {
    response: Response,
    buffer: Vec<u8>,
}

impl LineReader {
    fn new(response: Response) -> Self {
        LineReader { response, buffer: Vec::new() }
    }

    /// The next line, `Ok(None)` at the end of the body, `Err` if the body broke off.
    async fn next(&mut self) -> Result<Option<Value>, reqwest::Error> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(Some(serde_json::from_slice(&line).unwrap()));
            }
            match self.response.chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

fn contents(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["done"] == false)
        .filter_map(|l| l["message"]["content"].as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn has_fraction_digits(timestamp: &str, allowed: std::ops::RangeInclusive<usize>) -> bool {
    let fraction = timestamp.split('.').nth(1).unwrap_or("");
    let digits = fraction.chars().take_while(char::is_ascii_digit).count();
    allowed.contains(&digits)
}

// ---- simple endpoints ------------------------------------------------------------------------

#[tokio::test]
async fn root_version_and_head() {
    let emulator = Emulator::start().await;
    let root = client().get(emulator.base_url()).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert_eq!(content_type(&root), "text/plain; charset=utf-8");
    assert_eq!(root.text().await.unwrap(), "Ollama is running");

    let version = client().get(format!("{}/api/version", emulator.base_url())).send().await.unwrap();
    assert_eq!(content_type(&version), "application/json; charset=utf-8");
    assert_eq!(version.json::<Value>().await.unwrap(), json!({"version": "0.9.0"}));

    let head = client().head(format!("{}/api/version", emulator.base_url())).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let head_root = client().head(emulator.base_url()).send().await.unwrap();
    assert_eq!(head_root.status(), 200);
}

#[tokio::test]
async fn unknown_path_and_wrong_method_are_plain_text() {
    let emulator = Emulator::start().await;
    let missing = client().get(format!("{}/api/nope", emulator.base_url())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(content_type(&missing), "text/plain");
    assert_eq!(missing.text().await.unwrap(), "404 page not found");

    let wrong = client().get(format!("{}/api/chat", emulator.base_url())).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(content_type(&wrong), "text/plain");
    assert_eq!(wrong.text().await.unwrap(), "405 method not allowed");

    let recorded = emulator.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!((recorded[1].method.as_str(), recorded[1].path.as_str()), ("GET", "/api/chat"));
}

#[tokio::test]
async fn tags_list_installed_models() {
    let emulator = Emulator::start().await;
    let tags: Value = client().get(format!("{}/api/tags", emulator.base_url())).send().await.unwrap().json().await.unwrap();
    let models = tags["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["llama3.2:1b", "qwen3:0.6b"]);
    let llama = &models[0];
    assert_eq!(llama["model"], "llama3.2:1b");
    assert_eq!(llama["size"], 1_321_098_329u64);
    let digest = llama["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    let modified = llama["modified_at"].as_str().unwrap();
    assert!(modified.ends_with("+02:00") && has_fraction_digits(modified, 8..=9), "{modified}");
    assert_eq!(
        llama["details"],
        json!({"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
               "parameter_size": "1.2B", "quantization_level": "Q8_0"})
    );
    assert!(llama.get("capabilities").is_none());
    assert_eq!(emulator.models(), ["llama3.2:1b", "qwen3:0.6b"]);
}

#[tokio::test]
async fn custom_models_replace_the_defaults() {
    let config =
        EmulatorConfig { models: Some(vec![ModelSpec::new("mistral", &["completion", "tools"])]), ..EmulatorConfig::default() };
    let emulator = Emulator::start_with(config).await;
    assert_eq!(emulator.models(), ["mistral:latest"]);
    let show: Value = post(&emulator, "/api/show", json!({"model": "Mistral"})).await.json().await.unwrap();
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));
}

#[tokio::test]
async fn show_models_and_errors() {
    let emulator = Emulator::start().await;
    let show = post(&emulator, "/api/show", json!({"model": "llama3.2:1b"})).await;
    assert_eq!(show.status(), 200);
    let show: Value = show.json().await.unwrap();
    assert_eq!(show["capabilities"], json!(["completion"]));
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert_eq!(show["model_info"]["llama.context_length"], 131_072);
    assert_eq!(show["details"]["family"], "llama");
    assert!(show["modelfile"].as_str().unwrap().starts_with("# Modelfile generated by \"ollama show\""));
    assert!(show["parameters"].as_str().unwrap().starts_with("stop                           \"<|start_header_id|>\""));
    assert!(show["template"].as_str().unwrap().contains("{{ .Content }}"));

    let legacy: Value = post(&emulator, "/api/show", json!({"name": "qwen3:0.6b"})).await.json().await.unwrap();
    assert_eq!(legacy["capabilities"], json!(["completion", "tools", "thinking"]));

    let unknown = post(&emulator, "/api/show", json!({"model": "foo"})).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap(), json!({"error": "model 'foo:latest' not found"}));

    let missing = post(&emulator, "/api/show", json!({})).await;
    assert_eq!(missing.status(), 400);
    assert_eq!(missing.json::<Value>().await.unwrap(), json!({"error": "model is required"}));
}

// ---- chat ------------------------------------------------------------------------------------

#[tokio::test]
async fn chat_streams_ndjson_with_a_final_metrics_chunk() {
    let emulator = Emulator::start().await;
    let response = chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("hello world")})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/x-ndjson");
    assert!(response.content_length().is_none(), "chunked, no content-length");
    let lines = read_lines(response).await;
    assert_eq!(contents(&lines), ["Echo:", " hello", " world"]);
    for line in &lines[..3] {
        assert_eq!(line.as_object().unwrap().len(), 4, "{line}");
        assert_eq!(line["model"], "llama3.2:1b");
        assert_eq!(line["message"]["role"], "assistant");
        let created = line["created_at"].as_str().unwrap();
        assert!(created.ends_with('Z') && has_fraction_digits(created, 9..=9), "{created}");
    }
    let last = lines.last().unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
    let metric = |key: &str| last[key].as_u64().unwrap_or_else(|| panic!("{key} in {last}"));
    assert_eq!(metric("eval_count"), 3);
    assert_eq!(metric("prompt_eval_count"), 12);
    assert!(metric("load_duration") > 0, "first use is cold");
    assert!(metric("total_duration") >= metric("load_duration") + metric("prompt_eval_duration") + metric("eval_duration"));

    assert_eq!(emulator.completed_chats(), 1);
    assert_eq!(emulator.in_flight_chats(), 0);
    assert!(emulator.cancellations().is_empty());
    assert_eq!(emulator.chat_requests()[0]["messages"][0]["content"], "hello world");

    // The model is warm now: no load_duration.
    let again = read_lines(chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("hi")})).await).await;
    assert!(again.last().unwrap().get("load_duration").is_none());
}

#[tokio::test]
async fn chat_echoes_the_model_as_sent_and_lowercases_roles() {
    let emulator = Emulator::start().await;
    let body = json!({"model": "LLAMA3.2:1b", "stream": false, "messages": [
        {"role": "User", "content": "first"}, {"role": "assistant", "content": "x"},
        {"role": "USER", "content": "second", "thinking": null, "images": null}],
        "think": null, "options": null});
    let response: Value = chat(&emulator, body).await.json().await.unwrap();
    assert_eq!(response["model"], "LLAMA3.2:1b");
    assert_eq!(response["message"]["content"], "Echo: second");
}

#[tokio::test]
async fn chat_without_streaming_returns_one_object() {
    let emulator = Emulator::start().await;
    let response =
        chat(&emulator, json!({"model": "llama3.2:1b", "stream": false, "messages": user("Best time to visit?")})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json; charset=utf-8");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], json!({"role": "assistant", "content": "Echo: Best time to visit?"}));
    assert_eq!(body["done"], true);
    assert_eq!(body["done_reason"], "stop");
    assert_eq!(body["eval_count"], 5);
    assert_eq!(body["prompt_eval_count"], 14);
    assert_eq!(emulator.completed_chats(), 1);
}

#[tokio::test]
async fn stream_null_means_streaming() {
    let emulator = Emulator::start().await;
    let response = chat(&emulator, json!({"model": "llama3.2:1b", "stream": null, "messages": user("a")})).await;
    assert_eq!(content_type(&response), "application/x-ndjson");
}

#[tokio::test]
async fn reply_tokens_and_num_predict() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs { reply: Some("one two three".into()), tokens: Some(7), ..Knobs::default() },
        ..EmulatorConfig::default()
    })
    .await;
    let padded = read_lines(chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("x")})).await).await;
    assert_eq!(contents(&padded), ["one", " two", " three", " one", " two", " three", " one"]);
    assert_eq!(padded.last().unwrap()["eval_count"], 7);

    let body = json!({"model": "llama3.2:1b", "messages": user("x"), "options": {"num_predict": 2}});
    let cut = read_lines(chat(&emulator, body).await).await;
    assert_eq!(contents(&cut), ["one", " two"]);
    assert_eq!(cut.last().unwrap()["done_reason"], "length");

    emulator.set_knobs(Knobs {
        reply: Some("one two three".into()),
        tokens: Some(7),
        ignore_num_predict: true,
        ..Knobs::default()
    });
    let body = json!({"model": "llama3.2:1b", "messages": user("x"), "options": {"num_predict": 2}});
    let ignored = read_lines(chat(&emulator, body).await).await;
    assert_eq!(contents(&ignored).len(), 7, "the limit is ignored");
    assert_eq!(ignored.last().unwrap()["done_reason"], "stop");

    let bad = chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("x"), "options": {"temperature": "hot"}})).await;
    assert_eq!(bad.status(), 500);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "option \"temperature\" must be of type float32");
}

#[tokio::test]
async fn thinking_model_thinks_unless_told_not_to() {
    let emulator = Emulator::start().await;
    let streamed = read_lines(chat(&emulator, json!({"model": "qwen3:0.6b", "messages": user("Think first")})).await).await;
    let thinking: String = streamed.iter().filter_map(|l| l["message"]["thinking"].as_str()).collect();
    assert_eq!(thinking, "The user said 11 characters.");
    let first = &streamed[0]["message"];
    assert_eq!(first["content"], "");
    assert!(first["thinking"].is_string());
    let first_content = streamed.iter().position(|l| l["message"]["content"] != "").unwrap();
    assert!(streamed[..first_content].iter().all(|l| l["message"]["thinking"].is_string()));
    assert!((1..=3).contains(&first_content));

    let joined: Value =
        chat(&emulator, json!({"model": "qwen3:0.6b", "think": true, "stream": false, "messages": user("Think first")}))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(joined["message"]["thinking"], "The user said 11 characters.");
    assert_eq!(joined["message"]["content"], "Echo: Think first");

    let plain = read_lines(chat(&emulator, json!({"model": "qwen3:0.6b", "think": false, "messages": user("hi")})).await).await;
    assert!(plain.iter().all(|l| l["message"].get("thinking").is_none()));

    let refused = chat(&emulator, json!({"model": "llama3.2:1b", "think": true, "messages": user("hi")})).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({"error": "\"llama3.2:1b\" does not support thinking"}));
}

#[tokio::test]
async fn tools_give_one_tool_call_chunk() {
    let emulator = Emulator::start().await;
    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]);
    let body = json!({"model": "qwen3:0.6b", "think": false, "tools": tools, "messages": user("weather?")});
    let streamed = read_lines(chat(&emulator, body).await).await;
    let calls: Vec<&Value> = streamed.iter().filter(|l| l["message"].get("tool_calls").is_some()).collect();
    assert_eq!(calls.len(), 1);
    let call = &calls[0]["message"]["tool_calls"][0];
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 13);
    assert!(id[5..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert_eq!(call["function"], json!({"index": 0, "name": "get_weather", "arguments": {}}));
    assert_eq!(calls[0]["message"]["content"], "");

    let body = json!({"model": "qwen3:0.6b", "stream": false, "tools": tools, "messages": user("weather?")});
    let whole: Value = chat(&emulator, body).await.json().await.unwrap();
    assert_eq!(whole["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(whole["message"]["content"], "Echo: weather?");

    // After a tool result the model answers instead of calling the tool again.
    let messages =
        json!([{"role": "user", "content": "weather?"}, {"role": "tool", "content": "11 degrees", "tool_name": "get_weather"}]);
    let body = json!({"model": "qwen3:0.6b", "stream": false, "tools": tools, "messages": messages});
    let answer: Value = chat(&emulator, body).await.json().await.unwrap();
    assert!(answer["message"].get("tool_calls").is_none());

    let refused = chat(&emulator, json!({"model": "llama3.2:1b", "tools": tools, "messages": user("x")})).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "\"llama3.2:1b\" does not support tools");
}

#[tokio::test]
async fn chat_validation_errors() {
    let emulator = Emulator::start().await;
    let url = format!("{}/api/chat", emulator.base_url());
    let empty = client().post(&url).send().await.unwrap();
    assert_eq!(empty.status(), 400);
    assert_eq!(empty.json::<Value>().await.unwrap(), json!({"error": "missing request body"}));

    let bad_json = client().post(&url).body("{\"model\":").send().await.unwrap();
    assert_eq!(bad_json.status(), 400);
    assert!(bad_json.json::<Value>().await.unwrap()["error"].is_string());

    let wrong_type = chat(&emulator, json!({"model": "llama3.2:1b", "messages": "hi"})).await;
    assert_eq!(wrong_type.status(), 400);

    let no_model = chat(&emulator, json!({"messages": user("x")})).await;
    assert_eq!(no_model.status(), 400);
    assert_eq!(no_model.json::<Value>().await.unwrap(), json!({"error": "model is required"}));

    let unknown = chat(&emulator, json!({"model": "nonexistent:1b", "messages": user("x")})).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.unwrap(),
        json!({"error": "model \"nonexistent:1b\" not found, try pulling it first"})
    );

    let data_url = json!([{"role": "user", "content": "look", "images": ["data:image/png;base64,iVBORw0KGgo="]}]);
    let bad_image = chat(&emulator, json!({"model": "llama3.2:1b", "messages": data_url})).await;
    assert_eq!(bad_image.status(), 400);
    assert_eq!(bad_image.json::<Value>().await.unwrap(), json!({"error": "illegal base64 data at input byte 4"}));

    let good_image = json!([{"role": "user", "content": "look", "images": ["iVBORw0KGgo="]}]);
    let ok = chat(&emulator, json!({"model": "llama3.2:1b", "stream": false, "messages": good_image})).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(emulator.chat_requests().last().unwrap()["messages"][0]["images"][0], "iVBORw0KGgo=");

    let bad_think = chat(&emulator, json!({"model": "qwen3:0.6b", "think": "very", "messages": user("x")})).await;
    assert_eq!(bad_think.status(), 400);
    assert_eq!(emulator.completed_chats(), 1);
}

#[tokio::test]
async fn empty_messages_load_or_unload_the_model() {
    let emulator = Emulator::start().await;
    let ps = |emulator: &Emulator| {
        let url = format!("{}/api/ps", emulator.base_url());
        async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(ps(&emulator).await, json!({"models": []}));

    let load = chat(&emulator, json!({"model": "llama3.2:1b", "messages": []})).await;
    assert_eq!(content_type(&load), "application/json; charset=utf-8");
    let load: Value = load.json().await.unwrap();
    assert_eq!(load["done_reason"], "load");
    assert_eq!(load["done"], true);
    assert_eq!(load["message"], json!({"role": "assistant", "content": ""}));

    let loaded = ps(&emulator).await;
    assert_eq!(loaded["models"][0]["name"], "llama3.2:1b");
    let expires = loaded["models"][0]["expires_at"].as_str().unwrap();
    assert!(expires.ends_with("+02:00"), "{expires}");

    let unload: Value =
        chat(&emulator, json!({"model": "llama3.2:1b", "messages": [], "keep_alive": 0})).await.json().await.unwrap();
    assert_eq!(unload["done_reason"], "unload");
    assert_eq!(ps(&emulator).await, json!({"models": []}));
}

#[tokio::test]
async fn ps_lists_the_models_recent_chats_loaded() {
    let emulator = Emulator::start().await;
    let ps = || {
        let url = format!("{}/api/ps", emulator.base_url());
        async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    read_lines(chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("hi")})).await).await;
    let whole =
        chat(&emulator, json!({"model": "qwen3:0.6b", "stream": false, "keep_alive": "1h", "messages": user("hi")})).await;
    assert_eq!(whole.status(), 200);
    let loaded = ps().await;
    let models = loaded["models"].as_array().unwrap();
    // Latest expiry first.
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["qwen3:0.6b", "llama3.2:1b"]);
    let expires_in = |model: &Value| {
        let at = chrono::DateTime::parse_from_rfc3339(model["expires_at"].as_str().unwrap()).unwrap();
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
    };
    assert!((3590..=3600).contains(&expires_in(&models[0])), "{loaded}");
    assert!((290..=300).contains(&expires_in(&models[1])), "{loaded}");
    assert_eq!(models[1]["size_vram"], models[1]["size"]);
    assert_eq!(models[1]["context_length"], 4096);
}

#[tokio::test]
async fn generate_streams_responses() {
    let emulator = Emulator::start().await;
    let streamed =
        read_lines(post(&emulator, "/api/generate", json!({"model": "llama3.2:1b", "prompt": "hi there"})).await).await;
    let text: String = streamed.iter().filter_map(|l| l["response"].as_str()).collect();
    assert_eq!(text, "Echo: hi there");
    let last = streamed.last().unwrap();
    assert_eq!(last["done"], true);
    assert!(last["context"].as_array().is_some_and(|c| !c.is_empty()));
    assert_eq!(last["eval_count"], 3);
}

// ---- timing, faults and disconnects ------------------------------------------------------------

#[tokio::test]
async fn headers_wait_for_the_first_token() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs { first_token_delay: Duration::from_millis(300), ..Knobs::default() },
        ..EmulatorConfig::default()
    })
    .await;
    let started = Instant::now();
    let response = chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("hi")})).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(290), "headers came after {waited:?}");
    assert_eq!(response.status(), 200);
    let last = read_lines(response).await.pop().unwrap();
    assert!(last["prompt_eval_duration"].as_u64().unwrap() >= 290_000_000);
}

#[tokio::test]
async fn load_delay_only_for_a_cold_model() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs { load_delay: Duration::from_millis(200), ..Knobs::default() },
        ..EmulatorConfig::default()
    })
    .await;
    let body = json!({"model": "llama3.2:1b", "stream": false, "messages": user("hi")});
    let started = Instant::now();
    let cold: Value = chat(&emulator, body.clone()).await.json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(cold["load_duration"].as_u64().unwrap() >= 190_000_000);

    let started = Instant::now();
    let warm: Value = chat(&emulator, body).await.json().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(150));
    assert!(warm.get("load_duration").is_none());
}

#[tokio::test]
async fn failure_before_the_first_byte() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs { fail_before_first_byte: Some((503, "server busy".into())), ..Knobs::default() },
        ..EmulatorConfig::default()
    })
    .await;
    for stream in [true, false] {
        let response = chat(&emulator, json!({"model": "llama3.2:1b", "stream": stream, "messages": user("x")})).await;
        assert_eq!(response.status(), 503);
        assert_eq!(content_type(&response), "application/json; charset=utf-8");
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"error": "server busy"}));
    }
    assert_eq!(emulator.completed_chats(), 0);
}

#[tokio::test]
async fn error_after_tokens_ends_the_stream_with_an_error_line() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs {
            error_after_tokens: Some((2, "out of memory".into())),
            reply: Some("a b c d e".into()),
            ..Knobs::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let response = chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("x")})).await;
    assert_eq!(response.status(), 200);
    let lines = read_lines(response).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(contents(&lines), ["a", " b"]);
    assert_eq!(lines[2], json!({"error": "out of memory"}));
    assert!(lines.iter().all(|l| l["done"] != true));

    let whole = chat(&emulator, json!({"model": "llama3.2:1b", "stream": false, "messages": user("x")})).await;
    assert_eq!(whole.status(), 500);
    assert_eq!(whole.json::<Value>().await.unwrap(), json!({"error": "out of memory"}));
    assert_eq!(emulator.completed_chats(), 0);
    assert!(emulator.cancellations().is_empty());
}

#[tokio::test]
async fn drop_after_tokens_breaks_the_body() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs {
            drop_after_tokens: Some(2),
            per_token_delay: Duration::from_millis(10),
            tokens: Some(10),
            ..Knobs::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let response = chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("x")})).await;
    assert_eq!(response.status(), 200);
    let mut reader = LineReader::new(response);
    let mut received = Vec::new();
    let outcome = loop {
        match reader.next().await {
            Ok(Some(line)) => received.push(line),
            other => break other,
        }
    };
    assert!(outcome.is_err(), "the body must fail, got {outcome:?}");
    assert_eq!(contents(&received).len(), 2);
    assert!(emulator.cancellations().is_empty(), "an injected drop is not a client cancellation");
    assert_eq!(emulator.completed_chats(), 0);
}

#[tokio::test]
async fn client_leaving_mid_stream_is_recorded_quickly() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs { per_token_delay: Duration::from_millis(200), tokens: Some(20), ..Knobs::default() },
        ..EmulatorConfig::default()
    })
    .await;
    let response = chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("x")})).await;
    let mut reader = LineReader::new(response);
    for _ in 0..3 {
        reader.next().await.unwrap().unwrap();
    }
    assert_eq!(emulator.in_flight_chats(), 1);
    let dropped_at = Instant::now();
    drop(reader);
    let cancellations = emulator.wait_for_cancellations(1, Duration::from_secs(2)).await;
    assert_eq!(cancellations.len(), 1);
    let cancellation = &cancellations[0];
    assert!(cancellation.at.duration_since(dropped_at) < Duration::from_millis(100), "noticed late");
    assert_eq!(cancellation.at_token, 3);
    assert_eq!(cancellation.path, "/api/chat");
    assert_eq!(cancellation.model, "llama3.2:1b");
    assert_eq!(emulator.in_flight_chats(), 0);
    assert_eq!(emulator.completed_chats(), 0);
}

#[tokio::test]
async fn client_leaving_before_the_first_token_is_recorded() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs { first_token_delay: Duration::from_secs(30), ..Knobs::default() },
        ..EmulatorConfig::default()
    })
    .await;
    let request = chat(&emulator, json!({"model": "qwen3:0.6b", "messages": user("x")}));
    assert!(tokio::time::timeout(Duration::from_millis(150), request).await.is_err());
    let left_at = Instant::now();
    let cancellations = emulator.wait_for_cancellations(1, Duration::from_secs(2)).await;
    assert_eq!(cancellations.len(), 1);
    assert_eq!(cancellations[0].at_token, 0);
    assert!(cancellations[0].at.duration_since(left_at) < Duration::from_millis(100));
}

#[tokio::test]
async fn hang_waits_until_the_client_gives_up() {
    let emulator =
        Emulator::start_with(EmulatorConfig { knobs: Knobs { hang: true, ..Knobs::default() }, ..EmulatorConfig::default() })
            .await;
    let body = json!({"model": "llama3.2:1b", "stream": false, "messages": user("x")});
    assert!(tokio::time::timeout(Duration::from_millis(200), chat(&emulator, body)).await.is_err());
    assert_eq!(emulator.wait_for_cancellations(1, Duration::from_secs(2)).await.len(), 1);
    assert_eq!(emulator.in_flight_chats(), 0);
}

#[tokio::test]
async fn knobs_change_for_later_requests() {
    let emulator = Emulator::start().await;
    assert!(emulator.knobs().reply.is_none());
    emulator.set_knobs(Knobs { reply: Some("changed".into()), ..Knobs::default() });
    let body: Value =
        chat(&emulator, json!({"model": "llama3.2:1b", "stream": false, "messages": user("x")})).await.json().await.unwrap();
    assert_eq!(body["message"]["content"], "changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs {
            first_token_delay: Duration::from_millis(50),
            per_token_delay: Duration::from_millis(20),
            tokens: Some(10),
            ..Knobs::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let client = client();
    let url = format!("{}/api/chat", emulator.base_url());
    let started = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let body = json!({"model": "llama3.2:1b", "messages": user(&format!("n{i}"))});
                let response = client.post(url).json(&body).send().await.unwrap();
                contents(&read_lines(response).await).len()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 10);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(emulator.completed_chats(), 1000);
    assert_eq!(emulator.in_flight_chats(), 0);
}

#[tokio::test]
async fn parallel_slots_queue_then_refuse() {
    let emulator = Emulator::start_with(EmulatorConfig {
        knobs: Knobs { parallel: Some(1), max_queue: Some(1), first_token_delay: Duration::from_millis(500), ..Knobs::default() },
        ..EmulatorConfig::default()
    })
    .await;
    let body = json!({"model": "llama3.2:1b", "stream": false, "messages": user("x")});
    let first = tokio::spawn(chat_owned(emulator.base_url(), body.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(chat_owned(emulator.base_url(), body.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = chat(&emulator, body).await;
    assert_eq!(third.status(), 503);
    assert_eq!(
        third.json::<Value>().await.unwrap()["error"],
        "server busy, please try again.  maximum pending requests exceeded"
    );
    let started = Instant::now();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    assert!(started.elapsed() >= Duration::from_millis(600), "the second waited for the first");
}

async fn chat_owned(base_url: String, body: Value) -> u16 {
    client().post(format!("{base_url}/api/chat")).json(&body).send().await.unwrap().status().as_u16()
}

// ---- pull and delete ---------------------------------------------------------------------------

#[tokio::test]
async fn pull_streams_progress_and_installs() {
    let emulator = Emulator::start().await;
    let started = Instant::now();
    let response = post(&emulator, "/api/pull", json!({"model": "tinyllama:latest"})).await;
    assert_eq!(content_type(&response), "application/x-ndjson");
    let lines = read_lines(response).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let statuses: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(statuses[0], "pulling manifest");
    assert_eq!(statuses[statuses.len() - 3..], ["verifying sha256 digest", "writing manifest", "success"]);
    assert_eq!(
        lines[1],
        json!({"status": "pulling 7d852460809b", "digest": format!("sha256:{}", ModelSpec::tinyllama().digest), "total": lines[1]["total"]})
    );
    let layer: Vec<&Value> = lines.iter().filter(|l| l["status"] == "pulling 7d852460809b").collect();
    let completed: Vec<u64> = layer.iter().filter_map(|l| l["completed"].as_u64()).collect();
    assert!(completed.len() >= 3 && completed.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*completed.last().unwrap(), layer[0]["total"].as_u64().unwrap());
    assert_eq!(emulator.models()[0], "tinyllama:latest");

    let quiet: Value = post(&emulator, "/api/pull", json!({"model": "tinyllama", "stream": false})).await.json().await.unwrap();
    assert_eq!(quiet, json!({"status": "success"}));
}

#[tokio::test]
async fn pull_of_an_unknown_model() {
    let emulator = Emulator::start().await;
    let streamed = post(&emulator, "/api/pull", json!({"model": "nonexistent-model:latest"})).await;
    assert_eq!(streamed.status(), 200);
    assert_eq!(
        streamed.text().await.unwrap(),
        "{\"status\":\"pulling manifest\"}\n{\"error\":\"pull model manifest: file does not exist\"}\n"
    );
    let whole = post(&emulator, "/api/pull", json!({"model": "nonexistent-model:latest", "stream": false})).await;
    assert_eq!(whole.status(), 500);
    assert_eq!(whole.json::<Value>().await.unwrap(), json!({"error": "pull model manifest: file does not exist"}));
    assert_eq!(emulator.models().len(), 2);
}

#[tokio::test]
async fn delete_then_not_found() {
    let emulator = Emulator::start().await;
    let url = format!("{}/api/delete", emulator.base_url());
    let deleted = client().delete(&url).json(&json!({"model": "llama3.2:1b"})).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(deleted.bytes().await.unwrap().is_empty());
    assert_eq!(emulator.models(), ["qwen3:0.6b"]);

    let again = client().delete(&url).json(&json!({"model": "llama3.2:1b"})).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"error": "model 'llama3.2:1b' not found"}));

    let chat_after = chat(&emulator, json!({"model": "llama3.2:1b", "messages": user("x")})).await;
    assert_eq!(chat_after.status(), 404);
}

#[tokio::test]
async fn shutdown_closes_even_pooled_connections() {
    let emulator = Emulator::start().await;
    let client = client();
    let url = format!("{}/api/version", emulator.base_url());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    emulator.shutdown().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(client.get(&url).send().await.is_err());
}
