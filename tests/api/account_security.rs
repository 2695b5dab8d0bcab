//! Sessions end when a password or an active flag changes; an account name cannot take over
//! another account's login; names are compared ignoring case and compatibility forms; login
//! input and the per-account login limit are bounded.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::on_both_databases;
use crate::support::{Backend, Session, TestApp, TestResponse, PASSWORD};

on_both_databases!(
    a_password_change_ends_every_other_session_and_renews_this_one,
    an_admins_password_reset_ends_every_session_of_the_user,
    deactivation_ends_sessions_and_activation_does_not_revive_them,
    usernames_cannot_take_over_an_email_login,
    names_are_normalised_and_unique_ignoring_case_and_width,
    accounts_written_without_name_keys_are_keyed_at_startup,
    login_input_is_bounded,
    the_login_limit_counts_an_account_once_whatever_name_is_used,
    the_store_reports_whether_bcrypt_hashes_remain,
);

/// The session a response started with its `Set-Cookie` headers.
fn session_from_cookies(response: &TestResponse) -> Session {
    let cookies = response.set_cookies();
    let value = |name: &str| {
        cookies
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{name}="))?.split(';').next().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
    };
    Session { access_token: value("access_token"), refresh_token: value("refresh_token") }
}

async fn me(app: &TestApp, session: &Session) -> TestResponse {
    app.get("/users/me").session(session).send().await
}

async fn refresh(app: &TestApp, session: &Session) -> TestResponse {
    app.post("/auth/refresh").cookie(&format!("refresh_token={}", session.refresh_token)).send().await
}

async fn register(app: &TestApp, username: &str, email: &str) -> TestResponse {
    app.post("/auth/register").json(&json!({"username": username, "email": email, "password": PASSWORD})).send().await
}

/// Refresh tokens of the user that can still be used.
async fn live_refresh_tokens(app: &TestApp, username: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM refresh_tokens r JOIN users u ON u.id = r.user_id \
         WHERE u.username = '{username}' AND r.revoked_at IS NULL"
    ))
    .await
}

async fn a_password_change_ends_every_other_session_and_renews_this_one(app: TestApp) {
    app.register("admin_ann").await;
    let (bob, laptop) = app.signed_up("bob_user").await;
    let phone = app.login("bob_user", PASSWORD).await;

    let changed = app.put("/users/me").session(&laptop).json(&json!({"password": "New-pass-2025!"})).send().await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["id"], bob["id"]);
    let keys: Vec<&str> = changed.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["username", "email", "id", "is_active", "created_at", "role", "last_login"]);
    let cookies = changed.set_cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(cookies[0].starts_with("access_token=") && cookies[0].ends_with("; HttpOnly; Max-Age=3600; Path=/api; SameSite=lax"));
    assert!(cookies[1].ends_with("; HttpOnly; Max-Age=604800; Path=/api/v1/auth/refresh; SameSite=lax"), "{}", cookies[1]);
    let renewed = session_from_cookies(&changed);

    // Every session from before the change is over, including the one that made it.
    for (which, old) in [("phone", &phone), ("laptop", &laptop)] {
        let response = me(&app, old).await;
        assert_eq!(response.status, 401, "{which}: {}", response.body);
        refresh(&app, old).await.assert_detail(401, "Could not validate credentials");
    }
    // The session that changed the password continues with the new cookies, in a new chain.
    assert_eq!(live_refresh_tokens(&app, "bob_user").await, 1);
    assert_eq!(app.count("SELECT COUNT(DISTINCT family_id) FROM refresh_tokens").await, 3);
    assert_eq!(me(&app, &renewed).await.status, 200);
    assert_eq!(refresh(&app, &renewed).await.status, 200);

    app.login("bob_user", "New-pass-2025!").await;
    let old_password = app.post("/auth/login").form(&[("username", "bob_user"), ("password", PASSWORD)]).send().await;
    old_password.assert_detail(401, "Incorrect username or password");

    // Changing anything else ends nothing.
    let renamed = app.put("/users/me").session(&renewed).json(&json!({"email": "bob.new@example.com"})).send().await;
    assert_eq!(renamed.status, 200);
    assert!(renamed.set_cookies().is_empty());
    assert_eq!(me(&app, &renewed).await.status, 200);
}

async fn an_admins_password_reset_ends_every_session_of_the_user(app: TestApp) {
    let (ann, admin) = app.signed_up("admin_ann").await;
    let (bob, bob_session) = app.signed_up("bob_user").await;
    let reset = app
        .put(&format!("/users/{}", bob["id"].as_str().unwrap()))
        .session(&admin)
        .json(&json!({"password": "Reset-pass-2025!"}))
        .send()
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert!(reset.set_cookies().is_empty(), "the admin's own session is not touched");
    me(&app, &bob_session).await.assert_detail(401, "Could not validate credentials");
    refresh(&app, &bob_session).await.assert_detail(401, "Could not validate credentials");
    assert_eq!(live_refresh_tokens(&app, "bob_user").await, 0);
    assert_eq!(me(&app, &admin).await.status, 200);
    app.login("bob_user", "Reset-pass-2025!").await;

    // An admin resetting their own password through the admin route keeps that session going.
    let own = app
        .put(&format!("/users/{}", ann["id"].as_str().unwrap()))
        .session(&admin)
        .json(&json!({"password": "Admin-new-2025!"}))
        .send()
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    me(&app, &admin).await.assert_detail(401, "Could not validate credentials");
    assert_eq!(me(&app, &session_from_cookies(&own)).await.status, 200);
}

async fn deactivation_ends_sessions_and_activation_does_not_revive_them(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let (bob, session) = app.signed_up("bob_user").await;
    let bob_path = format!("/users/{}", bob["id"].as_str().unwrap());

    // The SPA's admin form sends the active flag with every edit: an unchanged flag ends nothing.
    let edited = app.put(&bob_path).session(&admin).json(&json!({"role": "user", "is_active": true})).send().await;
    assert_eq!(edited.status, 200);
    assert_eq!(me(&app, &session).await.status, 200);

    assert_eq!(app.delete(&bob_path).session(&admin).send().await.status, 200);
    assert_eq!(live_refresh_tokens(&app, "bob_user").await, 0);
    assert_eq!(app.post(&format!("{bob_path}/activate")).session(&admin).send().await.status, 200);
    me(&app, &session).await.assert_detail(401, "Could not validate credentials");
    refresh(&app, &session).await.assert_detail(401, "Could not validate credentials");

    let again = app.login("bob_user", PASSWORD).await;
    assert_eq!(me(&app, &again).await.status, 200);
    assert_eq!(refresh(&app, &again).await.status, 200);
}

async fn usernames_cannot_take_over_an_email_login(app: TestApp) {
    let carol = register(&app, "carol_corp", "carol@corp.example").await;
    assert_eq!(carol.status, 201);
    // Taking her address as a username, or squatting one before its owner registers.
    for (i, name) in
        ["carol@corp.example", "dave@corp.example", "carol\u{ff20}corp.example", "carol\u{fe6b}corp"].iter().enumerate()
    {
        let response = register(&app, name, &format!("mallory{i}@evil.example")).await;
        response.assert_validation(&[("value_error", json!(["body", "username"]))]);
    }
    let (_, mallory) = app.signed_up("mallory").await;
    app.put("/users/me")
        .session(&mallory)
        .json(&json!({"username": "carol@corp.example"}))
        .send()
        .await
        .assert_validation(&[("value_error", json!(["body", "username"]))]);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE username LIKE '%@%'").await, 0);

    let session = app.login("carol@corp.example", PASSWORD).await;
    assert_eq!(me(&app, &session).await.body["id"], carol.body["id"]);
}

async fn names_are_normalised_and_unique_ignoring_case_and_width(app: TestApp) {
    let eve = register(&app, "Éve_user", "Éve@corp.example").await;
    assert_eq!(eve.status, 201, "{}", eve.body);
    register(&app, "éVE_USER", "other1@corp.example").await.assert_detail(400, "Username already registered");
    register(&app, "eve_other", "éve@corp.example").await.assert_detail(400, "Email already registered");
    register(&app, "eve_other", "ÉVE@CORP.example").await.assert_detail(400, "Email already registered");

    // Compatibility forms (here fullwidth letters) are stored in their plain form.
    let wide = register(&app, "\u{ff46}\u{ff55}\u{ff4c}\u{ff4c}_width", "wide@corp.example").await;
    assert_eq!(wide.status, 201, "{}", wide.body);
    assert_eq!(wide.body["username"], "full_width");
    register(&app, "FULL_width", "other2@corp.example").await.assert_detail(400, "Username already registered");

    for bad in [
        " lead_space",
        "trail_space ",
        "      ",
        "zero\u{200b}width",
        "bidi\u{202e}name",
        "bell\u{7}name",
        "tab\tname",
        "line\u{2028}sep",
    ] {
        let response = register(&app, bad, "bad@corp.example").await;
        assert_eq!(response.status, 422, "{bad:?}: {}", response.body);
        response.assert_validation(&[("value_error", json!(["body", "username"]))]);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);

    // Any case or normalisation form of a name logs in to its account.
    for name in ["ÉVE_USER", "éve_user", "éve@CORP.example", "E\u{301}ve_user"] {
        let session = app.login(name, PASSWORD).await;
        assert_eq!(me(&app, &session).await.body["username"], "Éve_user", "{name}");
    }
    // Renaming: to another account's name in another case is refused, to one's own is not.
    let session = app.login("full_width", PASSWORD).await;
    let rename = |name: &'static str| app.put("/users/me").session(&session).json(&json!({"username": name})).send();
    rename("ÉVE_user").await.assert_detail(400, "Username already registered");
    let own = rename("FULL_Width").await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.body["username"], "FULL_Width");
}

/// Writes an account the way the original backend (or rovertchat before name keys) did:
/// straight into `users`, with the role and password hash of the account `like`.
async fn insert_account(app: &TestApp, username: &str, email: &str, like: &str, created_at: &str) {
    let created_at = chrono::NaiveDateTime::parse_from_str(created_at, "%Y-%m-%d %H:%M:%S").unwrap();
    let sql = "INSERT INTO users (id, username, email, password_hash, role, created_at, last_login, is_active, token_version) \
               SELECT $1, $2, $3, password_hash, role, $4, NULL, is_active, 1 FROM users WHERE username = $5";
    let inserted = crate::on_pool!(app.store, pool => {
        sqlx::query(sql).bind(Uuid::new_v4()).bind(username).bind(email).bind(created_at).bind(like).execute(pool).await.map(|r| r.rows_affected())
    })
    .expect(sql);
    assert_eq!(inserted, 1);
}

/// The username of the account that `name` and the test password log in to.
async fn logs_in_as(app: &TestApp, name: &str) -> Value {
    let session = app.login(name, PASSWORD).await;
    me(app, &session).await.body["username"].clone()
}

async fn accounts_written_without_name_keys_are_keyed_at_startup(app: TestApp) {
    app.register("admin_ann").await;
    app.register("plain_user").await;
    // What an adopted or rolled-back database may hold: usernames that differ only in case, and
    // a username that is another account's e-mail address.
    insert_account(&app, "dup_name", "dup1@corp.example", "plain_user", "2024-01-01 10:00:00").await;
    insert_account(&app, "DUP_NAME", "dup2@corp.example", "plain_user", "2024-01-02 10:00:00").await;
    insert_account(&app, "admin_ann@example.com", "squatter@corp.example", "plain_user", "2024-01-03 10:00:00").await;
    if !app.is_postgres() {
        // SQLite's lower() folds only ASCII: these two addresses could both be registered.
        insert_account(&app, "oz_first", "Öz@corp.example", "plain_user", "2024-01-04 10:00:00").await;
        insert_account(&app, "oz_second", "öz@corp.example", "plain_user", "2024-01-05 10:00:00").await;
    }
    app.store.migrate().await.expect("the startup work runs again");

    assert_eq!(logs_in_as(&app, "dup_name").await, "dup_name");
    assert_eq!(logs_in_as(&app, "DUP_NAME").await, "DUP_NAME");
    assert_eq!(logs_in_as(&app, "Dup_Name").await, "dup_name", "another spelling finds the older account");
    assert_eq!(logs_in_as(&app, "admin_ann@example.com").await, "admin_ann", "an e-mail address wins over a username");
    assert_eq!(logs_in_as(&app, "squatter@corp.example").await, "admin_ann@example.com");
    register(&app, "dUP_nAME", "dup3@corp.example").await.assert_detail(400, "Username already registered");
    if !app.is_postgres() {
        assert_eq!(logs_in_as(&app, "Öz@corp.example").await, "oz_first");
        assert_eq!(logs_in_as(&app, "öz@corp.example").await, "oz_second");
        assert_eq!(logs_in_as(&app, "ÖZ@CORP.example").await, "oz_first");
        register(&app, "oz_third", "ÖZ@corp.example").await.assert_detail(400, "Email already registered");
    }

    // Their owners keep editing their profiles, sending their names unchanged.
    let dup = app.login("DUP_NAME", PASSWORD).await;
    let unchanged =
        app.put("/users/me").session(&dup).json(&json!({"username": "DUP_NAME", "email": "dup2@corp.example"})).send().await;
    assert_eq!(unchanged.status, 200, "{}", unchanged.body);
    let squatter = app.login("squatter@corp.example", PASSWORD).await;
    let kept = app
        .put("/users/me")
        .session(&squatter)
        .json(&json!({"username": "admin_ann@example.com", "email": "squatter@corp.example"}))
        .send()
        .await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    app.put("/users/me")
        .session(&squatter)
        .json(&json!({"username": "other@corp.example"}))
        .send()
        .await
        .assert_validation(&[("value_error", json!(["body", "username"]))]);

    // Starting again changes nothing.
    app.store.migrate().await.expect("the startup work runs again");
    assert_eq!(logs_in_as(&app, "DUP_NAME").await, "DUP_NAME");
    assert_eq!(logs_in_as(&app, "Dup_Name").await, "dup_name");
}

async fn login_input_is_bounded(app: TestApp) {
    app.register("bob_user").await;
    let app = &app;
    let login = |username: String, password: String| async move {
        app.post("/auth/login").form(&[("username", username.as_str()), ("password", password.as_str())]).send().await
    };
    let long_password = login("bob_user".into(), "x".repeat(1025)).await;
    long_password.assert_validation(&[("string_too_long", json!(["body", "password"]))]);
    assert_eq!(long_password.body["detail"][0]["ctx"], json!({"max_length": 1024}));
    login("bob_user".into(), "x".repeat(1024)).await.assert_detail(401, "Incorrect username or password");

    let long_name = login("n".repeat(256), PASSWORD.into()).await;
    long_name.assert_validation(&[("string_too_long", json!(["body", "username"]))]);
    assert_eq!(long_name.body["detail"][0]["ctx"], json!({"max_length": 255}));
}

async fn the_login_limit_counts_an_account_once_whatever_name_is_used(backend: Backend) {
    let limited =
        TestApp::spawn_with(backend, vec![("RATE_LIMITS", "on".into()), ("TRUSTED_PROXIES", "127.0.0.0/8".into())]).await;
    limited.register("bob_user").await;
    let attempt = |name: &'static str, client: String, password: &'static str| {
        limited.post("/auth/login").header("x-real-ip", &client).form(&[("username", name), ("password", password)]).send()
    };
    // Ten guesses, half by username and half by e-mail address, from ten addresses.
    for i in 0..10 {
        let name = if i % 2 == 0 { "bob_user" } else { "bob_user@example.com" };
        assert_eq!(attempt(name, format!("10.0.0.{i}"), "guess").await.status, 401, "attempt {i}");
    }
    for name in ["bob_user@example.com", "Bob_User", "BOB_USER@EXAMPLE.COM"] {
        let blocked = attempt(name, "10.0.1.1".into(), PASSWORD).await;
        assert_eq!(blocked.status, 429, "{name}: {}", blocked.body);
    }

    // Unknown names are limited alike (a 429 tells nothing about existence), spelled any way.
    for i in 0..10 {
        assert_eq!(attempt("nobody_here", format!("10.0.2.{i}"), "guess").await.status, 401, "attempt {i}");
    }
    assert_eq!(attempt("NOBODY_HERE", "10.0.3.1".into(), "guess").await.status, 429);
}

/// Failed logins also check a dummy bcrypt hash while the store reports that bcrypt hashes
/// remain (the decision itself is unit-tested in `services::accounts`).
async fn the_store_reports_whether_bcrypt_hashes_remain(app: TestApp) {
    app.register("admin_ann").await;
    app.register("bob_user").await;
    assert!(!app.store.bcrypt_hashes_remain().await.unwrap());
    // The original's hash of Bob's password (tests/fixtures).
    app.execute(
        "UPDATE users SET password_hash = '$2b$12$bjWGRQyN.d06Id6n1hL0Ue1EOA/k2Kh2LArCxGvrVG6ZTR0XS3.C6' WHERE username = 'bob_user'",
    )
    .await;
    assert!(app.store.bcrypt_hashes_remain().await.unwrap());
    let wrong = app.post("/auth/login").form(&[("username", "bob_user"), ("password", "wrong")]).send().await;
    wrong.assert_detail(401, "Incorrect username or password");
    assert!(app.store.bcrypt_hashes_remain().await.unwrap());
    // The successful login replaces the last bcrypt hash.
    app.login("bob_user", "Bob-pass-2024!").await;
    assert!(!app.store.bcrypt_hashes_remain().await.unwrap());
}
