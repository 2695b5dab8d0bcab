use jsonwebtoken::{encode, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{TestApp, ACCESS_SECRET, PASSWORD, REFRESH_SECRET};

on_both_databases!(
    first_account_is_admin_and_gets_default_settings,
    duplicate_names_and_emails_are_refused,
    registration_is_validated_like_the_original,
    login_by_username_or_email_sets_the_originals_cookies,
    login_failures_are_answered_like_the_original,
    public_hosts_get_secure_cookies,
    refresh_issues_new_tokens_from_the_cookie_only,
    logout_revokes_every_token_and_clears_cookies,
    logout_wins_over_requests_in_flight,
    bad_tokens_are_refused,
    bearer_header_works_for_api_clients,
    registration_by_an_admin_may_set_role_and_status,
    concurrent_registrations_of_one_name_give_one_account,
);

fn claims(token: &str, secret: &str) -> Value {
    let mut validation = Validation::default();
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation).unwrap().claims
}

fn token_with(claims: Value, secret: &str) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn in_an_hour() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

async fn first_account_is_admin_and_gets_default_settings(app: TestApp) {
    let ann = app.register("admin_ann").await;
    assert_eq!(ann["role"], "admin");
    assert_eq!(ann["username"], "admin_ann");
    assert_eq!(ann["email"], "admin_ann@example.com");
    assert_eq!(ann["is_active"], true);
    assert_eq!(ann["last_login"], Value::Null);
    let keys: Vec<&str> = ann.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["username", "email", "id", "is_active", "created_at", "role", "last_login"]);
    let created = ann["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 27, "RFC 3339 with microseconds: {created}");

    let dave = app
        .post("/auth/register")
        .json(&json!({"username": "dave_mixed", "email": "Dave.Mixed@Example.COM", "password": PASSWORD}))
        .send()
        .await;
    assert_eq!(dave.status, 201);
    assert_eq!(dave.body["role"], "user");
    assert_eq!(dave.body["email"], "Dave.Mixed@example.com");

    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_settings WHERE display_name = 'dave_mixed'").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE password_hash LIKE '$argon2id$%'").await, 2);
}

async fn duplicate_names_and_emails_are_refused(app: TestApp) {
    app.register("bob_user").await;
    let same_name = app
        .post("/auth/register")
        .json(&json!({"username": "bob_user", "email": "other@example.com", "password": "whatever123"}))
        .send()
        .await;
    same_name.assert_detail(400, "Username already registered");
    let same_email = app
        .post("/auth/register")
        .json(&json!({"username": "bob_other", "email": "bob_user@example.com", "password": "whatever123"}))
        .send()
        .await;
    same_email.assert_detail(400, "Email already registered");
    let other_case = app
        .post("/auth/register")
        .json(&json!({"username": "bob_case", "email": "BOB_USER@EXAMPLE.com", "password": "whatever123"}))
        .send()
        .await;
    other_case.assert_detail(400, "Email already registered");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
}

async fn registration_is_validated_like_the_original(app: TestApp) {
    let bad =
        app.post("/auth/register").json(&json!({"username": "ab", "email": "not-an-email", "password": "short"})).send().await;
    bad.assert_validation(&[
        ("string_too_short", json!(["body", "username"])),
        ("value_error", json!(["body", "email"])),
        ("string_too_short", json!(["body", "password"])),
    ]);
    assert_eq!(
        bad.body["detail"][0],
        json!({"type": "string_too_short", "loc": ["body", "username"], "msg": "String should have at least 4 characters", "input": "ab", "ctx": {"min_length": 4}})
    );
    assert_eq!(bad.body["detail"][1]["msg"], "value is not a valid email address: An email address must have an @-sign.");

    let no_body = app.post("/auth/register").send().await;
    assert_eq!(no_body.body, json!({"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}]}));

    let missing = app.post("/auth/register").json(&json!({"username": "someone"})).send().await;
    missing.assert_validation(&[("missing", json!(["body", "email"])), ("missing", json!(["body", "password"]))]);
    assert_eq!(missing.body["detail"][0]["input"], json!({"username": "someone"}));

    let malformed = app.post("/auth/register").raw("application/json", "{\"username\": \"x\",").send().await;
    malformed.assert_validation(&[("json_invalid", json!(["body", 17]))]);

    let long_password = app
        .post("/auth/register")
        .json(&json!({"username": "longpw", "email": "longpw@example.com", "password": "x".repeat(101)}))
        .send()
        .await;
    long_password.assert_validation(&[("string_too_long", json!(["body", "password"]))]);
    assert_eq!(long_password.body["detail"][0]["ctx"], json!({"max_length": 100}));

    let wrong_types = app.post("/auth/register").json(&json!({"username": 5, "email": [], "password": null})).send().await;
    wrong_types.assert_validation(&[
        ("string_type", json!(["body", "username"])),
        ("string_type", json!(["body", "email"])),
        ("string_type", json!(["body", "password"])),
    ]);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
}

async fn login_by_username_or_email_sets_the_originals_cookies(app: TestApp) {
    let ann = app.register("admin_ann").await;
    let response = app.post("/auth/login").form(&[("username", "admin_ann"), ("password", PASSWORD)]).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body["token_type"], "bearer");
    let access = response.body["access_token"].as_str().unwrap();
    let refresh = response.body["refresh_token"].as_str().unwrap();
    assert_eq!(
        response.set_cookies(),
        [
            format!("access_token={access}; HttpOnly; Max-Age=3600; Path=/api; SameSite=lax"),
            format!("refresh_token={refresh}; HttpOnly; Max-Age=604800; Path=/api/v1/auth/refresh; SameSite=lax"),
        ]
    );
    let access_claims = claims(access, ACCESS_SECRET);
    assert_eq!(access_claims["sub"], ann["id"]);
    assert_eq!(access_claims["username"], "admin_ann");
    assert_eq!(access_claims["role"], "admin");
    assert_eq!(access_claims["type"], "access");
    assert_eq!(access_claims["token_version"], 1);
    let refresh_claims = claims(refresh, REFRESH_SECRET);
    assert_eq!(refresh_claims["type"], "refresh");
    assert_eq!(refresh_claims.get("username"), None);
    let lifetime = refresh_claims["exp"].as_u64().unwrap() - jsonwebtoken::get_current_timestamp();
    assert!((7 * 86400 - 60..=7 * 86400).contains(&lifetime));

    let by_email = app.post("/auth/login").form(&[("username", "ADMIN_ANN@example.com"), ("password", PASSWORD)]).send().await;
    assert_eq!(by_email.status, 200);
    let me = app.get("/users/me").cookie(&format!("access_token={access}")).send().await;
    assert_eq!(me.status, 200);
    assert!(me.body["last_login"].is_string());
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE last_login IS NOT NULL").await, 1);
}

async fn login_failures_are_answered_like_the_original(app: TestApp) {
    app.register("bob_user").await;
    let wrong = app.post("/auth/login").form(&[("username", "bob_user"), ("password", "wrong-password")]).send().await;
    wrong.assert_detail(401, "Incorrect username or password");
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));
    assert!(wrong.set_cookies().is_empty());
    let unknown = app.post("/auth/login").form(&[("username", "nobody"), ("password", "whatever123")]).send().await;
    unknown.assert_detail(401, "Incorrect username or password");

    let empty = app.post("/auth/login").form(&[]).send().await;
    assert_eq!(
        empty.body,
        json!({"detail": [
            {"type": "missing", "loc": ["body", "username"], "msg": "Field required", "input": null},
            {"type": "missing", "loc": ["body", "password"], "msg": "Field required", "input": null}
        ]})
    );
    let as_json = app.post("/auth/login").json(&json!({"username": "bob_user", "password": PASSWORD})).send().await;
    as_json.assert_validation(&[("missing", json!(["body", "username"])), ("missing", json!(["body", "password"]))]);
    let grant = app
        .post("/auth/login")
        .form(&[("username", "bob_user"), ("password", PASSWORD), ("grant_type", "client_credentials")])
        .send()
        .await;
    grant.assert_validation(&[("string_pattern_mismatch", json!(["body", "grant_type"]))]);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE last_login IS NOT NULL").await, 0);
}

async fn public_hosts_get_secure_cookies(app: TestApp) {
    app.register("bob_user").await;
    let response = app
        .post("/auth/login")
        .header("host", "chat.example.com")
        .form(&[("username", "bob_user"), ("password", PASSWORD)])
        .send()
        .await;
    assert_eq!(response.status, 200);
    for cookie in response.set_cookies() {
        assert!(cookie.ends_with("; SameSite=lax; Secure"), "{cookie}");
    }
}

async fn refresh_issues_new_tokens_from_the_cookie_only(app: TestApp) {
    let (_, session) = app.signed_up("bob_user").await;
    let refreshed = app.post("/auth/refresh").cookie(&format!("refresh_token={}", session.refresh_token)).send().await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let access = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(refreshed.set_cookies().len(), 2);
    assert!(refreshed.set_cookies()[0].starts_with(&format!("access_token={access}; HttpOnly; Max-Age=3600; Path=/api;")));
    assert_eq!(app.get("/users/me").cookie(&format!("access_token={access}")).send().await.status, 200);

    app.post("/auth/refresh").send().await.assert_detail(401, "Could not validate credentials");
    app.post("/auth/refresh").cookie("refresh_token=garbage").send().await.assert_detail(401, "Could not validate credentials");
    app.post("/auth/refresh")
        .cookie(&format!("refresh_token={}", session.access_token))
        .send()
        .await
        .assert_detail(401, "Could not validate credentials");
    app.post("/auth/refresh")
        .json(&json!({"refresh_token": session.refresh_token}))
        .send()
        .await
        .assert_detail(401, "Could not validate credentials");
}

async fn logout_revokes_every_token_and_clears_cookies(app: TestApp) {
    let (_, session) = app.signed_up("bob_user").await;
    let second = app.login("bob_user", PASSWORD).await;
    let response = app.post("/auth/logout").session(&session).send().await;
    response.assert_detail(200, "Successfully logged out");
    let cookies = response.set_cookies();
    assert!(cookies[0].starts_with("access_token=\"\"; expires="), "{}", cookies[0]);
    assert!(cookies[0].ends_with("GMT; Max-Age=0; Path=/api; SameSite=lax"), "{}", cookies[0]);
    assert!(cookies[1].ends_with("GMT; Max-Age=0; Path=/api/v1/auth/refresh; SameSite=lax"), "{}", cookies[1]);
    assert_eq!(app.count("SELECT CAST(token_version AS BIGINT) FROM users").await, 2);

    for s in [&session, &second] {
        app.get("/users/me").session(s).send().await.assert_detail(401, "Could not validate credentials");
        app.post("/auth/refresh")
            .cookie(&format!("refresh_token={}", s.refresh_token))
            .send()
            .await
            .assert_detail(401, "Could not validate credentials");
    }
    app.post("/auth/logout").send().await.assert_detail(401, "Not authenticated");
}

/// Requests racing a logout may succeed while it runs, never after it has answered.
async fn logout_wins_over_requests_in_flight(app: TestApp) {
    let (_, session) = app.signed_up("bob_user").await;
    let logged_out = std::sync::atomic::AtomicBool::new(false);
    let readers_answered = tokio::sync::Notify::new();
    let reader = |_| async {
        let mut refused = 0;
        for _ in 0..40 {
            let sent_after_logout = logged_out.load(std::sync::atomic::Ordering::SeqCst);
            let status = app.get("/users/me").session(&session).send().await.status;
            readers_answered.notify_one();
            assert!(status == 200 || status == 401, "{status}");
            assert!(!(sent_after_logout && status == 200), "a request sent after logout answered was let in");
            refused += usize::from(status == 401);
        }
        refused
    };
    let logout = async {
        // The readers are under way: one of them has had an answer.
        readers_answered.notified().await;
        app.post("/auth/logout").session(&session).send().await.assert_detail(200, "Successfully logged out");
        logged_out.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (refused, ()) = tokio::join!(futures_util::future::join_all((0..8).map(reader)), logout);
    assert!(refused.iter().sum::<usize>() > 0, "the readers ended before the logout");
}

async fn bad_tokens_are_refused(app: TestApp) {
    app.register("admin_ann").await;
    let (bob, session) = app.signed_up("bob_user").await;
    let id = bob["id"].as_str().unwrap();
    let me = |cookie: String| app.get("/users/me").cookie(&cookie).send();

    let none = app.get("/users/me").send().await;
    none.assert_detail(401, "Not authenticated");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    me("access_token=abc.def.ghi".into()).await.assert_detail(401, "Could not validate credentials");
    me(format!("access_token={}", session.refresh_token)).await.assert_detail(401, "Could not validate credentials");

    let valid =
        json!({"sub": id, "username": "bob_user", "role": "user", "exp": in_an_hour(), "type": "access", "token_version": 1});
    assert_eq!(me(format!("access_token={}", token_with(valid.clone(), ACCESS_SECRET))).await.status, 200);

    let mut expired = valid.clone();
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 10);
    let mut old_version = valid.clone();
    old_version["token_version"] = json!(0);
    let mut stranger = valid.clone();
    stranger["sub"] = json!(uuid::Uuid::new_v4());
    let mut refresh_typed = valid.clone();
    refresh_typed["type"] = json!("refresh");
    let mut admin_claim = valid.clone();
    admin_claim["role"] = json!("admin");
    for (what, token) in [
        ("expired", token_with(expired, ACCESS_SECRET)),
        ("old token_version", token_with(old_version, ACCESS_SECRET)),
        ("unknown user", token_with(stranger, ACCESS_SECRET)),
        ("refresh type", token_with(refresh_typed, ACCESS_SECRET)),
        ("wrong secret", token_with(valid.clone(), "some-other-secret-0123456789abcdef0123")),
        ("refresh secret", token_with(valid.clone(), REFRESH_SECRET)),
    ] {
        let response = me(format!("access_token={token}")).await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
    }
    // A role claim is not trusted: the database says who is admin.
    let forged = token_with(admin_claim, ACCESS_SECRET);
    app.get("/users").cookie(&format!("access_token={forged}")).send().await.assert_detail(403, "Not an admin user");
    // alg: none is never accepted.
    let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64_url(&valid.to_string());
    me(format!("access_token={header}.{payload}.")).await.assert_detail(401, "Could not validate credentials");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

async fn bearer_header_works_for_api_clients(app: TestApp) {
    let (_, session) = app.signed_up("bob_user").await;
    let me = app.get("/users/me").bearer(&session.access_token).send().await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["username"], "bob_user");
    app.get("/users/me").bearer(&session.refresh_token).send().await.assert_detail(401, "Could not validate credentials");
}

async fn registration_by_an_admin_may_set_role_and_status(app: TestApp) {
    let (_, admin) = app.signed_up("admin_ann").await;
    let (_, bob) = app.signed_up("bob_user").await;
    let by_admin = app
        .post("/auth/register")
        .session(&admin)
        .json(&json!({"username": "carol_guest", "email": "carol@example.com", "password": PASSWORD, "role": "guest", "is_active": false}))
        .send()
        .await;
    assert_eq!(by_admin.status, 201);
    assert_eq!(by_admin.body["role"], "guest");
    assert_eq!(by_admin.body["is_active"], false);
    let by_user = app
        .post("/auth/register")
        .session(&bob)
        .json(&json!({"username": "mallory", "email": "mallory@example.com", "password": PASSWORD, "role": "admin"}))
        .send()
        .await;
    assert_eq!(by_user.status, 201);
    assert_eq!(by_user.body["role"], "user");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE role = 'admin'").await, 1);
}

async fn concurrent_registrations_of_one_name_give_one_account(app: TestApp) {
    let attempts = (0..20).map(|i| {
        app.post("/auth/register")
            .json(&json!({"username": "racer", "email": format!("racer{i}@example.com"), "password": PASSWORD}))
            .send()
    });
    let responses = futures_util::future::join_all(attempts).await;
    let created = responses.iter().filter(|r| r.status == 201).count();
    let refused = responses.iter().filter(|r| r.status == 400 && r.body["detail"] == "Username already registered").count();
    assert_eq!((created, refused), (1, 19), "{:?}", responses.iter().map(|r| (r.status, &r.body)).collect::<Vec<_>>());
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_settings").await, 1);
}
