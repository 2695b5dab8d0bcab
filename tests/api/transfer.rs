//! Export (`GET /chats/{id}/export`, `GET /chats/export`) and import (`POST /chats/import`).

use std::path::Path;

use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{Backend, Session, TestApp, TestResponse};

on_both_databases!(
    one_chat_exports_as_json_and_markdown,
    all_chats_export_as_ndjson_lines,
    an_export_imported_into_another_account_gives_the_same_chats,
    chatgpt_conversations_import_along_their_current_branch,
    open_webui_chats_import_along_their_current_branch,
    one_broken_chat_does_not_stop_the_others,
    wrong_content_is_refused,
    files_over_the_limits_are_refused,
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imports").join(name)).expect("fixture")
}

const BOUNDARY: &str = "----rovertchat-test-boundary";

/// A `multipart/form-data` body with `content` in the field `field`.
fn form(field: &str, content: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"export.json\"\r\nContent-Type: application/json\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(app: &TestApp, session: &Session, file: Vec<u8>) -> TestResponse {
    app.post("/chats/import")
        .session(session)
        .raw(&format!("multipart/form-data; boundary={BOUNDARY}"), form("file", &file))
        .send()
        .await
}

async fn import_raw(app: &TestApp, session: &Session, content_type: &str, file: Vec<u8>) -> TestResponse {
    app.post("/chats/import").session(session).raw(content_type, file).send().await
}

/// A message as compared: role, content, created_at.
type Said = (String, String, String);

/// Each chat of the user with its messages, newest activity first.
async fn chats_of(app: &TestApp, session: &Session) -> Vec<(Value, Vec<Said>)> {
    let list = app.get("/chats/my?include_archived=true&limit=100").session(session).send().await;
    let mut out = Vec::new();
    for chat in list.body["chats"].as_array().unwrap() {
        let full = app.get(&format!("/chats/chat/{}", chat["id"].as_str().unwrap())).session(session).send().await;
        let messages = full.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                    m["created_at"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        out.push((chat.clone(), messages));
    }
    out
}

async fn one_chat_exports_as_json_and_markdown(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&bob, Some("Zürich weekend 🚆")).await;
    app.post_message(&bob, &chat, "user", "Plan a weekend\nin Zürich").await;
    app.post_message(&bob, &chat, "assistant", "Take the train.").await;
    let shown = app.get(&format!("/chats/chat/{chat}")).session(&bob).send().await;

    let json = app.get(&format!("/chats/{chat}/export")).session(&bob).send().await;
    assert_eq!(json.status, 200);
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert_eq!(json.header("content-disposition"), Some("attachment; filename=\"zurich-weekend.json\""));
    assert_eq!(
        json.body,
        json!({"format": "rovertchat.chat.v1", "chat": shown.body["chat"], "messages": shown.body["messages"]})
    );
    assert_eq!(app.get(&format!("/chats/{chat}/export?format=json")).session(&bob).send().await.body, json.body);

    let markdown = app.get(&format!("/chats/{chat}/export?format=markdown")).session(&bob).send().await;
    assert_eq!(markdown.status, 200);
    assert_eq!(markdown.header("content-type"), Some("text/markdown; charset=utf-8"));
    assert_eq!(markdown.header("content-disposition"), Some("attachment; filename=\"zurich-weekend.md\""));
    let times: Vec<&str> = shown.body["messages"].as_array().unwrap().iter().map(|m| m["created_at"].as_str().unwrap()).collect();
    assert_eq!(
        markdown.body.as_str().unwrap(),
        format!(
            "# Zürich weekend 🚆\n\n**User** · {}\n\nPlan a weekend\nin Zürich\n\n**Assistant** · {}\n\nTake the train.\n",
            times[0], times[1]
        )
    );

    app.get(&format!("/chats/{chat}/export?format=pdf"))
        .session(&bob)
        .send()
        .await
        .assert_validation(&[("literal_error", json!(["query", "format"]))]);
    let (_, ann) = app.signed_up("ann_admin").await;
    app.get(&format!("/chats/{chat}/export")).session(&ann).send().await.assert_detail(404, "Chat not found");
    app.get(&format!("/chats/{chat}/export")).send().await.assert_detail(401, "Not authenticated");
}

async fn all_chats_export_as_ndjson_lines(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let (_, ann) = app.signed_up("ann_admin").await;
    app.new_chat(&ann, Some("Not Bob's")).await;
    let empty = app.get("/chats/export").session(&bob).send().await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body, Value::Null, "no chats, no lines");

    let mut ids = Vec::new();
    for n in 0..130 {
        let chat = app.new_chat(&bob, Some(&format!("chat {n}"))).await;
        if n % 50 == 0 {
            app.post_message(&bob, &chat, "user", &format!("message of chat {n}")).await;
        }
        ids.push(chat);
    }
    let response = app.client.get(app.url("/chats/export")).bearer_auth(&bob.access_token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.headers()["content-disposition"], "attachment; filename=\"rovertchat-chats.ndjson\"");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 130);
    assert!(text.ends_with('\n'));
    let mut exported: Vec<&str> = lines.iter().map(|l| l["chat"]["id"].as_str().unwrap()).collect();
    exported.sort();
    ids.sort();
    assert_eq!(exported, ids);
    let with_message = lines.iter().find(|l| l["chat"]["title"] == "chat 50").unwrap();
    assert_eq!(with_message["format"], "rovertchat.chat.v1");
    assert_eq!(with_message["messages"][0]["content"], "message of chat 50");
}

async fn an_export_imported_into_another_account_gives_the_same_chats(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let trip = app.new_chat(&bob, Some("Trip")).await;
    app.post_message(&bob, &trip, "user", "Where to?").await;
    app.post_message(&bob, &trip, "assistant", "Lisbon.").await;
    let cats = app.new_chat(&bob, Some("Cat names")).await;
    app.post_message(&bob, &cats, "user", "Names for a cat").await;
    app.patch(&format!("/chats/chat/{cats}")).session(&bob).json(&json!({"is_archived": true})).send().await;
    app.new_chat(&bob, None).await;
    let export = app.get("/chats/export").session(&bob).send().await;
    let ndjson = match &export.body {
        Value::String(text) => text.clone(),
        other => format!("{other}\n"),
    };

    let (ann_user, ann) = app.signed_up("ann_admin").await;
    let imported = import_raw(&app, &ann, "application/x-ndjson", ndjson.clone().into_bytes()).await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(imported.body["imported"], 3);
    assert_eq!(imported.body["skipped"], 0);
    assert_eq!(imported.body["failed"], json!([]));
    assert_eq!(imported.body["chat_ids"].as_array().unwrap().len(), 3);

    let strip = |chats: Vec<(Value, Vec<Said>)>| {
        let mut kept: Vec<(Value, Value, Vec<Said>)> =
            chats.into_iter().map(|(c, m)| (c["title"].clone(), c["is_archived"].clone(), m)).collect();
        kept.sort_by_key(|(title, _, _)| title.to_string());
        kept
    };
    let anns = chats_of(&app, &ann).await;
    assert!(anns.iter().all(|(c, _)| c["user_id"] == ann_user["id"]), "imported chats belong to the importer");
    assert!(anns.iter().all(|(c, _)| c["id"] != trip.as_str() && c["id"] != cats.as_str()), "under new ids");
    assert_eq!(strip(anns), strip(chats_of(&app, &bob).await));

    // Again, as a JSON list this time: nothing new. Bob's own export is his already.
    let list = Value::Array(ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect());
    let again = app.post("/chats/import").session(&ann).json(&list).send().await;
    assert_eq!((again.body["imported"].clone(), again.body["skipped"].clone()), (json!(0), json!(3)));
    let own = import_raw(&app, &bob, "application/x-ndjson", ndjson.into_bytes()).await;
    assert_eq!((own.body["imported"].clone(), own.body["skipped"].clone()), (json!(0), json!(3)));
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 6);
}

async fn chatgpt_conversations_import_along_their_current_branch(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let response = upload(&app, &bob, fixture("chatgpt-conversations.json")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["imported"], 2);
    assert_eq!(response.body["failed"], json!([]));

    let chats = chats_of(&app, &bob).await;
    let (bread, messages) = chats.iter().find(|(c, _)| c["title"] == "Sourdough starter help").unwrap();
    assert_eq!(bread["is_archived"], false);
    assert_eq!(bread["created_at"], "2024-06-10T06:13:20.123456Z");
    assert_eq!(bread["updated_at"], "2024-06-10T06:28:20.500000Z");
    let roles: Vec<&str> = messages.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(messages[0].2, "2024-06-10T06:13:30.000000Z");
    assert_eq!(messages[2].1, "Which flour is best for feeding it — rye or whole wheat?");
    assert!(messages[3].1.contains("Café tip"));
    assert!(messages.iter().all(|(_, content, _)| content != "What flour?" && content != "Any wheat flour works."));
    let answer = app.get(&format!("/chats/chat/{}", bread["id"].as_str().unwrap())).session(&bob).send().await;
    assert_eq!(answer.body["messages"][1]["extended_metadata"], json!({"model": "gpt-4o"}));

    let (haiku, messages) = chats.iter().find(|(c, _)| c["title"] == "Haiku about Rust").unwrap();
    assert_eq!(haiku["is_archived"], true);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].1, "Lifetimes intertwine\nthe compiler guards your refs\nno data race tonight");

    // Found at once, accents and all.
    let found = app.get("/chats/search?q=caf%C3%A9").session(&bob).send().await;
    assert_eq!(found.body["total"], 1);
    assert!(found.body["results"][0]["snippet"].as_str().unwrap().contains("<mark>Café</mark> tip"));

    let again = upload(&app, &bob, fixture("chatgpt-conversations.json")).await;
    assert_eq!(again.body, json!({"imported": 0, "skipped": 2, "failed": [], "chat_ids": []}));
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 6);
}

async fn open_webui_chats_import_along_their_current_branch(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let response = import_raw(&app, &bob, "application/json", fixture("open-webui-chats.json")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["imported"], 2);

    let chats = chats_of(&app, &bob).await;
    let (zurich, messages) = chats.iter().find(|(c, _)| c["title"] == "Zürich by train").unwrap();
    assert_eq!(zurich["created_at"], "2024-07-03T09:46:40.000000Z");
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[3].1, "Day 3: the Swiss National Museum, then fondue in Niederdorf.");
    assert_eq!(messages[3].2, "2024-07-03T09:49:20.000000Z");
    assert!(messages.iter().all(|(_, content, _)| content != "Visit the Kunsthaus."));
    let (boiling, _) = chats.iter().find(|(c, _)| c["title"] == "Boiling point at altitude").unwrap();
    let full = app.get(&format!("/chats/chat/{}", boiling["id"].as_str().unwrap())).session(&bob).send().await;
    assert_eq!(full.body["messages"][1]["extended_metadata"], json!({"model": "qwen3:0.6b"}));

    let again = upload(&app, &bob, fixture("open-webui-chats.json")).await;
    assert_eq!((again.body["imported"].clone(), again.body["skipped"].clone()), (json!(0), json!(2)));
    // Another account imports the same file for itself.
    let (_, ann) = app.signed_up("ann_admin").await;
    assert_eq!(upload(&app, &ann, fixture("open-webui-chats.json")).await.body["imported"], 2);
}

async fn one_broken_chat_does_not_stop_the_others(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let mut file: Vec<Value> = serde_json::from_slice(&fixture("chatgpt-conversations.json")).unwrap();
    let mut broken = file[0].clone();
    broken["id"] = json!("broken-1");
    broken["title"] = json!("Broken one");
    broken["mapping"] = json!("not a tree");
    file.insert(1, broken);
    file.push(json!(42));
    let response = app.post("/chats/import").session(&bob).json(&Value::Array(file)).send().await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["imported"], 2);
    let failed = response.body["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["index"], 1);
    assert_eq!(failed[0]["title"], "Broken one");
    assert!(failed[0]["detail"].as_str().unwrap().starts_with("Not a valid ChatGPT conversation"), "{}", failed[0]);
    assert_eq!(failed[1]["index"], 3);
    assert_eq!(failed[1]["title"], Value::Null);
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 2);

    // NDJSON with a line that is not JSON.
    let line = |title: &str, id: &str| {
        json!({"format": "rovertchat.chat.v1", "chat": {"id": id, "title": title}, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };
    let ndjson = format!("{}\n{{oops\n{}\n", line("first", "a"), line("second", "b"));
    let response = import_raw(&app, &bob, "application/x-ndjson", ndjson.into_bytes()).await;
    assert_eq!(response.body["imported"], 2);
    assert_eq!(response.body["failed"][0]["index"], 1);
    let bad_role =
        json!([{"format": "rovertchat.chat.v1", "chat": {"title": "x"}, "messages": [{"role": "robot", "content": "hi"}]}]);
    let response = app.post("/chats/import").session(&bob).json(&bad_role).send().await;
    assert_eq!(response.body["failed"][0]["detail"], "Unknown message role 'robot'");
}

async fn wrong_content_is_refused(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    for (body, kind) in [
        (&b"hello, world"[..], "import_format"),
        (b"[1, 2, 3]", "import_format"),
        (b"{\"some\": \"object\"}", "import_format"),
        (b"[{\"title\": \"x\"", "json_invalid"),
        (b"{\"title\": \n", "json_invalid"),
        (b"\xff\xfe", "import_format"),
        (b"", "import_format"),
    ] {
        import_raw(&app, &bob, "application/json", body.to_vec()).await.assert_validation(&[(kind, json!(["body"]))]);
    }
    let response = app
        .post("/chats/import")
        .session(&bob)
        .raw(&format!("multipart/form-data; boundary={BOUNDARY}"), form("other", b"[]"))
        .send()
        .await;
    response.assert_validation(&[("missing", json!(["body", "file"]))]);
    let response = app.post("/chats/import").session(&bob).raw("multipart/form-data; boundary=x", "garbage").send().await;
    response.assert_validation(&[("multipart_invalid", json!(["body"]))]);
    assert_eq!(upload(&app, &bob, b"[]".to_vec()).await.body, json!({"imported": 0, "skipped": 0, "failed": [], "chat_ids": []}));
    app.post("/chats/import").raw("application/json", "[]").send().await.assert_detail(401, "Not authenticated");
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 0);
}

async fn files_over_the_limits_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("MAX_BODY_BYTES", "65536".into())]).await;
    let (_, bob) = app.signed_up("bob_user").await;
    let large = format!("[{}\"x\"]", "\"x\",".repeat(20_000)).into_bytes();
    import_raw(&app, &bob, "application/json", large.clone()).await.assert_detail(413, "Request body too large");
    upload(&app, &bob, large).await.assert_detail(413, "Request body too large");
    // A file of exactly the limit fits in a form.
    let exact = format!("[{}]", " ".repeat(65536 - 2)).into_bytes();
    assert_eq!(upload(&app, &bob, exact).await.status, 200);

    let many = format!("[{}{{}}]", "{},".repeat(10_000)).into_bytes();
    let response = import_raw(&app, &bob, "application/json", many).await;
    response.assert_validation(&[("too_long", json!(["body"]))]);
    assert!(response.body["detail"][0]["msg"].as_str().unwrap().contains("10001 chats"), "{}", response.body);
}
