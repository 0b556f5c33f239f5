//! The error table's infrastructure rows: unknown routes, overload, store
//! failures, bugs. (Business refusals are in `payments`, key errors in
//! `idempotency`, bad input in `bad_input`.)

use std::sync::Arc;

use tally_http::{HttpConfig, Readiness};
use tally_mem::CommitFault;

use crate::helpers::{ADMIN_KEY, Call, Options, TestApp};

#[tokio::test]
async fn unknown_routes_are_problem_404s() {
    let app = TestApp::spawn();
    for path in ["/", "/v2/wallet", "/v1/wallets", "/v1/payments/x/refund"] {
        app.call(Call::get(path)).await.assert_problem(404, "not_found");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_problem_405() {
    let app = TestApp::spawn();
    let response = app.call(Call::new(axum::http::Method::DELETE, "/v1/wallet")).await;
    response.assert_problem(405, "method_not_allowed");
    app.call(Call::get("/v1/wallet/top-ups")).await.assert_problem(405, "method_not_allowed");
}

#[tokio::test]
async fn a_saturated_server_sheds_load_with_503_and_retry_after() {
    let mut options = Options::default();
    options.http.concurrency_limit = 0;
    options.http.retry_after_seconds = 7;
    let app = TestApp::spawn_with(options);
    let response = app.call(Call::get("/v1/wallet").bearer("whoever")).await;
    response.assert_problem(503, "unavailable");
    assert_eq!(response.header("retry-after"), Some("7"));
    // Operations stay reachable.
    app.call(Call::get("/healthz")).await.assert_status(200);
    app.call(Call::get("/readyz")).await.assert_status(200);
}

#[tokio::test]
async fn a_busy_record_answers_503_and_changes_nothing() {
    // No waiting allowed on a lock: contention fails at once (QueueFull → Busy).
    let options = Options { locks: tally_lock::Config { max_waiters_per_key: 0 }, ..Options::default() };
    let app = TestApp::spawn_with(options);
    let user = app.create_user("busy").await;
    let guard = app.hold_wallet(&user);
    let response = app.top_up(&user, "k", 10).await;
    let problem = response.assert_problem(503, "unavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(!problem["detail"].as_str().unwrap().contains("lock"), "no internals in 5xx");
    drop(guard);
    // The failure was not stored: the same key runs now.
    let retried = app.top_up(&user, "k", 10).await;
    retried.assert_status(201);
    assert_eq!(retried.header("idempotent-replayed"), None);
    assert_eq!(app.balance(&user).await, 10);
}

#[tokio::test]
async fn an_unreachable_store_answers_503_and_frees_the_key() {
    let app = TestApp::spawn();
    let user = app.create_user("s").await;
    app.store.set_commit_faults(Some(Box::new(|| CommitFault::Lost)));
    let response = app.top_up(&user, "k", 10).await;
    let problem = response.assert_problem(503, "unavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(!problem["detail"].as_str().unwrap().contains("injected"));
    app.store.set_commit_faults(None);
    assert_eq!(app.balance(&user).await, 0);
    let retried = app.top_up(&user, "k", 10).await;
    retried.assert_status(201);
    assert_eq!(app.balance(&user).await, 10);
}

#[tokio::test]
async fn an_ambiguous_commit_answers_503_and_the_retry_replays_instead_of_charging_twice() {
    let app = TestApp::spawn();
    let user = app.create_user("a").await;
    // The request's one commit (admission, effect and answer) is applied
    // but reported as failed.
    let commits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = Arc::clone(&commits);
    app.store.set_commit_faults(Some(Box::new(move || {
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            CommitFault::Ambiguous
        } else {
            CommitFault::None
        }
    })));
    app.top_up(&user, "k", 10).await.assert_problem(503, "unavailable");
    app.store.set_commit_faults(None);
    let retried = app.top_up(&user, "k", 10).await;
    retried.assert_status(201);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.balance(&user).await, 10, "charged once");
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_integrity_failure_is_a_bare_500() {
    // Every user gets the same key: the second insert violates the unique index.
    let mut http = HttpConfig::new(ADMIN_KEY);
    http.key_gen = Arc::new(|| "tly_duplicate".to_owned());
    let app = TestApp::spawn_with(Options { http, ..Options::default() });
    app.create_user("first").await;
    let response = app.call(Call::post("/v1/users").bearer(ADMIN_KEY).json(r#"{"name":"second"}"#)).await;
    let problem = response.assert_problem(500, "internal_error");
    let body = String::from_utf8_lossy(&response.body);
    assert!(!body.contains("duplicate") && !body.contains("integrity"), "{body}");
    assert_eq!(problem["detail"], "an internal error occurred");
}

#[tokio::test]
async fn a_panic_becomes_a_500_problem() {
    let app =
        TestApp::spawn_with(Options { readiness: Readiness::new(|| panic!("probe exploded")), ..Options::default() });
    let response = app.call(Call::get("/readyz")).await;
    response.assert_problem(500, "internal_error");
    assert!(!String::from_utf8_lossy(&response.body).contains("exploded"));
    // The server keeps serving.
    app.call(Call::get("/healthz")).await.assert_status(200);
}
