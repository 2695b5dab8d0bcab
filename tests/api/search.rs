//! `GET /chats/search`: the caller's chat titles and messages, best first, with marked snippets.

use std::collections::HashSet;

use rovertchat::store::search::SEARCH_RANKED_MATCHES;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{Session, TestApp};

on_both_databases!(
    titles_and_messages_are_found_best_first_with_snippets,
    words_match_by_prefix_in_any_case_and_phrases_in_order,
    other_users_chats_are_never_found,
    archived_chats_are_found_only_when_asked,
    edits_renames_and_deletes_show_at_once,
    queries_and_pages_are_validated,
    a_word_in_more_messages_than_are_ranked_is_answered_from_the_newest,
);

async fn search(app: &TestApp, session: &Session, query: &str) -> Value {
    let response = app.get(&format!("/chats/search?{query}")).session(session).send().await;
    assert_eq!(response.status, 200, "{query}: {}", response.body);
    response.body
}

/// (chat title or message role, snippet) of each result.
fn found(body: &Value) -> Vec<(String, String)> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let what = r["role"].as_str().map_or_else(|| format!("title {}", r["chat_title"].as_str().unwrap()), str::to_owned);
            (what, r["snippet"].as_str().unwrap().to_owned())
        })
        .collect()
}

async fn titles_and_messages_are_found_best_first_with_snippets(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let bread = app.new_chat(&bob, Some("Sourdough <starter> & friends")).await;
    let question = app.post_message(&bob, &bread, "user", "My sourdough starter smells like acetone.").await;
    app.post_message(&bob, &bread, "assistant", "Feed the starter; a sourdough sourdough starter loves <b>rye</b>.").await;
    let other = app.new_chat(&bob, Some("Weekend")).await;
    let long =
        format!("{} The sourdough is ready. {}", "Lorem ipsum dolor sit amet. ".repeat(20), "More filler text here. ".repeat(20));
    app.post_message(&bob, &other, "user", &long).await;

    let body = search(&app, &bob, "q=sourdough").await;
    assert_eq!(body["total"], 4);
    let results = body["results"].as_array().unwrap();
    // The title first, then the message that says it most, then the others.
    assert_eq!(results[0]["chat_id"], bread.as_str());
    assert_eq!(results[0]["chat_title"], "Sourdough <starter> & friends");
    assert_eq!(results[0]["message_id"], Value::Null);
    assert_eq!(results[0]["role"], Value::Null);
    assert_eq!(results[0]["snippet"], "<mark>Sourdough</mark> &lt;starter&gt; &amp; friends");
    assert_eq!(results[1]["role"], "assistant");
    assert_eq!(
        results[1]["snippet"],
        "Feed the starter; a <mark>sourdough</mark> <mark>sourdough</mark> starter loves &lt;b&gt;rye&lt;/b&gt;."
    );
    let keys: Vec<&str> = results[2].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["chat_id", "chat_title", "message_id", "role", "snippet", "created_at"]);
    let by_message: Vec<&Value> = results.iter().filter(|r| r["message_id"] == question["id"]).collect();
    assert_eq!(by_message[0]["snippet"], "My <mark>sourdough</mark> starter smells like acetone.");
    assert_eq!(by_message[0]["created_at"], question["created_at"]);
    // A long message shows the text around the match, cut at both ends.
    let cut = results.iter().find(|r| r["chat_id"] == other.as_str()).unwrap()["snippet"].as_str().unwrap();
    assert!(cut.starts_with('…') && cut.ends_with('…'), "{cut}");
    assert!(cut.contains("amet. The <mark>sourdough</mark> is ready. More filler"), "{cut}");
    assert!(cut.chars().count() < 260, "{cut}");

    let both = search(&app, &bob, "q=sourdough%20rye").await;
    assert_eq!(
        found(&both),
        [("assistant".to_owned(), results[1]["snippet"].as_str().unwrap().replace("rye", "<mark>rye</mark>"))]
    );
}

async fn words_match_by_prefix_in_any_case_and_phrases_in_order(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&bob, Some("Trip")).await;
    app.post_message(&bob, &chat, "user", "A weekend in Zürich by train, then New York.").await;
    app.post_message(&bob, &chat, "user", "York is new to me.").await;

    let snippets = |body: Value| found(&body).into_iter().map(|(_, s)| s).collect::<Vec<_>>();
    assert_eq!(snippets(search(&app, &bob, "q=WEEK").await), ["A <mark>weekend</mark> in Zürich by train, then New York."]);
    assert_eq!(snippets(search(&app, &bob, "q=z%C3%BCr").await).len(), 1, "accented words match themselves");
    assert_eq!(
        snippets(search(&app, &bob, "q=%22new%20york%22").await),
        ["A weekend in Zürich by train, then <mark>New</mark> <mark>York</mark>."]
    );
    assert_eq!(search(&app, &bob, "q=york%20new").await["total"], 2, "words alone match in any order");
    assert_eq!(search(&app, &bob, "q=%22york%20new%22").await["total"], 0, "a phrase matches in its order");
    assert_eq!(search(&app, &bob, "q=%22wee%22").await["total"], 0, "a quoted word is a whole word");
    assert_eq!(search(&app, &bob, "q=trainee").await["total"], 0);
    // Characters of query syntax are only separators.
    assert_eq!(search(&app, &bob, "q=train*%20%27%3A%20%26%20(zur").await["total"], u64::from(!app.is_postgres()));
    if !app.is_postgres() {
        // SQLite folds accents; PostgreSQL's `simple` configuration does not (see README).
        assert_eq!(snippets(search(&app, &bob, "q=zurich").await), ["A weekend in <mark>Zürich</mark> by train, then New York."]);
    }
}

async fn other_users_chats_are_never_found(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let (_, ann) = app.signed_up("ann_admin").await;
    let anns = app.new_chat(&ann, Some("Secret plans")).await;
    app.post_message(&ann, &anns, "user", "secret recipe").await;
    let bobs = app.new_chat(&bob, None).await;
    app.post_message(&bob, &bobs, "user", "no secrets here").await;

    let body = search(&app, &bob, "q=secret").await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["results"][0]["chat_id"], bobs.as_str());
    assert_eq!(search(&app, &bob, "q=recipe").await, json!({"results": [], "total": 0}));
    assert_eq!(search(&app, &ann, "q=secret").await["total"], 2);
    app.get("/chats/search?q=secret").send().await.assert_detail(401, "Not authenticated");
}

async fn archived_chats_are_found_only_when_asked(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let cats = app.new_chat(&bob, Some("Cat names")).await;
    app.post_message(&bob, &cats, "user", "names for a black cat").await;
    app.patch(&format!("/chats/chat/{cats}")).session(&bob).json(&json!({"is_archived": true})).send().await;

    assert_eq!(search(&app, &bob, "q=cat").await["total"], 0);
    assert_eq!(search(&app, &bob, "q=cat&include_archived=false").await["total"], 0);
    assert_eq!(search(&app, &bob, "q=cat&include_archived=true").await["total"], 2);
}

async fn edits_renames_and_deletes_show_at_once(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&bob, Some("Garden")).await;
    let message = app.post_message(&bob, &chat, "user", "tomatoes need sun").await;
    let id = message["id"].as_str().unwrap();
    assert_eq!(search(&app, &bob, "q=tomatoes").await["total"], 1);

    app.patch(&format!("/chats/{chat}/messages/{id}")).session(&bob).json(&json!({"content": "peppers need sun"})).send().await;
    assert_eq!(search(&app, &bob, "q=tomatoes").await["total"], 0);
    assert_eq!(search(&app, &bob, "q=peppers").await["total"], 1);

    app.patch(&format!("/chats/chat/{chat}")).session(&bob).json(&json!({"title": "Balcony"})).send().await;
    assert_eq!(search(&app, &bob, "q=garden").await["total"], 0);
    assert_eq!(found(&search(&app, &bob, "q=balcony").await), [("title Balcony".to_owned(), "<mark>Balcony</mark>".to_owned())]);

    app.delete(&format!("/chats/{chat}/messages/{id}")).session(&bob).send().await;
    assert_eq!(search(&app, &bob, "q=peppers").await["total"], 0);
    app.post_message(&bob, &chat, "user", "basil too").await;
    app.delete(&format!("/chats/chat/{chat}")).session(&bob).send().await;
    assert_eq!(search(&app, &bob, "q=basil").await["total"], 0);
    assert_eq!(search(&app, &bob, "q=balcony").await["total"], 0);
}

async fn queries_and_pages_are_validated(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&bob, Some("apple 1")).await;
    for n in 2..=5 {
        app.post_message(&bob, &chat, "user", &format!("apple {n}")).await;
    }
    let page = search(&app, &bob, "q=apple&skip=3&limit=2").await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert_eq!(search(&app, &bob, "q=apple&skip=10").await, json!({"results": [], "total": 5}));

    let refused = |query: &'static str| app.get(&format!("/chats/search?{query}")).session(&bob).send();
    refused("").await.assert_validation(&[("missing", json!(["query", "q"]))]);
    refused("q=").await.assert_validation(&[("string_too_short", json!(["query", "q"]))]);
    refused("q=%22%22%20--%20*").await.assert_validation(&[("no_words", json!(["query", "q"]))]);
    let long = format!("q={}", "a".repeat(201));
    app.get(&format!("/chats/search?{long}"))
        .session(&bob)
        .send()
        .await
        .assert_validation(&[("string_too_long", json!(["query", "q"]))]);
    let many = format!("q={}", vec!["w"; 17].join("%20"));
    app.get(&format!("/chats/search?{many}"))
        .session(&bob)
        .send()
        .await
        .assert_validation(&[("too_many_words", json!(["query", "q"]))]);
    // Odd words never reach the engines as syntax: an answer, never an error.
    for odd in ["1e5", "0x1F", "ǅemal", "Ⅻ", "٣٤", "𝔘𝔫𝔦", "ー", "a\u{301}", "x_y", "e-mail@host.org", "'a'", "\\", "%25"]
    {
        let q: String = url::form_urlencoded::byte_serialize(odd.as_bytes()).collect();
        let response = app.get(&format!("/chats/search?q={q}")).session(&bob).send().await;
        assert!(matches!(response.status.as_u16(), 200 | 422), "{odd}: {} {}", response.status, response.body);
    }
    refused("q=apple&limit=0").await.assert_validation(&[("greater_than_equal", json!(["query", "limit"]))]);
    refused("q=apple&skip=-1").await.assert_validation(&[("greater_than_equal", json!(["query", "skip"]))]);
}

/// A word found in more messages than are ranked: its title and newest messages are ranked and
/// paged through (`total` is capped), older messages only by a narrower query.
async fn a_word_in_more_messages_than_are_ranked_is_answered_from_the_newest(app: TestApp) {
    let (_, bob) = app.signed_up("bob_user").await;
    let chat = app.new_chat(&bob, Some("Apple pie")).await;
    // Straight into the database (the API would take a while), one a second, the oldest first.
    // The three oldest are the best matches on both backends (short, the word twice), so they
    // would come first if all were ranked; then the newest but five.
    let older = 10;
    let messages = SEARCH_RANKED_MATCHES + older;
    let content = format!(
        "CASE WHEN n <= 3 THEN 'apple apple' WHEN n = {best} THEN 'apple new' ELSE 'apple ' || n || ' is one of many words' END",
        best = messages - 5
    );
    app.execute(&if app.is_postgres() {
        format!(
            "INSERT INTO messages (id, chat_id, role, content, created_at, tokens_used) \
             SELECT gen_random_uuid(), '{chat}', 'user', {content}, TIMESTAMP '2026-01-01' + n * INTERVAL '1 second', 0 \
             FROM generate_series(1, {messages}) n"
        )
    } else {
        format!(
            "WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < {messages}) \
             INSERT INTO messages (id, chat_id, role, content, created_at, tokens_used) \
             SELECT randomblob(16), X'{}', 'user', {content}, datetime('2026-01-01', '+' || n || ' seconds'), 0 FROM numbers",
            chat.replace('-', "")
        )
    })
    .await;

    let first = search(&app, &bob, "q=apple&limit=2").await;
    assert_eq!(first["total"], SEARCH_RANKED_MATCHES);
    assert_eq!(
        found(&first),
        [
            ("title Apple pie".to_owned(), "<mark>Apple</mark> pie".to_owned()),
            ("user".to_owned(), "<mark>apple</mark> new".to_owned()),
        ]
    );
    // The pages hold each ranked match once, and no older one.
    let mut seen = HashSet::new();
    for skip in (0..SEARCH_RANKED_MATCHES).step_by(100) {
        let page = search(&app, &bob, &format!("q=apple&skip={skip}&limit=100")).await;
        assert_eq!(page["total"], SEARCH_RANKED_MATCHES);
        for (what, snippet) in found(&page) {
            assert_ne!(snippet, "<mark>apple</mark> <mark>apple</mark>", "an older message");
            assert!(seen.insert((what, snippet.clone())), "twice: {snippet}");
        }
    }
    assert_eq!(seen.len() as i64, SEARCH_RANKED_MATCHES);
    let past = search(&app, &bob, &format!("q=apple&skip={SEARCH_RANKED_MATCHES}")).await;
    assert_eq!(past, json!({"results": [], "total": SEARCH_RANKED_MATCHES}));
    // A narrower query finds the older ones.
    assert_eq!(search(&app, &bob, "q=%22apple%20apple%22").await["total"], 3);
}
