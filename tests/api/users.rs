use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{TestApp, PASSWORD};

on_both_databases!(
    users_edit_their_own_profile,
    users_cannot_deactivate_themselves_or_take_taken_names,
    admins_list_users_in_creation_order,
    admins_manage_accounts,
    deactivated_users_are_locked_out,
    admin_routes_refuse_non_admins,
    account_changes_reach_the_very_next_request,
    ids_are_validated,
    two_admins_demoting_each_other_at_once_leave_one,
);

async fn users_edit_their_own_profile(app: TestApp) {
    app.register("admin_ann").await;
    let (bob, session) = app.signed_up("bob_user").await;
    let changed = app.put("/users/me").session(&session).json(&json!({"email": "bob.new@Example.com"})).send().await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body["email"], "bob.new@example.com");
    assert_eq!(changed.body["id"], bob["id"]);

    let unchanged = app.put("/users/me").session(&session).json(&json!({})).send().await;
    assert_eq!(unchanged.body, changed.body);
    let role_ignored = app.put("/users/me").session(&session).json(&json!({"role": "admin"})).send().await;
    assert_eq!(role_ignored.status, 200);
    assert_eq!(role_ignored.body["role"], "user");

    let bad = app.put("/users/me").session(&session).json(&json!({"email": "nope"})).send().await;
    bad.assert_validation(&[("value_error", json!(["body", "email"]))]);

    let renamed = app
        .put("/users/me")
        .session(&session)
        .json(&json!({"username": "bob_renamed", "password": "New-pass-2025!"}))
        .send()
        .await;
    assert_eq!(renamed.body["username"], "bob_renamed");
    app.login("bob_renamed", "New-pass-2025!").await;
    assert_eq!(app.post("/auth/login").form(&[("username", "bob_renamed"), ("password", PASSWORD)]).send().await.status, 401);
    app.put("/users/me").json(&json!({"email": "x@example.com"})).send().await.assert_detail(401, "Not authenticated");
}

async fn users_cannot_deactivate_themselves_or_take_taken_names(app: TestApp) {
    app.register("admin_ann").await;
    let (_, session) = app.signed_up("erin_temp").await;
    app.put("/users/me")
        .session(&session)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .assert_detail(403, "You cannot change your own active status");
    assert_eq!(app.get("/users/me").session(&session).send().await.status, 200);
    app.put("/users/me")
        .session(&session)
        .json(&json!({"username": "admin_ann"}))
        .send()
        .await
        .assert_detail(400, "Username already registered");
    app.put("/users/me")
        .session(&session)
        .json(&json!({"email": "ADMIN_ANN@example.com"}))
        .send()
        .await
        .assert_detail(400, "Email already registered");
    assert_eq!(app.put("/users/me").session(&session).json(&json!({"username": "erin_temp"})).send().await.status, 200);
}

async fn admins_list_users_in_creation_order(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    for name in ["bob_user", "carol_guest", "dave_mixed"] {
        app.register(name).await;
    }
    let all = app.get("/users").session(&admin).send().await;
    let names: Vec<&str> = all.body.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin_ann", "bob_user", "carol_guest", "dave_mixed"]);
    let page = app.get("/users?skip=1&limit=2").session(&admin).send().await;
    let names: Vec<&str> = page.body.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob_user", "carol_guest"]);
    let trailing = app.get("/users/?limit=1").session(&admin).send().await;
    assert_eq!(trailing.status, 200);
    assert_eq!(trailing.body.as_array().unwrap().len(), 1);

    let bad = app.get("/users?limit=abc").session(&admin).send().await;
    assert_eq!(
        bad.body,
        json!({"detail": [{"type": "int_parsing", "loc": ["query", "limit"], "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "abc"}]})
    );
    app.get("/users?limit=0")
        .session(&admin)
        .send()
        .await
        .assert_validation(&[("greater_than_equal", json!(["query", "limit"]))]);
    app.get("/users?limit=1001")
        .session(&admin)
        .send()
        .await
        .assert_validation(&[("less_than_equal", json!(["query", "limit"]))]);
    app.get("/users?skip=-1").session(&admin).send().await.assert_validation(&[("greater_than_equal", json!(["query", "skip"]))]);
}

async fn admins_manage_accounts(app: TestApp) {
    let (ann, admin) = app.signed_up("admin_ann").await;
    let dave = app.register("dave_mixed").await;
    app.register("bob_user").await;
    let dave_path = format!("/users/{}", dave["id"].as_str().unwrap());

    let got = app.get(&dave_path).session(&admin).send().await;
    assert_eq!(got.body, dave);
    let renamed = app.put(&dave_path).session(&admin).json(&json!({"username": "dave_renamed"})).send().await;
    assert_eq!(renamed.body["username"], "dave_renamed");
    let unchanged = app.put(&dave_path).session(&admin).json(&json!({})).send().await;
    assert_eq!(unchanged.body, renamed.body);
    app.put(&dave_path)
        .session(&admin)
        .json(&json!({"username": "abc"}))
        .send()
        .await
        .assert_validation(&[("string_too_short", json!(["body", "username"]))]);
    app.put(&dave_path)
        .session(&admin)
        .json(&json!({"username": "bob_user"}))
        .send()
        .await
        .assert_detail(400, "Username already registered");

    let promoted = app.put(&dave_path).session(&admin).json(&json!({"role": "admin"})).send().await;
    assert_eq!(promoted.body["role"], "admin");
    let demoted = app.put(&dave_path).session(&admin).json(&json!({"role": "guest"})).send().await;
    assert_eq!(demoted.body["role"], "guest");
    app.put(&dave_path)
        .session(&admin)
        .json(&json!({"role": "overlord"}))
        .send()
        .await
        .assert_validation(&[("literal_error", json!(["body", "role"]))]);

    let deactivated = app.delete(&dave_path).session(&admin).send().await;
    assert_eq!(deactivated.status, 200);
    assert_eq!(deactivated.body["is_active"], false);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE is_active = FALSE").await, 1);
    let activated = app.post(&format!("{dave_path}/activate")).session(&admin).send().await;
    assert_eq!(activated.body["is_active"], true);

    let ghost = format!("/users/{}", uuid::Uuid::new_v4());
    app.get(&ghost).session(&admin).send().await.assert_detail(404, "User not found");
    app.put(&ghost).session(&admin).json(&json!({"username": "ghost_user"})).send().await.assert_detail(404, "User not found");
    app.delete(&ghost).session(&admin).send().await.assert_detail(404, "User not found");
    app.post(&format!("{ghost}/activate")).session(&admin).send().await.assert_detail(404, "User not found");

    // The only admin cannot lock themselves out.
    let own = format!("/users/{}", ann["id"].as_str().unwrap());
    app.delete(&own).session(&admin).send().await.assert_detail(403, "You cannot change your own active status");
    app.put(&own)
        .session(&admin)
        .json(&json!({"role": "user"}))
        .send()
        .await
        .assert_detail(403, "You cannot change your own role");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE role = 'admin' AND is_active").await, 1);
}

async fn deactivated_users_are_locked_out(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let (carol, session) = app.signed_up("carol_guest").await;
    assert_eq!(app.get("/users/me").session(&session).send().await.status, 200);
    app.delete(&format!("/users/{}", carol["id"].as_str().unwrap())).session(&admin).send().await;

    app.get("/users/me").session(&session).send().await.assert_detail(400, "Inactive user");
    app.post("/auth/logout").session(&session).send().await.assert_detail(400, "Inactive user");
    app.post("/auth/login")
        .form(&[("username", "carol_guest"), ("password", PASSWORD)])
        .send()
        .await
        .assert_detail(400, "Inactive user");
    app.post("/auth/login")
        .form(&[("username", "carol_guest"), ("password", "wrong-password")])
        .send()
        .await
        .assert_detail(401, "Incorrect username or password");
    app.post("/auth/refresh")
        .cookie(&format!("refresh_token={}", session.refresh_token))
        .send()
        .await
        .assert_detail(401, "Could not validate credentials");
}

/// Authenticated requests reuse the user's row for a few seconds; every change made through
/// this server must still be seen by the next request.
async fn account_changes_reach_the_very_next_request(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let (bob, session) = app.signed_up("bob_user").await;
    let bob_path = format!("/users/{}", bob["id"].as_str().unwrap());
    app.get("/users").session(&session).send().await.assert_detail(403, "Not an admin user");

    app.put(&bob_path).session(&admin).json(&json!({"role": "admin"})).send().await;
    assert_eq!(app.get("/users").session(&session).send().await.status, 200, "promotion seen at once");
    app.put(&bob_path).session(&admin).json(&json!({"role": "user"})).send().await;
    app.get("/users").session(&session).send().await.assert_detail(403, "Not an admin user");

    app.delete(&bob_path).session(&admin).send().await;
    app.get("/users/me").session(&session).send().await.assert_detail(400, "Inactive user");
    app.post(&format!("{bob_path}/activate")).session(&admin).send().await;
    // Deactivation ended the session; activation does not revive it.
    app.get("/users/me").session(&session).send().await.assert_detail(401, "Could not validate credentials");
    let session = app.login("bob_user", PASSWORD).await;
    assert_eq!(app.get("/users/me").session(&session).send().await.status, 200);

    app.put("/users/me").session(&session).json(&json!({"username": "bob_renamed"})).send().await;
    assert_eq!(app.get("/users/me").session(&session).send().await.body["username"], "bob_renamed");
    let relogin = app.login("bob_renamed", PASSWORD).await;
    let me = app.get("/users/me").session(&relogin).send().await;
    assert!(me.body["last_login"].is_string(), "{}", me.body);
    assert_eq!(app.get("/users/me").session(&session).send().await.body["last_login"], me.body["last_login"]);
}

async fn admin_routes_refuse_non_admins(app: TestApp) {
    let (ann, _) = app.signed_up("admin_ann").await;
    let (bob, session) = app.signed_up("bob_user").await;
    let ann_path = format!("/users/{}", ann["id"].as_str().unwrap());
    let bob_path = format!("/users/{}", bob["id"].as_str().unwrap());
    let calls = [
        app.get("/users"),
        app.get(&bob_path),
        app.put(&ann_path).json(&json!({"username": "hacked_name"})),
        app.delete(&ann_path),
        app.post(&format!("{ann_path}/activate")),
    ];
    for call in calls {
        call.session(&session).send().await.assert_detail(403, "Not an admin user");
    }
    app.get("/users").send().await.assert_detail(401, "Not authenticated");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE username = 'hacked_name'").await, 0);
}

async fn ids_are_validated(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let bad = app.get("/users/not-a-uuid").session(&admin).send().await;
    let expected: Value = json!({"detail": [{
        "type": "uuid_parsing", "loc": ["path", "user_id"],
        "msg": "Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1",
        "input": "not-a-uuid",
        "ctx": {"error": "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1"}
    }]});
    assert_eq!(bad.body, expected);
    app.delete("/users/123").session(&admin).send().await.assert_validation(&[("uuid_parsing", json!(["path", "user_id"]))]);
}

async fn two_admins_demoting_each_other_at_once_leave_one(app: TestApp) {
    let (ann, ann_session) = app.signed_up("admin_ann").await;
    let (bob, bob_session) = app.signed_up("bob_user").await;
    let (ann_id, bob_id) = (ann["id"].as_str().unwrap(), bob["id"].as_str().unwrap());
    let admins = "SELECT COUNT(*) FROM users WHERE role = 'admin' AND COALESCE(is_active, TRUE)";
    for round in 0..10 {
        // Both are admins; each demotes the other at the same moment.
        if app.count(admins).await < 2 {
            let remaining = app.get("/users/me").session(&ann_session).send().await;
            let (promoter, promoted) =
                if remaining.body["role"] == "admin" { (&ann_session, bob_id) } else { (&bob_session, ann_id) };
            let promoted = app.put(&format!("/users/{promoted}")).session(promoter).json(&json!({"role": "admin"})).send().await;
            assert_eq!(promoted.status, 200, "round {round}: {}", promoted.body);
        }
        let (by_ann, by_bob) = tokio::join!(
            app.put(&format!("/users/{bob_id}")).session(&ann_session).json(&json!({"role": "user"})).send(),
            app.put(&format!("/users/{ann_id}")).session(&bob_session).json(&json!({"role": "user"})).send(),
        );
        let statuses = [by_ann.status.as_u16(), by_bob.status.as_u16()];
        assert!(
            statuses.contains(&200) && statuses.contains(&403),
            "round {round}: {statuses:?} {} {}",
            by_ann.body,
            by_bob.body
        );
        assert_eq!(app.count(admins).await, 1, "round {round}: {statuses:?}");
    }
}
