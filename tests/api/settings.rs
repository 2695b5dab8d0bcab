use serde_json::json;

use crate::on_both_databases;
use crate::support::TestApp;

on_both_databases!(
    settings_are_created_and_updated_partially,
    settings_are_validated,
    admins_manage_anyones_settings,
    concurrent_updates_of_different_fields_both_hold,
);

async fn settings_are_created_and_updated_partially(app: TestApp) {
    let (bob, session) = app.signed_up("bob_user").await;
    let id = bob["id"].clone();
    let defaults = app.get("/user-settings/me").session(&session).send().await;
    assert_eq!(
        defaults.body,
        json!({"default_model_id": null, "display_name": "bob_user", "avatar_url": null, "preferences": null, "user_id": id})
    );
    let keys: Vec<&str> = defaults.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["default_model_id", "display_name", "avatar_url", "preferences", "user_id"]);

    let updated = app
        .put("/user-settings/me")
        .session(&session)
        .json(&json!({"display_name": "Bob B.", "preferences": {"theme": "dark", "language": "en"}}))
        .send()
        .await;
    assert_eq!(updated.body["display_name"], "Bob B.");
    assert_eq!(updated.body["preferences"], json!({"theme": "dark", "language": "en"}));

    let partial =
        app.put("/user-settings/me").session(&session).json(&json!({"avatar_url": "https://example.com/a.png"})).send().await;
    assert_eq!(partial.body["display_name"], "Bob B.");
    assert_eq!(partial.body["avatar_url"], "https://example.com/a.png");
    let model = uuid::Uuid::new_v4();
    let cleared =
        app.put("/user-settings/me").session(&session).json(&json!({"avatar_url": null, "default_model_id": model})).send().await;
    assert_eq!(cleared.body["avatar_url"], json!(null));
    assert_eq!(cleared.body["default_model_id"], json!(model));
    let replaced = app.put("/user-settings/me").session(&session).json(&json!({"preferences": {"theme": "light"}})).send().await;
    assert_eq!(replaced.body["preferences"], json!({"theme": "light"}));

    // The alias route of the seed README serves the same data.
    let alias = app.get("/users/me/settings").session(&session).send().await;
    assert_eq!(alias.body, replaced.body);
    let via_alias = app.put("/users/me/settings").session(&session).json(&json!({"display_name": "Bobby"})).send().await;
    assert_eq!(via_alias.body["display_name"], "Bobby");
    assert_eq!(app.count("SELECT COUNT(*) FROM user_settings WHERE display_name = 'Bobby' AND avatar_url IS NULL").await, 1);

    app.get("/user-settings/me").send().await.assert_detail(401, "Not authenticated");
    app.put("/user-settings/me").json(&json!({})).send().await.assert_detail(401, "Not authenticated");
}

async fn settings_are_validated(app: TestApp) {
    let (_, session) = app.signed_up("bob_user").await;
    let list = app.put("/user-settings/me").session(&session).json(&json!({"preferences": [1, 2]})).send().await;
    assert_eq!(
        list.body,
        json!({"detail": [{"type": "dict_type", "loc": ["body", "preferences"], "msg": "Input should be a valid dictionary", "input": [1, 2]}]})
    );
    app.put("/user-settings/me")
        .session(&session)
        .json(&json!({"display_name": "x".repeat(101)}))
        .send()
        .await
        .assert_validation(&[("string_too_long", json!(["body", "display_name"]))]);
    let v1 = app
        .put("/user-settings/me")
        .session(&session)
        .json(&json!({"default_model_id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}))
        .send()
        .await;
    v1.assert_validation(&[("uuid_version", json!(["body", "default_model_id"]))]);
    assert_eq!(v1.body["detail"][0]["msg"], "UUID version 4 expected");
    assert_eq!(app.count("SELECT COUNT(*) FROM user_settings WHERE display_name = 'bob_user' AND preferences IS NULL").await, 1);

    // Numbers at the edges of (and beyond) a double are kept exactly and read back (found by
    // schemathesis: PostgreSQL re-wrote one that could not be read back, and every later read
    // of the settings failed).
    let extreme = r#"{"preferences": {"max": 1.7976931348623157e308, "tiny": -2.1055238134311175e-99, "huge": 1e400, "precise": 0.10000000000000000000001}}"#;
    let saved = app.put("/user-settings/me").session(&session).raw("application/json", extreme).send().await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let read = app.get("/user-settings/me").session(&session).send().await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["preferences"].as_object().unwrap().len(), 4);
}

async fn admins_manage_anyones_settings(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let (dave, dave_session) = app.signed_up("dave_mixed").await;
    let (_, bob) = app.signed_up("bob_user").await;
    let path = format!("/user-settings/{}", dave["id"].as_str().unwrap());

    assert_eq!(app.get(&path).session(&admin).send().await.body["display_name"], "dave_mixed");
    let put = app.put(&path).session(&admin).json(&json!({"display_name": "Dave (by admin)"})).send().await;
    assert_eq!(put.body["display_name"], "Dave (by admin)");
    let deleted = app.delete(&path).session(&admin).send().await;
    assert_eq!(deleted.status, 204);
    assert_eq!(deleted.body, serde_json::Value::Null);
    app.delete(&path).session(&admin).send().await.assert_detail(404, "Settings not found");
    app.get(&path).session(&admin).send().await.assert_detail(404, "Settings not found");
    // The user's next read re-creates the defaults.
    let recreated = app.get("/user-settings/me").session(&dave_session).send().await;
    assert_eq!(recreated.body["display_name"], "dave_mixed");

    let ghost = format!("/user-settings/{}", uuid::Uuid::new_v4());
    app.put(&ghost).session(&admin).json(&json!({"display_name": "ghost"})).send().await.assert_detail(404, "User not found");
    app.get(&ghost).session(&admin).send().await.assert_detail(404, "Settings not found");
    app.get("/user-settings/xyz").session(&admin).send().await.assert_validation(&[("uuid_parsing", json!(["path", "user_id"]))]);
    for call in [app.get(&path), app.put(&path).json(&json!({"display_name": "x"})), app.delete(&path)] {
        call.session(&bob).send().await.assert_detail(403, "Not an admin user");
    }
}

async fn concurrent_updates_of_different_fields_both_hold(app: TestApp) {
    let (_, session) = app.signed_up("bob_user").await;
    assert_eq!(app.get("/user-settings/me").session(&session).send().await.status, 200);
    for round in 0..20 {
        let name = format!("Bob {round}");
        let avatar = format!("https://example.com/{round}.png");
        let (a, b) = tokio::join!(
            app.put("/user-settings/me").session(&session).json(&json!({"display_name": name})).send(),
            app.put("/user-settings/me").session(&session).json(&json!({"avatar_url": avatar})).send(),
        );
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200), "{} {}", a.body, b.body);
        let now = app.get("/user-settings/me").session(&session).send().await.body;
        assert_eq!(
            (now["display_name"].as_str(), now["avatar_url"].as_str()),
            (Some(name.as_str()), Some(avatar.as_str())),
            "round {round}"
        );
    }
}
