//! `Idempotency-Key` (SPEC.md "Idempotency"; the IETF draft).

use std::time::Duration;

use serde_json::json;

use tally_core::idempotency::{IdemKey, IdemScope};
use tally_core::store::LockKey;

use crate::helpers::{Call, Options, TestApp, TestResponse};

#[tokio::test]
async fn the_same_key_and_body_replays_the_first_response_byte_for_byte() {
    let app = TestApp::spawn();
    let user = app.create_user("r").await;
    let first = app.top_up(&user, "same", 700).await;
    first.assert_status(201);
    let second = app.top_up(&user, "same", 700).await;
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body, "byte for byte");
    assert_eq!(second.content_type(), first.content_type());
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(app.balance(&user).await, 700, "one effect");
    let ledger = app.ledger(&user, "").await.assert_status(200);
    assert_eq!(ledger["entries"].as_array().unwrap().len(), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn payment_creation_and_confirmation_replay_too() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 1000).await;
    let body = json!({"amount": 100, "method": "wallet"});
    let created = app.create_payment(&user, "create", body.clone()).await;
    let replayed = app.create_payment(&user, "create", body).await;
    assert_eq!((replayed.status.as_u16(), &replayed.body), (201, &created.body));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.snapshot().await.payments.len(), 1, "one payment, not two");
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let confirmed = app.confirm(&user, &id, "confirm").await;
    let again = app.confirm(&user, &id, "confirm").await;
    assert_eq!((again.status.as_u16(), &again.body), (200, &confirmed.body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.balance(&user).await, 900, "charged once");
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_with_422() {
    let app = TestApp::spawn();
    let user = app.create_user("u").await;
    app.top_up(&user, "k", 100).await.assert_status(201);
    app.top_up(&user, "k", 101).await.assert_problem(422, "idempotency_key_reused");
    // Same amount, different bytes: a different request.
    app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem("k").json(r#"{ "amount": 100 }"#))
        .await
        .assert_problem(422, "idempotency_key_reused");
    // Another endpoint.
    app.create_payment(&user, "k", json!({"amount": 100, "method": "wallet"}))
        .await
        .assert_problem(422, "idempotency_key_reused");
    assert_eq!(app.balance(&user).await, 100);
    assert!(app.snapshot().await.payments.is_empty());
}

#[tokio::test]
async fn a_refusal_is_stored_and_replayed_even_after_the_state_changes() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 50).await;
    let id = app.payment_of(&user, 80).await;
    let refused = app.confirm(&user, &id, "try").await;
    refused.assert_problem(409, "insufficient_balance");
    // Money arrives; the same key still answers what it answered.
    app.top_up(&user, "more", 100).await.assert_status(201);
    let replayed = app.confirm(&user, &id, "try").await;
    assert_eq!((replayed.status, &replayed.body), (refused.status, &refused.body));
    assert_eq!(replayed.content_type(), "application/problem+json");
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.balance(&user).await, 150);
    // A new key is a new attempt.
    app.confirm(&user, &id, "try-again").await.assert_status(200);
    assert_eq!(app.balance(&user).await, 70);
}

#[tokio::test]
async fn a_not_found_refusal_is_stored_too() {
    let app = TestApp::spawn();
    let user = app.create_user("n").await;
    let missing = "00000000-0000-0000-0000-0000000000ff";
    let first = app.confirm(&user, missing, "nf").await;
    first.assert_problem(404, "not_found");
    let second = app.confirm(&user, missing, "nf").await;
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn keys_are_required_on_every_money_route() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 100).await;
    let id = app.payment_of(&user, 10).await;
    let calls = [
        Call::post("/v1/wallet/top-ups").json(r#"{"amount":1}"#),
        Call::post("/v1/payments").json(r#"{"amount":1,"method":"wallet"}"#),
        Call::post(&format!("/v1/payments/{id}/confirm")).json("{}"),
        Call::post(&format!("/v1/payments/{id}/cancel")),
    ];
    for call in calls {
        app.call(call.bearer(&user.key)).await.assert_problem(400, "idempotency_key_missing");
    }
    assert_eq!(app.balance(&user).await, 100);
    assert_eq!(app.snapshot().await.payments.len(), 1);
}

#[tokio::test]
async fn invalid_keys_are_refused_and_change_nothing() {
    let app = TestApp::spawn();
    let user = app.create_user("i").await;
    let long = "k".repeat(256);
    for key in ["", long.as_str(), "tab\there", "\"\"", "\"a\"b\""] {
        app.top_up(&user, key, 10).await.assert_problem(400, "idempotency_key_invalid");
    }
    let non_ascii = app
        .call(
            Call::post("/v1/wallet/top-ups")
                .bearer(&user.key)
                .header("idempotency-key", "caf\u{e9}")
                .json(r#"{"amount":10}"#),
        )
        .await;
    non_ascii.assert_problem(400, "idempotency_key_invalid");
    let twice =
        app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem("a").idem("b").json(r#"{"amount":10}"#)).await;
    twice.assert_problem(400, "idempotency_key_invalid");
    // 255 characters is the longest allowed.
    app.top_up(&user, &"k".repeat(255), 10).await.assert_status(201);
    assert_eq!(app.balance(&user).await, 10);
}

#[tokio::test]
async fn a_quoted_key_is_the_same_key_as_the_bare_one() {
    let app = TestApp::spawn();
    let user = app.create_user("q").await;
    app.top_up(&user, "abc-123", 10).await.assert_status(201);
    let quoted = app.top_up(&user, "\"abc-123\"", 10).await;
    assert_eq!(quoted.status.as_u16(), 201);
    assert_eq!(quoted.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.balance(&user).await, 10);
}

#[tokio::test]
async fn keys_are_scoped_to_their_user() {
    let app = TestApp::spawn();
    let [alice, bob] = app.create_users(["alice", "bob"]).await;
    let a = app.top_up(&alice, "shared-key", 10).await;
    let b = app.top_up(&bob, "shared-key", 10).await;
    a.assert_status(201);
    b.assert_status(201);
    assert_eq!(b.header("idempotent-replayed"), None, "bob's request ran");
    assert_ne!(a.body, b.body, "each booked its own entry");
    assert_eq!(app.balance(&alice).await, 10);
    assert_eq!(app.balance(&bob).await, 10);
}

#[tokio::test]
async fn a_rejected_body_does_not_burn_the_key() {
    let app = TestApp::spawn();
    let user = app.create_user("b").await;
    app.top_up(&user, "k", 0).await.assert_problem(422, "invalid_amount");
    app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem("k").json("{"))
        .await
        .assert_problem(400, "malformed_request");
    let fresh = app.top_up(&user, "k", 10).await;
    fresh.assert_status(201);
    assert_eq!(fresh.header("idempotent-replayed"), None);
}

/// Sends a top-up in the background (it may block on a lock).
fn spawn_top_up(app: &TestApp, user: &crate::helpers::TestUser, key: &str) -> tokio::task::JoinHandle<TestResponse> {
    let router = app.router.clone();
    let call = Call::post("/v1/wallet/top-ups").bearer(&user.key).idem(key).json(r#"{"amount":10}"#);
    tokio::spawn(crate::helpers::call_router(router, call))
}

#[tokio::test]
async fn a_duplicate_of_a_running_request_is_told_it_is_in_flight_then_replays() {
    let app = TestApp::spawn();
    let user = app.create_user("f").await;
    // A concurrent operation holds the wallet: the first request waits on it,
    // holding its key.
    let guard = app.hold_wallet(&user);
    let first = spawn_top_up(&app, &user, "slow");
    app.wait_for_wallet_waiter(&user).await;
    // SPEC.md: the same key while the first request is in flight → 409, at
    // once (the duplicate does not queue behind the first).
    let duplicate = app.top_up(&user, "slow", 10).await;
    duplicate.assert_problem(409, "idempotency_key_in_use");
    let scope = LockKey::Idempotency(IdemScope { user: user.id, key: IdemKey::new("slow").unwrap() });
    assert_eq!(app.locks.table().waiters(&scope), 0, "nobody queues for a key in flight");
    drop(guard);
    let first = first.await.unwrap();
    assert_eq!((first.status.as_u16(), first.header("idempotent-replayed")), (201, None));
    // Once it completed, the same request replays it byte for byte.
    let replay = app.top_up(&user, "slow", 10).await;
    assert_eq!((replay.status.as_u16(), replay.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(replay.body, first.body);
    assert_eq!(app.balance(&user).await, 10);
}

#[tokio::test]
async fn a_timed_out_request_still_finishes_once_and_its_retry_replays() {
    let mut options = Options::default();
    options.http.request_timeout = Duration::from_millis(200);
    let app = TestApp::spawn_with(options);
    let user = app.create_user("t").await;
    let guard = app.hold_wallet(&user);
    let timed_out = app.top_up(&user, "k", 10).await;
    timed_out.assert_problem(503, "unavailable");
    assert_eq!(timed_out.header("retry-after"), Some("1"));
    assert_eq!(app.balance(&user).await, 0, "nothing ran while the wallet was held");
    drop(guard);
    // The timed-out request runs on in its own task (tally-http spawns every
    // keyed request): once the wallet is free it finishes and stores its
    // answer under the key, in the effect's commit. Its retry is told the key
    // is in flight until then, and replays the answer after — one effect.
    let retried = loop {
        let retried = app.top_up(&user, "k", 10).await;
        if retried.status.as_u16() != 409 {
            break retried;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    retried.assert_status(201);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    app.top_up(&user, "k", 11).await.assert_problem(422, "idempotency_key_reused");
    assert_eq!(app.balance(&user).await, 10);
    app.assert_invariants().await;
}
