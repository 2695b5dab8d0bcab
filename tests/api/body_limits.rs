//! Request bodies cost memory in proportion to what their route needs, whatever is sent.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::process::ServerProcess;
use crate::support::TestApp;

/// `{"<field>": [[],[],...]}`-style JSON of about `bytes` bytes: the parsed form of such a body
/// is many times its size.
fn empty_lists_json(prefix: &str, bytes: usize) -> String {
    let mut body = String::with_capacity(bytes + 64);
    body.push_str(prefix);
    body.push('[');
    while body.len() < bytes {
        body.push_str("[],");
    }
    body.push_str("[]]}");
    body
}

/// A form of about `bytes` bytes of distinct empty fields.
fn empty_fields_form(bytes: usize) -> String {
    let mut body = String::from("username=x&password=y");
    let mut i = 0;
    while body.len() < bytes {
        body.push_str(&format!("&f{i}="));
        i += 1;
    }
    body
}

/// The body as a stream without a length, so the server must read it to know its size.
fn streamed(body: String) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.into_bytes().chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_parallel_worst_case_bodies_on_each_route_stay_under_300_mb() {
    let server = ServerProcess::start(&[]);
    let client = reqwest::Client::new();
    let token = server.sign_up("bob_user");
    let chat: Value = client.post(server.url("/chats/my")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let chat_id = chat["id"].as_str().unwrap().to_owned();

    const BODY: usize = 8 * 1024 * 1024;
    let routes: Vec<(reqwest::Method, String, &str, String)> = vec![
        (
            reqwest::Method::POST,
            "/auth/register".into(),
            "application/json",
            empty_lists_json("{\"username\":\"x\",\"extended\":", BODY),
        ),
        (reqwest::Method::POST, "/auth/login".into(), "application/x-www-form-urlencoded", empty_fields_form(BODY)),
        (
            reqwest::Method::PUT,
            "/user-settings/me".into(),
            "application/json",
            empty_lists_json("{\"preferences\":{\"a\":", BODY),
        ),
        (
            reqwest::Method::POST,
            format!("/chats/{chat_id}/messages"),
            "application/json",
            empty_lists_json("{\"role\":\"user\",\"content\":\"x\",\"extended\":", BODY),
        ),
        (
            reqwest::Method::POST,
            format!("/chats/{chat_id}/completions"),
            "application/json",
            empty_lists_json("{\"model\":\"llama3.2:1b\",\"extended\":", BODY),
        ),
    ];
    for (method, path, content_type, body) in routes {
        let calls = (0..16).map(|i| {
            let request =
                client.request(method.clone(), server.url(&path)).bearer_auth(&token).header("content-type", content_type);
            // Half declare their length, half make the server read to find out.
            let request = if i % 2 == 0 { request.body(body.clone()) } else { request.body(streamed(body.clone())) };
            request.send()
        });
        // Message routes take bodies this large: each one is read, then refused for its content.
        let within_limit = path.starts_with("/chats/");
        for response in join_all(calls).await {
            // Refused before it was read: the server answered and closed while the body was sent.
            let Ok(response) = response else {
                assert!(!within_limit, "{path}: {response:?}");
                continue;
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(status == 413 || status == 422, "{path}: {status} {}", &text[..text.len().min(300)]);
            assert!(text.len() < 16 * 1024, "{path}: a {} byte answer", text.len());
        }
    }
    let peak_mib = server.memory_kib("VmHWM") / 1024;
    eprintln!("peak RSS after 80 worst-case bodies: {peak_mib} MiB");
    assert!(peak_mib < 300, "peak RSS {peak_mib} MiB");
}

on_both_databases!(refusals_are_small_and_limits_follow_the_route);

async fn refusals_are_small_and_limits_follow_the_route(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    let messages = format!("/chats/{chat}/messages");

    // A missing field echoes the input, cut short: never the whole body back.
    let long = "y".repeat(1024 * 1024);
    let missing_role = app.post(&messages).session(&s).json(&json!({"content": long})).send().await;
    assert_eq!(missing_role.status, 422, "{}", missing_role.body);
    assert_eq!(missing_role.body["detail"][0]["type"], "missing");
    let echoed = missing_role.body["detail"][0]["input"]["content"].as_str().unwrap();
    assert!(echoed.chars().count() <= 1_001 && echoed.ends_with('…'), "{} chars", echoed.len());
    assert!(missing_role.body.to_string().len() < 4096);

    // A message may be long; credentials, settings and chat fields may not.
    let ok = app.post(&messages).session(&s).json(&json!({"role": "user", "content": long})).send().await;
    assert_eq!(ok.status, 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 1);
    let padding = "p".repeat(20 * 1024);
    app.post("/auth/register")
        .json(&json!({"username": "carol_user", "email": "carol@example.com", "password": "Correct-horse-1", "x": padding}))
        .send()
        .await
        .assert_detail(413, "Request body too large");
    app.post("/auth/login")
        .form(&[("username", "bob_user"), ("password", "Correct-horse-1"), ("x", padding.as_str())])
        .send()
        .await
        .assert_detail(413, "Request body too large");
    app.patch(&format!("/chats/chat/{chat}"))
        .session(&s)
        .json(&json!({"title": "t", "x": padding}))
        .send()
        .await
        .assert_detail(413, "Request body too large");
    let big_preferences = json!({"preferences": {"notes": "n".repeat(300 * 1024)}});
    app.put("/user-settings/me").session(&s).json(&big_preferences).send().await.assert_detail(413, "Request body too large");
    let fine_preferences = json!({"preferences": {"notes": "n".repeat(100 * 1024)}});
    assert_eq!(app.put("/user-settings/me").session(&s).json(&fine_preferences).send().await.status, 200);

    // Within the byte limit, a body of countless tiny values is refused before it is parsed.
    let many = json!({"role": "user", "content": "x", "extended_metadata": {"v": vec![0; 30_000]}});
    let refused = app.post(&messages).session(&s).json(&many).send().await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.body["detail"][0]["type"], "too_many_values");
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 1);
}
