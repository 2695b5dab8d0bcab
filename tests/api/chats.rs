use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::TestApp;

on_both_databases!(
    chats_are_created_listed_and_paged,
    chats_are_renamed_and_archived,
    a_chat_opens_with_its_messages_in_order,
    messages_are_validated_and_edited,
    bulk_delete_removes_only_own_messages,
    deleting_chats_removes_their_messages,
    other_users_chats_look_missing_on_every_route,
    malformed_ids_answer_422,
    seed_readme_routes_are_aliases,
    model_catalog_lists_registered_models,
    deleting_a_missing_message_changes_nothing,
);

async fn chats_are_created_listed_and_paged(app: TestApp) {
    let (bob, s) = app.signed_up("bob_user").await;
    let created = app.post("/chats/my").session(&s).send().await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["title"], "New Chat");
    assert_eq!(created.body["user_id"], bob["id"]);
    assert_eq!(created.body["is_archived"], false);
    let keys: Vec<&str> = created.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "user_id", "title", "is_archived", "created_at", "updated_at"]);
    assert_eq!(app.post("/chats/my").session(&s).json(&json!({"title": ""})).send().await.body["title"], "New Chat");
    let titled = app.new_chat(&s, Some("Trip planning")).await;
    app.post("/chats/my")
        .session(&s)
        .json(&json!({"title": 123}))
        .send()
        .await
        .assert_validation(&[("string_type", json!(["body", "title"]))]);
    app.post("/chats/my")
        .session(&s)
        .json(&json!({"title": "t".repeat(300)}))
        .send()
        .await
        .assert_validation(&[("string_too_long", json!(["body", "title"]))]);

    // Newest activity first: a message moves a chat to the top.
    let oldest = created.body["id"].as_str().unwrap();
    app.post_message(&s, oldest, "user", "bump").await;
    let list = app.get("/chats/my").session(&s).send().await;
    assert_eq!(list.body["total"], 3);
    assert_eq!(list.body["skip"], 0);
    assert_eq!(list.body["limit"], 20);
    assert_eq!(list.body["chats"][0]["id"], oldest);
    assert_eq!(list.body["chats"][1]["id"], titled.as_str());

    let page = app.get("/chats/my?skip=1&limit=1").session(&s).send().await;
    assert_eq!(page.body["total"], 3);
    assert_eq!(page.body["chats"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["chats"][0]["id"], titled.as_str());
    app.get("/chats/my?limit=-1")
        .session(&s)
        .send()
        .await
        .assert_validation(&[("greater_than_equal", json!(["query", "limit"]))]);
    app.get("/chats/my?limit=101").session(&s).send().await.assert_validation(&[("less_than_equal", json!(["query", "limit"]))]);
    app.get("/chats/my?include_archived=maybe")
        .session(&s)
        .send()
        .await
        .assert_validation(&[("bool_parsing", json!(["query", "include_archived"]))]);
    app.get("/chats/my").send().await.assert_detail(401, "Not authenticated");
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 3);
}

async fn chats_are_renamed_and_archived(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    let other = app.new_chat(&s, None).await;
    let path = format!("/chats/chat/{chat}");
    let before = app.get(&path).session(&s).send().await.body["chat"].clone();

    let unchanged = app.patch(&path).session(&s).json(&json!({})).send().await;
    assert_eq!(unchanged.body, before);
    let renamed = app.patch(&path).session(&s).json(&json!({"title": "Trip to Lisbon"})).send().await;
    assert_eq!(renamed.body["title"], "Trip to Lisbon");
    assert!(renamed.body["updated_at"].as_str() > before["updated_at"].as_str());
    app.patch(&path)
        .session(&s)
        .json(&json!({"title": ""}))
        .send()
        .await
        .assert_validation(&[("string_too_short", json!(["body", "title"]))]);
    // One rule for titles, on create and on rename: 1 to 255 characters (the column's size).
    let long = app.patch(&path).session(&s).json(&json!({"title": "x".repeat(255)})).send().await;
    assert_eq!((long.status.as_u16(), long.body["title"].as_str().map(str::len)), (200, Some(255)), "{}", long.body);
    let too_long = app.patch(&path).session(&s).json(&json!({"title": "x".repeat(256)})).send().await;
    too_long.assert_validation(&[("string_too_long", json!(["body", "title"]))]);
    assert_eq!(too_long.body["detail"][0]["ctx"], json!({"max_length": 255}));
    let created = app.post("/chats/my").session(&s).json(&json!({"title": "y".repeat(256)})).send().await;
    assert_eq!(created.body["detail"][0]["ctx"], too_long.body["detail"][0]["ctx"]);

    let archived = app.patch(&format!("/chats/chat/{other}")).session(&s).json(&json!({"is_archived": true})).send().await;
    assert_eq!(archived.body["is_archived"], true);
    let visible = app.get("/chats/my").session(&s).send().await;
    assert_eq!(visible.body["total"], 1);
    let all = app.get("/chats/my?include_archived=true").session(&s).send().await;
    assert_eq!(all.body["total"], 2);
    assert_eq!(all.body["chats"][0]["id"], other.as_str());
}

async fn a_chat_opens_with_its_messages_in_order(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    let first = app.post_message(&s, &chat, "user", "Hello there").await;
    let keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        &keys[..9],
        ["id", "chat_id", "role", "content", "images", "model_id", "created_at", "tokens_used", "extended_metadata"]
    );
    assert_eq!(first["tokens_used"], 0);
    assert_eq!(first["images"], Value::Null);
    app.post_message(&s, &chat, "assistant", "I am an assistant message stored by the client").await;
    let unicode = app
        .post(&format!("/chats/{chat}/messages"))
        .session(&s)
        .json(&json!({"role": "user", "content": "Ünïcödé ✓ 🚀\nsecond line", "images": ["aGVsbG8="]}))
        .send()
        .await;
    assert_eq!(unicode.body["content"], "Ünïcödé ✓ 🚀\nsecond line");
    assert_eq!(unicode.body["images"], json!(["aGVsbG8="]));

    let opened = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await;
    let contents: Vec<&str> =
        opened.body["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["Hello there", "I am an assistant message stored by the client", "Ünïcödé ✓ 🚀\nsecond line"]);
    assert_eq!(opened.body["chat"]["id"], chat.as_str());
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 3);
}

async fn messages_are_validated_and_edited(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    let messages = format!("/chats/{chat}/messages");
    app.post(&messages)
        .session(&s)
        .json(&json!({"role": "user"}))
        .send()
        .await
        .assert_validation(&[("missing", json!(["body", "content"]))]);
    app.post(&messages)
        .session(&s)
        .json(&json!({"role": "bot", "content": "hi"}))
        .send()
        .await
        .assert_validation(&[("literal_error", json!(["body", "role"]))]);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);

    let user_message = app.post_message(&s, &chat, "user", "Hello there").await;
    let assistant = app.post_message(&s, &chat, "assistant", "Hi!").await;
    let path = format!("{messages}/{}", user_message["id"].as_str().unwrap());
    let updated_before = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["chat"]["updated_at"].clone();

    let got = app.get(&path).session(&s).send().await;
    assert_eq!(got.body, user_message);
    let edited = app
        .patch(&path)
        .session(&s)
        .json(&json!({"content": "Hello there (edited)", "extended_metadata": {"edited": true}}))
        .send()
        .await;
    assert_eq!(edited.body["content"], "Hello there (edited)");
    assert_eq!(edited.body["extended_metadata"], json!({"edited": true}));
    assert_eq!(edited.body["created_at"], user_message["created_at"]);
    let updated_after = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["chat"]["updated_at"].clone();
    assert!(updated_after.as_str() > updated_before.as_str(), "editing moves the chat's updated_at");

    app.patch(&path)
        .session(&s)
        .json(&json!({"content": ""}))
        .send()
        .await
        .assert_validation(&[("string_too_short", json!(["body", "content"]))]);
    app.patch(&format!("{messages}/{}", assistant["id"].as_str().unwrap()))
        .session(&s)
        .json(&json!({"content": "x"}))
        .send()
        .await
        .assert_detail(403, "Only user messages can be edited");
    let missing = format!("{messages}/{}", uuid::Uuid::new_v4());
    app.get(&missing).session(&s).send().await.assert_detail(404, "Message not found");
    app.patch(&missing).session(&s).json(&json!({"content": "x"})).send().await.assert_detail(404, "Message not found");

    let deleted = app.delete(&path).session(&s).send().await;
    assert_eq!(
        deleted.body,
        json!({"success": true, "message": "Message deleted successfully", "deleted_message_id": user_message["id"]})
    );
    app.delete(&path).session(&s).send().await.assert_detail(404, "Message not found");
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 1);

    // A message of another chat of the same user is not found through this chat.
    let other_chat = app.new_chat(&s, None).await;
    app.get(&format!("/chats/{other_chat}/messages/{}", assistant["id"].as_str().unwrap()))
        .session(&s)
        .send()
        .await
        .assert_detail(404, "Message not found");
}

async fn bulk_delete_removes_only_own_messages(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let (_, eve) = app.signed_up("eve_other").await;
    let chat = app.new_chat(&bob, None).await;
    let other_chat = app.new_chat(&bob, None).await;
    let eves_chat = app.new_chat(&eve, None).await;
    let a = app.post_message(&bob, &chat, "user", "one").await["id"].clone();
    let b = app.post_message(&bob, &chat, "assistant", "two").await["id"].clone();
    let keep = app.post_message(&bob, &chat, "user", "three").await["id"].clone();
    let elsewhere = app.post_message(&bob, &other_chat, "user", "other chat").await["id"].clone();
    let eves = app.post_message(&eve, &eves_chat, "user", "eve's").await["id"].clone();
    let missing = json!(uuid::Uuid::new_v4());

    let response = app
        .delete(&format!("/chats/{chat}/messages/bulk"))
        .session(&bob)
        .json(&json!({"message_ids": [a, b, elsewhere, eves, missing]}))
        .send()
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["deleted_count"], 2);
    assert_eq!(response.body["success"], false);
    let mut failed: Vec<Value> = response.body["failed_deletions"].as_array().unwrap().clone();
    let mut expected = vec![elsewhere.clone(), eves.clone(), missing];
    failed.sort_by_key(|v| v.to_string());
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(failed, expected);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 3);
    let remaining = app.get(&format!("/chats/chat/{chat}")).session(&bob).send().await;
    assert_eq!(remaining.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(remaining.body["messages"][0]["id"], keep);

    // Eve cannot bulk-delete in Bob's chat.
    app.delete(&format!("/chats/{chat}/messages/bulk"))
        .session(&eve)
        .json(&json!({"message_ids": [keep]}))
        .send()
        .await
        .assert_detail(404, "Chat not found");
    app.delete(&format!("/chats/{chat}/messages/bulk"))
        .session(&bob)
        .json(&json!({"message_ids": ["nope"]}))
        .send()
        .await
        .assert_validation(&[("uuid_parsing", json!(["body", "message_ids"]))]);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 3);
}

async fn deleting_chats_removes_their_messages(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let (_, eve) = app.signed_up("eve_other").await;
    let chat = app.new_chat(&bob, None).await;
    app.post_message(&bob, &chat, "user", "hi").await;
    let eves_chat = app.new_chat(&eve, None).await;
    app.post_message(&eve, &eves_chat, "user", "eve's").await;

    let deleted = app.delete(&format!("/chats/chat/{chat}")).session(&bob).send().await;
    assert_eq!(deleted.body, json!({"success": true, "message": "Chat and all messages deleted"}));
    app.delete(&format!("/chats/chat/{chat}")).session(&bob).send().await.assert_detail(404, "Chat not found");

    for _ in 0..2 {
        let c = app.new_chat(&bob, None).await;
        app.post_message(&bob, &c, "user", "x").await;
    }
    let all = app.delete("/chats/my").session(&bob).send().await;
    assert_eq!(all.body, json!({"success": true, "message": "All chats deleted"}));
    assert_eq!(app.get("/chats/my").session(&bob).send().await.body, json!({"total": 0, "chats": [], "skip": 0, "limit": 20}));
    // Eve's chat and message are untouched.
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 1);
}

async fn other_users_chats_look_missing_on_every_route(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let (_, eve) = app.signed_up("eve_other").await;
    let chat = app.new_chat(&bob, Some("Bob's")).await;
    let message = app.post_message(&bob, &chat, "user", "secret").await["id"].as_str().unwrap().to_owned();
    let m = format!("/chats/{chat}/messages/{message}");
    let calls = [
        app.get(&format!("/chats/chat/{chat}")),
        app.patch(&format!("/chats/chat/{chat}")).json(&json!({"title": "mine now"})),
        app.delete(&format!("/chats/chat/{chat}")),
        app.post(&format!("/chats/{chat}/messages")).json(&json!({"role": "user", "content": "hi"})),
        app.get(&m),
        app.patch(&m).json(&json!({"content": "x"})),
        app.delete(&m),
        app.delete(&format!("/chats/{chat}/messages/bulk")).json(&json!({"message_ids": [message]})),
        app.post(&format!("/chats/{chat}/completions")).json(&json!({"model": "llama3.2:1b", "content": "hi"})),
        app.post(&format!("/chats/{chat}/stop")),
        app.get(&format!("/chats/{chat}/generation")),
        app.post("/ollama/chat")
            .json(&json!({"model": "llama3.2:1b", "chatId": chat, "messages": [{"role": "user", "content": "hi"}]})),
        app.get(&format!("/chat/conversations/{chat}/messages")),
        app.delete(&format!("/chat/conversations/{chat}")),
    ];
    for call in calls {
        call.session(&eve).send().await.assert_detail(404, "Chat not found");
    }
    let opened = app.get(&format!("/chats/chat/{chat}")).session(&bob).send().await;
    assert_eq!(opened.body["chat"]["title"], "Bob's");
    assert_eq!(opened.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(app.emulator.chat_requests().len(), 0);
}

async fn malformed_ids_answer_422(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.get("/chats/chat/1234").session(&s).send().await.assert_validation(&[("uuid_parsing", json!(["path", "chat_id"]))]);
    app.post("/chats/nope/messages")
        .session(&s)
        .json(&json!({"role": "user", "content": "hi"}))
        .send()
        .await
        .assert_validation(&[("uuid_parsing", json!(["path", "chat_id"]))]);
    app.get(&format!("/chats/{chat}/messages/xyz"))
        .session(&s)
        .send()
        .await
        .assert_validation(&[("uuid_parsing", json!(["path", "message_id"]))]);
    app.get("/chats/x/messages/y")
        .session(&s)
        .send()
        .await
        .assert_validation(&[("uuid_parsing", json!(["path", "chat_id"])), ("uuid_parsing", json!(["path", "message_id"]))]);
}

async fn seed_readme_routes_are_aliases(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let created = app.post("/chat/conversations").session(&s).json(&json!({"title": "Via alias"})).send().await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap();
    let listed = app.get("/chat/conversations").session(&s).send().await;
    assert_eq!(listed.body["chats"][0]["id"], id);
    let posted = app
        .post(&format!("/chat/conversations/{id}/messages"))
        .session(&s)
        .json(&json!({"role": "user", "content": "hello"}))
        .send()
        .await;
    assert_eq!(posted.status, 200);
    let messages = app.get(&format!("/chat/conversations/{id}/messages")).session(&s).send().await;
    assert_eq!(messages.body["messages"][0]["content"], "hello");
    let deleted = app.delete(&format!("/chat/conversations/{id}")).session(&s).send().await;
    assert_eq!(deleted.status, 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM chats").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM messages").await, 0);
}

async fn model_catalog_lists_registered_models(app: TestApp) {
    let (_, ann) = app.signed_up("admin_ann").await;
    let (_, s) = app.signed_up("bob_user").await;
    let empty = app.get("/chats/models").session(&s).send().await;
    // The provider of OLLAMA_BASE_URL; only admins see its address.
    let provider = &empty.body["providers"][0];
    assert_eq!(empty.body["models"], json!([]));
    assert_eq!((provider["name"].as_str(), provider["api_url"].as_str()), (Some("default"), Some("")));
    let seen_by_admin = app.get("/chats/models").session(&ann).send().await;
    assert_eq!(seen_by_admin.body["providers"][0]["api_url"], app.emulator.base_url());
    app.get("/chats/models").send().await.assert_detail(401, "Not authenticated");
}

async fn deleting_a_missing_message_changes_nothing(app: TestApp) {
    let (_, s) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&s, None).await;
    app.post_message(&s, &chat, "user", "hello").await;
    let before = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["chat"]["updated_at"].clone();
    let missing = uuid::Uuid::new_v4();
    app.delete(&format!("/chats/{chat}/messages/{missing}")).session(&s).send().await.assert_detail(404, "Message not found");
    let bulk = app
        .delete(&format!("/chats/{chat}/messages/bulk"))
        .session(&s)
        .json(&serde_json::json!({"message_ids": [missing]}))
        .send()
        .await;
    assert_eq!(bulk.body["deleted_count"], 0, "{}", bulk.body);
    let after = app.get(&format!("/chats/chat/{chat}")).session(&s).send().await.body["chat"]["updated_at"].clone();
    assert_eq!(after, before, "a delete that deleted nothing leaves the chat's updated_at");
}
