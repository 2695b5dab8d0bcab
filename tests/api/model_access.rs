//! Who may use which model: policies (enabled, roles, grants, defaults) on every way in, and
//! the model lists.

use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{Session, StreamReader, TestApp};

on_both_databases!(
    the_policy_decides_on_every_way_in,
    model_lists_show_only_usable_models,
    admins_list_and_change_policies,
    a_model_applies_its_default_system_prompt_and_options,
);

const MODEL: &str = "qwen3:0.6b";

/// How each way in answers `session` asking `MODEL`: (chat completions, /ollama/chat, /v1).
async fn statuses(app: &TestApp, session: &Session, key: &str) -> [u16; 3] {
    let chat = app.new_chat(session, None).await;
    let completions = StreamReader::open(
        app.post(&format!("/chats/{chat}/completions"))
            .session(session)
            .json(&json!({"model": MODEL, "content": "hi", "think": false})),
    )
    .await;
    let completions = completions.status.as_u16();
    app.wait_until_no_generation(session, &chat).await;
    let ollama = app
        .post("/ollama/chat")
        .session(session)
        .json(&json!({"model": MODEL, "chatId": chat, "think": false, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    if ollama.status == 403 {
        assert_eq!(ollama.body, json!({"detail": format!("You may not use model {MODEL}")}));
    }
    let v1 = app
        .openai(Method::POST, "/chat/completions", key)
        .json(&json!({"model": MODEL, "reasoning_effort": "none", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    [completions, ollama.status.as_u16(), v1.status.as_u16()]
}

async fn put_policy(app: &TestApp, admin: &Session, body: Value) -> Value {
    let response = app.put(&format!("/admin/models/{}", MODEL.replace(':', "%3A"))).session(admin).json(&body).send().await;
    assert_eq!(response.status, 200, "{body}: {}", response.body);
    response.body
}

async fn the_policy_decides_on_every_way_in(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (bob, bob_s) = app.signed_up("bob_user").await;
    let (_, carl_s) = app.signed_up("carl_user").await;
    let (gina, gina_s) = app.guest_made_by(&admin, "gina_guest").await;
    let keys = [
        app.api_key(&admin, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned(),
        app.api_key(&bob_s, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned(),
        app.api_key(&carl_s, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned(),
        app.api_key(&gina_s, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned(),
    ];
    let sessions = [&admin, &bob_s, &carl_s, &gina_s];
    // admin, bob (a user, granted below), carl (a user), gina (a guest, granted last)
    let cases: [(&str, Value, [bool; 4]); 5] = [
        ("no row: admins and users", Value::Null, [true, true, true, false]),
        ("guests only (admins always)", json!({"allowed_roles": ["guest"]}), [true, false, false, true]),
        ("one person", json!({"allowed_roles": [], "user_ids": [bob["id"]]}), [true, true, false, false]),
        ("disabled", json!({"enabled": false, "allowed_roles": ["user", "guest"]}), [true, false, false, false]),
        ("enabled again, a guest granted", json!({"enabled": true, "user_ids": [gina["id"]]}), [true, true, true, true]),
    ];
    for (case, policy, expected) in cases.clone() {
        if !policy.is_null() {
            put_policy(&app, &admin, policy).await;
        }
        for (i, allowed) in expected.iter().enumerate() {
            let got = statuses(&app, sessions[i], &keys[i]).await;
            let want = if *allowed { [200, 200, 200] } else { [403, 403, 403] };
            assert_eq!(got, want, "{case}: caller {i}");
        }
    }
    // Refusals come before the upstream: it saw only the allowed calls (3 per allowed caller).
    let allowed = cases.iter().flat_map(|(_, _, expected)| expected).filter(|allowed| **allowed).count();
    assert_eq!(app.emulator.chat_requests().len(), allowed * 3);
}

async fn model_lists_show_only_usable_models(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (gina, gina_s) = app.guest_made_by(&admin, "gina_guest").await;
    let (_, bob_s) = app.signed_up("bob_user").await;
    let names = |tags: &Value| -> Vec<String> {
        tags["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(
        names(&app.get("/ollama/tags").session(&gina_s).send().await.body),
        Vec::<String>::new(),
        "guests see nothing by default"
    );
    assert_eq!(names(&app.get("/ollama/tags").session(&bob_s).send().await.body), ["llama3.2:1b", "qwen3:0.6b"]);

    put_policy(&app, &admin, json!({"allowed_roles": ["admin"], "user_ids": [gina["id"]]})).await;
    assert_eq!(names(&app.get("/ollama/tags").session(&gina_s).send().await.body), [MODEL]);
    assert_eq!(names(&app.get("/ollama/tags").session(&bob_s).send().await.body), ["llama3.2:1b"]);
    assert_eq!(
        names(&app.get("/ollama/tags").session(&admin).send().await.body),
        ["llama3.2:1b", "qwen3:0.6b"],
        "admins see all"
    );
    let key = app.api_key(&bob_s, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned();
    let v1: Vec<String> = app.openai(Method::GET, "/models", &key).send().await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(v1, ["llama3.2:1b"]);
    assert_eq!(app.openai(Method::GET, &format!("/models/{MODEL}"), &key).send().await.status, 404);
    let catalog = app.get("/chats/models").session(&bob_s).send().await;
    assert!(catalog.body["models"].as_array().unwrap().is_empty(), "{}", catalog.body);
    let catalog = app.get("/chats/models").session(&gina_s).send().await;
    assert_eq!(catalog.body["models"][0]["name"], MODEL);
}

async fn admins_list_and_change_policies(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    let (bob, bob_s) = app.signed_up("bob_user").await;
    let listed = app.get("/admin/models").session(&admin).send().await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.body,
        json!([
            {"name": "llama3.2:1b", "enabled": true, "allowed_roles": ["admin", "user"], "user_ids": [], "system_prompt": null, "options": null},
            {"name": "qwen3:0.6b", "enabled": true, "allowed_roles": ["admin", "user"], "user_ids": [], "system_prompt": null, "options": null},
        ])
    );
    // A model no upstream offers (yet) can have a policy too; names may hold `/` and `:`.
    let changed =
        app.put("/admin/models/hf.co%2Fbartowski%2Fsmol:Q4").session(&admin).json(&json!({"enabled": false})).send().await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["name"], "hf.co/bartowski/smol:Q4");
    let partial = put_policy(&app, &admin, json!({"user_ids": [bob["id"], bob["id"]], "system_prompt": "Be brief."})).await;
    assert_eq!(
        partial,
        json!({"name": MODEL, "enabled": true, "allowed_roles": ["admin", "user"], "user_ids": [bob["id"]], "system_prompt": "Be brief.", "options": null})
    );
    let kept = put_policy(&app, &admin, json!({"allowed_roles": ["user"]})).await;
    assert_eq!(kept["system_prompt"], "Be brief.", "fields left out keep their value");
    assert_eq!(kept["user_ids"], json!([bob["id"]]));
    let names: Vec<Value> = app
        .get("/admin/models")
        .session(&admin)
        .send()
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(names, [json!("hf.co/bartowski/smol:Q4"), json!("llama3.2:1b"), json!(MODEL)]);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_model_access").await, 1, "grants are kept in user_model_access");

    let path = format!("/admin/models/{MODEL}");
    for (body, field) in [
        (json!({"allowed_roles": ["owner"]}), "allowed_roles"),
        (json!({"user_ids": ["not-a-uuid"]}), "user_ids"),
        (json!({"enabled": "maybe"}), "enabled"),
        (json!({"options": {"num_gpu": 99}}), "options"),
    ] {
        let response = app.put(&path).session(&admin).json(&body).send().await;
        assert_eq!(response.status, 422, "{body}: {}", response.body);
        assert_eq!(response.body["detail"][0]["loc"][1], field, "{body}");
    }
    let unknown = app.put(&path).session(&admin).json(&json!({"user_ids": [uuid::Uuid::new_v4()]})).send().await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    app.put(&path).session(&bob_s).json(&json!({"enabled": false})).send().await.assert_detail(403, "Not an admin user");
    app.get("/admin/models").session(&bob_s).send().await.assert_detail(403, "Not an admin user");
}

async fn a_model_applies_its_default_system_prompt_and_options(app: TestApp) {
    let (_, admin) = app.signed_up("ann_admin").await;
    put_policy(&app, &admin, json!({"system_prompt": "You are a pirate.", "options": {"temperature": 0.1, "top_k": 5}})).await;
    let chat = app.new_chat(&admin, None).await;
    let events = StreamReader::open(
        app.post(&format!("/chats/{chat}/completions"))
            .session(&admin)
            .json(&json!({"model": MODEL, "content": "hi", "options": {"temperature": 0.9}})),
    )
    .await
    .rest()
    .await;
    assert_eq!(events.last().unwrap().event, "done");
    let sent = &app.emulator.chat_requests()[0];
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "You are a pirate."}));
    assert_eq!(sent["options"]["temperature"], 0.9, "the request's own options win");
    assert_eq!(sent["options"]["top_k"], 5);
    let stored = app.get(&format!("/chats/chat/{chat}")).session(&admin).send().await.body;
    assert!(
        stored["messages"].as_array().unwrap().iter().all(|m| m["role"] != "system"),
        "the default prompt is not stored in the chat"
    );

    let key = app.api_key(&admin, json!({"name": "k"})).await["key"].as_str().unwrap().to_owned();
    let own_system =
        json!({"model": MODEL, "messages": [{"role": "system", "content": "Be formal."}, {"role": "user", "content": "hi"}]});
    assert_eq!(app.openai(Method::POST, "/chat/completions", &key).json(&own_system).send().await.status, 200);
    let sent = app.emulator.chat_requests().last().unwrap().clone();
    assert_eq!(sent["messages"][0]["content"], "Be formal.", "a conversation's own system message is kept");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
}

/// An adopted database's `user_model_access` rows are honoured.
#[postgres_gate::needs_test_database_url]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_in_an_adopted_database_are_honoured() {
    let database = crate::adoption::fixture_database().await;
    let app = TestApp::spawn_on_postgres(database).await;
    app.execute(&format!(
        "INSERT INTO models (id, name, config, created_at, is_active) VALUES ('7d0c5e8a-0000-4000-8000-000000000001', '{MODEL}', '{{\"allowed_roles\": [\"admin\"]}}', now(), TRUE); \
         INSERT INTO user_model_access (id, user_id, model_id, granted_at, is_active) \
         SELECT '7d0c5e8a-0000-4000-8000-000000000002', id, '7d0c5e8a-0000-4000-8000-000000000001', now(), TRUE FROM users WHERE username = 'bob_user'"
    ))
    .await;
    let bob = app.login("bob_user", "Bob-pass-2024!").await;
    let chat = app.new_chat(&bob, None).await;
    let granted = StreamReader::open(
        app.post(&format!("/chats/{chat}/completions")).session(&bob).json(&json!({"model": MODEL, "content": "hi"})),
    )
    .await;
    assert_eq!(granted.status, 200, "the original's grant opens the model");
    let (_, dan) = app.signed_up("dan_user").await;
    let dans = app.new_chat(&dan, None).await;
    let refused = app
        .post(&format!("/chats/{dans}/completions"))
        .session(&dan)
        .json(&json!({"model": MODEL, "content": "hi"}))
        .send()
        .await;
    refused.assert_detail(403, &format!("You may not use model {MODEL}"));
    let listed = app.get("/admin/models").session(&app.login("admin_ann", "Ann-pass-2024!").await).send().await;
    let qwen = listed.body.as_array().unwrap().iter().find(|m| m["name"] == MODEL).unwrap().clone();
    assert_eq!(qwen["allowed_roles"], json!(["admin"]));
    assert_eq!(qwen["user_ids"].as_array().unwrap().len(), 1);
}
