//! Who may sign up, and as what: REGISTRATION and DEFAULT_ROLE.

use serde_json::json;

use crate::on_both_databases;
use crate::support::{Backend, TestApp, PASSWORD};

on_both_databases!(closed_registration_lets_only_admins_create_accounts, guests_sign_up_and_an_admin_promotes_them,);

fn account(name: &str) -> serde_json::Value {
    json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD})
}

async fn closed_registration_lets_only_admins_create_accounts(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("REGISTRATION", "closed".into())]).await;
    // The very first account opens the server, and is its admin.
    let (first, admin) = app.signed_up("ann_admin").await;
    assert_eq!(first["role"], "admin");
    let refused = app.post("/auth/register").json(&account("eve_stranger")).send().await;
    refused.assert_detail(403, "Registration is closed: ask an admin for an account");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);

    let made = app.post("/auth/register").session(&admin).json(&account("bob_user")).send().await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["role"], "user");
    let bob = app.login("bob_user", PASSWORD).await;
    let by_user = app.post("/auth/register").session(&bob).json(&account("carl_friend")).send().await;
    by_user.assert_detail(403, "Registration is closed: ask an admin for an account");
}

async fn guests_sign_up_and_an_admin_promotes_them(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("DEFAULT_ROLE", "guest".into())]).await;
    let (first, admin) = app.signed_up("ann_admin").await;
    assert_eq!(first["role"], "admin", "the first account is still admin");
    let (guest, _) = app.signed_up("gina_guest").await;
    assert_eq!(guest["role"], "guest");
    let by_admin = app
        .post("/auth/register")
        .session(&admin)
        .json(&json!({"username": "uma_user", "email": "uma@example.com", "password": PASSWORD, "role": "user"}))
        .send()
        .await;
    assert_eq!(by_admin.body["role"], "user", "an admin chooses the role");

    let promoted =
        app.put(&format!("/users/{}", guest["id"].as_str().unwrap())).session(&admin).json(&json!({"role": "user"})).send().await;
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    assert_eq!(promoted.body["role"], "user");
    let session = app.login("gina_guest", PASSWORD).await;
    assert_eq!(app.get("/users/me").session(&session).send().await.body["role"], "user");
}
