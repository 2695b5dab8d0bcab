//! A flood of logins cannot build a backlog of password hashing that real logins wait behind.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;

use crate::support::process::ServerProcess;

use crate::support::PASSWORD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_whose_clients_hang_up_are_not_hashed() {
    let mut server = ServerProcess::start(&[]);
    let client = reqwest::Client::new();
    server.sign_up("bob_user");

    // 2,000 logins whose clients close the connection right after sending: at ~25 ms of hashing
    // each on two threads, doing them all would keep real logins waiting for about 25 s.
    let address = server.address.to_string();
    let body = "username=bob_user&password=wrong-password";
    let request = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..2_000 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        drop(socket);
    }

    // A person's login, retried as `Retry-After` asks while the flood is still being refused.
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let login = client
            .post(server.url("/auth/login"))
            .form(&[("username", "bob_user"), ("password", PASSWORD)])
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        match login.status().as_u16() {
            200 => break,
            503 if attempts < 10 => tokio::time::sleep(Duration::from_secs(2)).await,
            other => panic!("login answered {other} after {attempts} attempts"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(8), "a real login took {:?} ({attempts} attempts)", started.elapsed());
    // The queued checks of the abandoned logins were dropped, not computed.
    let skipped = server.wait_for_log("password checks skipped");
    assert!(skipped.contains("skipped="), "{skipped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_waiting_logins_is_refused_at_once_with_retry_after() {
    let server = ServerProcess::start(&[]);
    let client = reqwest::Client::new();
    server.sign_up("bob_user");

    let flood = (0..300).map(|_| {
        client
            .post(server.url("/auth/login"))
            .form(&[("username", "bob_user"), ("password", "wrong-password")])
            .timeout(Duration::from_secs(60))
            .send()
    });
    let mut refused = 0;
    for response in join_all(flood).await {
        let response = response.unwrap();
        match response.status().as_u16() {
            401 => {}
            503 => {
                refused += 1;
                assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["detail"], "Too many sign-ins at once; please try again in a moment");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "every one of 300 simultaneous logins was queued");
    let login = client.post(server.url("/auth/login")).form(&[("username", "bob_user"), ("password", PASSWORD)]).send().await;
    assert_eq!(login.unwrap().status(), 200);
}
