use serde_json::json;

use crate::on_both_databases;
use crate::support::TestApp;

on_both_databases!(health_reports_process_and_database, unknown_routes_and_methods_answer_json);

async fn health_reports_process_and_database(app: TestApp) {
    let health = app.get("/health").send().await;
    assert_eq!(health.body, json!({"status": "healthy"}));
    let db = app.get("/health/db").send().await;
    assert_eq!(db.status, 200);
    assert_eq!(db.body["db_status"], "reachable");
    assert!(db.body["latency_ms"].as_f64().unwrap() >= 0.0);
}

async fn unknown_routes_and_methods_answer_json(app: TestApp) {
    app.get("/nope").send().await.assert_detail(404, "Not Found");
    let wrong_method = app.post("/health").send().await;
    wrong_method.assert_detail(405, "Method Not Allowed");
    assert_eq!(wrong_method.header("allow"), Some("GET,HEAD"));
}
