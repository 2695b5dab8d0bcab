//! The audit log: one event for each change (none for reads), written or rolled back with the
//! change, and the admin's view of it.

use std::time::Duration;

use rovertchat::schemas::users::UserUpdate;
use rovertchat::services::audit::ActionContext;
use rovertchat::services::{users, ServiceError};
use rovertchat::store::audit::{AuditAction, AuditEvent, AuditFilter, AuditTarget};
use rovertchat::store::users::Role;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::on_both_databases;
use crate::support::{Backend, TestApp, PASSWORD};

on_both_databases!(
    every_change_is_recorded_once_and_reads_are_not,
    a_change_refused_after_its_event_was_written_leaves_no_event,
    admins_read_the_log_with_filters_and_others_cannot,
    events_past_their_retention_are_deleted,
    keys_model_policies_and_quotas_are_recorded,
);

/// What the log held when last looked at.
struct Log<'a> {
    app: &'a TestApp,
    seen: i64,
}

impl<'a> Log<'a> {
    fn new(app: &'a TestApp) -> Self {
        Log { app, seen: 0 }
    }

    async fn all(&self) -> (Vec<AuditEvent>, i64) {
        self.app.store.audit_events(&AuditFilter { limit: 1000, ..AuditFilter::default() }).await.unwrap()
    }

    /// Asserts that exactly one event was written since the last look, of `action`; returns it.
    async fn one_new(&mut self, action: &str) -> AuditEvent {
        let (events, total) = self.all().await;
        let new: Vec<&str> = events.iter().take((total - self.seen).max(0) as usize).map(|e| e.action.as_str()).collect();
        assert_eq!(new, [action], "events written since the last look (newest first)");
        self.seen = total;
        events.into_iter().next().unwrap()
    }

    /// Asserts that nothing was written since the last look.
    async fn nothing_new(&self, after: &str) {
        let (events, total) = self.all().await;
        let new: Vec<&str> = events.iter().take((total - self.seen).max(0) as usize).map(|e| e.action.as_str()).collect();
        assert!(new.is_empty(), "{after} wrote {new:?}");
    }
}

fn id(user: &Value) -> Uuid {
    user["id"].as_str().unwrap().parse().unwrap()
}

#[track_caller]
fn assert_event(event: &AuditEvent, actor: (&str, Option<Uuid>), target: Option<(&str, String)>, details: Value) {
    assert_eq!((event.actor_kind.as_str(), event.actor_user_id), actor, "actor of {}", event.action);
    assert_eq!(event.actor_api_key_id, None);
    let got_target = event.target_type.clone().map(|kind| (kind, event.target_id.clone().unwrap()));
    assert_eq!(got_target, target.map(|(kind, id)| (kind.to_owned(), id)), "target of {}", event.action);
    assert_eq!(event.details.0, details, "details of {}", event.action);
}

async fn every_change_is_recorded_once_and_reads_are_not(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("REFRESH_REUSE_GRACE_SECS", "0".into())]).await;
    let mut log = Log::new(&app);
    let user = |id: Uuid| Some(("user", id.to_string()));

    let ann = id(&app.register("admin_ann").await);
    let event = log.one_new("auth.register").await;
    assert_event(&event, ("anonymous", None), user(ann), json!({"role": "admin", "is_active": true, "by_admin": false}));
    assert_eq!(event.client_address.as_deref(), Some("127.0.0.1"));

    let admin = app.login("admin_ann", PASSWORD).await;
    let event = log.one_new("auth.login").await;
    assert_event(&event, ("user", Some(ann)), user(ann), json!({"password_hash_upgraded": false}));
    assert_eq!(event.client_address.as_deref(), Some("127.0.0.1"));

    let failed = app.post("/auth/login").form(&[("username", "admin_ann"), ("password", "Wrong-pass-1")]).send().await;
    assert_eq!(failed.status, 401);
    assert_event(&log.one_new("auth.login_failed").await, ("anonymous", None), user(ann), json!({"reason": "wrong_password"}));
    let unknown = app.post("/auth/login").form(&[("username", "nobody_here"), ("password", "Wrong-pass-1")]).send().await;
    assert_eq!(unknown.status, 401);
    assert_event(&log.one_new("auth.login_failed").await, ("anonymous", None), None, json!({"reason": "unknown_name"}));

    let created = app
        .post("/auth/register")
        .session(&admin)
        .json(&json!({"username": "bob_user", "email": "bob@example.com", "password": PASSWORD, "role": "user"}))
        .send()
        .await;
    let bob = id(&created.body);
    let event = log.one_new("auth.register").await;
    assert_event(&event, ("user", Some(ann)), user(bob), json!({"role": "user", "is_active": true, "by_admin": true}));

    // Reads write nothing.
    let bob_session = app.login("bob_user", PASSWORD).await;
    log.one_new("auth.login").await;
    for path in
        ["/users/me", "/users", &format!("/users/{bob}"), "/user-settings/me", &format!("/user-settings/{bob}"), "/admin/audit"]
    {
        assert_eq!(app.get(path).session(&admin).send().await.status, 200, "{path}");
    }
    assert_eq!(app.get("/users/me").session(&bob_session).send().await.status, 200);
    log.nothing_new("reading").await;

    let bob_path = format!("/users/{bob}");
    assert_eq!(app.put(&bob_path).session(&admin).json(&json!({"role": "admin"})).send().await.status, 200);
    assert_event(&log.one_new("user.role_changed").await, ("user", Some(ann)), user(bob), json!({"from": "user", "to": "admin"}));
    assert_eq!(app.put(&bob_path).session(&admin).json(&json!({"role": "admin"})).send().await.status, 200);
    log.nothing_new("setting the role an account has").await;
    assert_eq!(app.put(&bob_path).session(&admin).json(&json!({"role": "user"})).send().await.status, 200);
    log.one_new("user.role_changed").await;

    assert_eq!(app.delete(&bob_path).session(&admin).send().await.status, 200);
    assert_event(&log.one_new("user.deactivated").await, ("user", Some(ann)), user(bob), json!({}));
    let inactive = app.post("/auth/login").form(&[("username", "bob_user"), ("password", PASSWORD)]).send().await;
    inactive.assert_detail(400, "Inactive user");
    assert_event(&log.one_new("auth.login_failed").await, ("anonymous", None), user(bob), json!({"reason": "inactive"}));
    assert_eq!(app.post(&format!("{bob_path}/activate")).session(&admin).send().await.status, 200);
    assert_event(&log.one_new("user.activated").await, ("user", Some(ann)), user(bob), json!({}));

    assert_eq!(app.put(&bob_path).session(&admin).json(&json!({"password": "Admin-set-pass-1"})).send().await.status, 200);
    assert_event(&log.one_new("user.password_changed").await, ("user", Some(ann)), user(bob), json!({}));
    let bob_session = app.login("bob_user", "Admin-set-pass-1").await;
    log.one_new("auth.login").await;
    let own = app.put("/users/me").session(&bob_session).json(&json!({"password": "Bob-own-pass-2"})).send().await;
    assert_eq!(own.status, 200);
    assert_event(&log.one_new("user.password_changed").await, ("user", Some(bob)), user(bob), json!({}));
    let bob_session = app.login("bob_user", "Bob-own-pass-2").await;
    log.one_new("auth.login").await;
    assert_eq!(app.put("/users/me").session(&bob_session).json(&json!({"email": "bob2@example.com"})).send().await.status, 200);
    log.nothing_new("changing one's e-mail address").await;

    let settings = format!("/user-settings/{bob}");
    let changed = app.put(&settings).session(&admin).json(&json!({"display_name": "Bobby Tables"})).send().await;
    assert_eq!(changed.status, 200);
    assert_event(&log.one_new("settings.updated").await, ("user", Some(ann)), user(bob), json!({"fields": ["display_name"]}));
    assert_eq!(app.put("/user-settings/me").session(&admin).json(&json!({"display_name": "Ann"})).send().await.status, 200);
    log.nothing_new("a user changing their own settings").await;
    assert_eq!(app.delete(&settings).session(&admin).send().await.status, 204);
    assert_event(&log.one_new("settings.deleted").await, ("user", Some(ann)), user(bob), json!({}));

    let pulled = app.post("/ollama/pull").session(&admin).json(&json!({"model": "tinyllama:latest"})).send().await;
    assert_eq!(pulled.status, 200);
    let model = Some(("model", "tinyllama:latest".to_owned()));
    assert_event(&log.one_new("model.pulled").await, ("user", Some(ann)), model.clone(), json!({"provider": "default"}));
    let missing = app.post("/ollama/pull").session(&admin).json(&json!({"model": "nonexistent-model:latest"})).send().await;
    assert_eq!(missing.status, 404);
    log.nothing_new("a pull that failed").await;
    let deleted = app.delete("/ollama/delete").session(&admin).json(&json!({"model": "tinyllama:latest"})).send().await;
    assert_eq!(deleted.status, 200);
    assert_event(&log.one_new("model.deleted").await, ("user", Some(ann)), model, json!({"provider": "default"}));

    // A retired refresh token presented again.
    let refresh = |token: &str| app.post("/auth/refresh").cookie(&format!("refresh_token={token}")).send();
    let fresh = app.login("bob_user", "Bob-own-pass-2").await;
    log.one_new("auth.login").await;
    assert_eq!(refresh(&fresh.refresh_token).await.status, 200);
    log.nothing_new("a refresh").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(refresh(&fresh.refresh_token).await.status, 401);
    let event = log.one_new("auth.refresh_reuse").await;
    assert_eq!(event.target_id, Some(bob.to_string()));
    assert_eq!(event.actor_kind, "anonymous");
    assert!(event.details.0["family_id"].is_string());

    assert_eq!(app.post("/auth/logout").session(&admin).send().await.status, 200);
    assert_event(&log.one_new("auth.logout").await, ("user", Some(ann)), user(ann), json!({}));

    // No password, name tried, or setting's value anywhere in the log.
    let (events, _) = log.all().await;
    let everything = format!("{events:?}");
    for secret in
        [PASSWORD, "Wrong-pass-1", "Admin-set-pass-1", "Bob-own-pass-2", "nobody_here", "Bobby Tables", &fresh.refresh_token]
    {
        assert!(!everything.contains(secret), "{secret:?} is in the audit log");
    }
}

async fn a_change_refused_after_its_event_was_written_leaves_no_event(app: TestApp) {
    let ann = id(&app.register("admin_ann").await);
    let before = app.count("SELECT COUNT(*) FROM audit_events").await;
    // Demoting the only admin: the update and its event are written, then the count of admins
    // refuses the change and the transaction is rolled back, event included.
    let demote = UserUpdate { role: Some(Role::User), ..UserUpdate::default() };
    let refused = users::update_by_admin(&app.store, &ActionContext::cli(), ann, demote).await;
    assert!(matches!(refused, Err(ServiceError::Forbidden(_))), "{refused:?}");
    let deactivate = users::set_active_by_admin(&app.store, &ActionContext::cli(), ann, false).await;
    assert!(matches!(deactivate, Err(ServiceError::Forbidden(_))), "{deactivate:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, before);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE role = 'admin' AND is_active").await, 1);

    // The same change, allowed once another admin exists, is written with its event.
    let second = app.register("second_admin").await;
    let promote = UserUpdate { role: Some(Role::Admin), ..UserUpdate::default() };
    users::update_by_admin(&app.store, &ActionContext::cli(), id(&second), promote).await.unwrap();
    let demote = UserUpdate { role: Some(Role::User), ..UserUpdate::default() };
    users::update_by_admin(&app.store, &ActionContext::cli(), ann, demote).await.unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events WHERE action = 'user.role_changed' AND actor_kind = 'cli'").await, 2);
}

async fn admins_read_the_log_with_filters_and_others_cannot(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("TRUSTED_PROXIES", "127.0.0.1".into())]).await;
    let (ann, admin) = app.signed_up("admin_ann").await;
    let (bob, bob_session) = app.signed_up("bob_user").await;
    let (ann, bob) = (ann["id"].as_str().unwrap().to_owned(), bob["id"].as_str().unwrap().to_owned());
    // A login through a trusted proxy records the address the proxy names.
    let proxied = app
        .post("/auth/login")
        .header("x-real-ip", "203.0.113.7")
        .form(&[("username", "bob_user"), ("password", "Wrong-pass-1")])
        .send()
        .await;
    assert_eq!(proxied.status, 401);
    let window_start = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(app.post("/auth/logout").session(&bob_session).send().await.status, 200);

    let audit = |query: &str| app.get(&format!("/admin/audit{query}")).session(&admin).send();
    let all = audit("").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let actions = |page: &Value| -> Vec<String> {
        page["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(
        actions(&all.body),
        ["auth.logout", "auth.login_failed", "auth.login", "auth.register", "auth.login", "auth.register"],
        "newest first"
    );
    assert_eq!(
        (all.body["total"].as_i64(), all.body["skip"].as_i64(), all.body["limit"].as_i64()),
        (Some(6), Some(0), Some(100))
    );
    let logout = &all.body["events"][0];
    assert_eq!(logout["actor"], json!({"kind": "user", "user_id": bob, "api_key_id": null}));
    assert_eq!(logout["target"], json!({"type": "user", "id": bob}));
    assert_eq!(logout["client_address"], "127.0.0.1");
    assert_eq!(logout["details"], json!({}));
    assert!(logout["occurred_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(all.body["events"][1]["client_address"], "203.0.113.7");
    assert_eq!(all.body["events"][1]["actor"]["kind"], "anonymous");

    assert_eq!(actions(&audit(&format!("?actor_id={bob}")).await.body), ["auth.logout", "auth.login"]);
    assert_eq!(actions(&audit(&format!("?actor_id={ann}&action=auth.login")).await.body), ["auth.login"]);
    let failures = audit("?action=auth.login_failed").await;
    assert_eq!((actions(&failures.body), failures.body["total"].as_i64()), (vec!["auth.login_failed".to_owned()], Some(1)));
    let from = window_start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(actions(&audit(&format!("?from={from}")).await.body), ["auth.logout"]);
    assert_eq!(actions(&audit(&format!("?to={from}&limit=1")).await.body), ["auth.login_failed"]);
    let page = audit("?skip=1&limit=2").await;
    assert_eq!(
        (actions(&page.body), page.body["total"].as_i64()),
        (vec!["auth.login_failed".into(), "auth.login".into()], Some(6))
    );
    let today = window_start.date_naive();
    assert_eq!(audit(&format!("?from={today}")).await.body["total"], 6, "a date is its midnight");
    let offset = window_start.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap()).to_rfc3339();
    let offset = offset.replace('+', "%2B");
    assert_eq!(actions(&audit(&format!("?from={offset}")).await.body).len(), 1, "offsets are read");
    assert_eq!(audit("?action=auth.logout&actor_id=00000000-0000-4000-8000-000000000000").await.body["total"], 0);

    audit("?action=auth.nothing").await.assert_validation(&[("literal_error", json!(["query", "action"]))]);
    for time in ["yesterday", "-99999-01-01", "%2B99999-01-01T00:00:00", "2026-13-01"] {
        audit(&format!("?from={time}")).await.assert_validation(&[("datetime_parsing", json!(["query", "from"]))]);
    }
    audit("?actor_id=42").await.assert_validation(&[("uuid_parsing", json!(["query", "actor_id"]))]);
    audit("?limit=1001").await.assert_validation(&[("less_than_equal", json!(["query", "limit"]))]);

    let bob_again = app.login("bob_user", PASSWORD).await;
    app.get("/admin/audit").session(&bob_again).send().await.assert_detail(403, "Not an admin user");
    app.get("/admin/audit").send().await.assert_detail(401, "Not authenticated");
}

async fn events_past_their_retention_are_deleted(app: TestApp) {
    let old = ActionContext::cli().event(AuditAction::ModelDeleted, Some(AuditTarget::model("old:latest")), json!({}));
    let old = rovertchat::store::audit::NewAuditEvent { occurred_at: old.occurred_at - chrono::Duration::days(181), ..old };
    app.store.record_audit(&old).await.unwrap();
    app.register("admin_ann").await;
    let deleted = rovertchat::services::audit::prune(&app.store, Duration::from_secs(180 * 24 * 3600)).await.unwrap();
    assert_eq!(deleted, 1);
    let (events, total) = app.store.audit_events(&AuditFilter { limit: 10, ..AuditFilter::default() }).await.unwrap();
    assert_eq!((total, events[0].action.as_str()), (1, "auth.register"));
}

async fn keys_model_policies_and_quotas_are_recorded(app: TestApp) {
    let mut log = Log::new(&app);
    let (ann, admin) = app.signed_up("admin_ann").await;
    let (bob, bob_s) = app.signed_up("bob_user").await;
    log.seen = log.all().await.1;

    let created = app.api_key(&bob_s, json!({"name": "laptop", "models": ["llama3.2:1b"]})).await;
    let key_id = created["id"].as_str().unwrap().to_owned();
    let event = log.one_new("api_key.created").await;
    assert_eq!(
        (event.actor_user_id, event.target_type.as_deref(), event.target_id.as_deref()),
        (Some(id(&bob)), Some("api_key"), Some(key_id.as_str()))
    );
    assert_eq!(event.details.0["name"], "laptop");
    let text = format!("{:?}", log.all().await.0);
    assert!(!text.contains(created["key"].as_str().unwrap()), "the key itself is never in the log");

    app.get("/api-keys").session(&bob_s).send().await;
    app.openai(reqwest::Method::GET, "/models", created["key"].as_str().unwrap()).send().await;
    app.get("/admin/models").session(&admin).send().await;
    app.get("/admin/quotas").session(&admin).send().await;
    log.nothing_new("reads").await;

    assert_eq!(app.delete(&format!("/api-keys/{key_id}")).session(&bob_s).send().await.status, 204);
    assert_eq!(log.one_new("api_key.revoked").await.details.0, json!({"by_admin": false}));
    let other = app.api_key(&bob_s, json!({"name": "desktop"})).await["id"].as_str().unwrap().to_owned();
    log.one_new("api_key.created").await;
    assert_eq!(app.delete(&format!("/admin/api-keys/{other}")).session(&admin).send().await.status, 204);
    let event = log.one_new("api_key.revoked").await;
    assert_eq!((event.actor_user_id, event.details.0.clone()), (Some(id(&ann)), json!({"by_admin": true})));
    assert_eq!(app.delete(&format!("/admin/api-keys/{other}")).session(&admin).send().await.status, 404);
    log.nothing_new("revoking a revoked key").await;

    let policy = app
        .put("/admin/models/qwen3:0.6b")
        .session(&admin)
        .json(&json!({"allowed_roles": ["admin"], "system_prompt": "secret plan"}))
        .send()
        .await;
    assert_eq!(policy.status, 200);
    let event = log.one_new("model.policy_changed").await;
    assert_eq!((event.target_type.as_deref(), event.target_id.as_deref()), (Some("model"), Some("qwen3:0.6b")));
    assert_eq!(event.details.0["allowed_roles"], json!(["admin"]));
    assert_eq!(event.details.0["system_prompt_set"], true);
    let refused = app.put("/admin/models/qwen3:0.6b").session(&admin).json(&json!({"user_ids": [Uuid::new_v4()]})).send().await;
    assert_eq!(refused.status, 400);
    log.nothing_new("a refused policy change").await;

    let quotas =
        json!({"roles": {"guest": {"tokens_per_day": 10, "requests_per_day": 1, "concurrent_generations": 1}}, "users": {}});
    assert_eq!(app.put("/admin/quotas").session(&admin).json(&quotas).send().await.status, 200);
    let event = log.one_new("quotas.changed").await;
    assert_eq!(event.details.0["roles"]["guest"]["tokens_per_day"], 10);

    let file = std::fs::read("tests/fixtures/imports/chatgpt-conversations.json").unwrap();
    let imported = app.post("/chats/import").session(&bob_s).raw("application/json", file.clone()).send().await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    let event = log.one_new("chats.imported").await;
    assert_eq!(event.details.0["imported"], imported.body["imported"]);
    assert_eq!(event.target_id, Some(id(&bob).to_string()));
    let again = app.post("/chats/import").session(&bob_s).raw("application/json", file).send().await;
    assert_eq!(again.body["imported"], 0);
    log.nothing_new("an import that stored nothing").await;
}
