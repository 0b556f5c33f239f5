//! The seed scenarios against real PostgreSQL, through the real HTTP API.
//! Each runs for every strategy and asserts exact outcomes, then runs the
//! invariant checker over the whole database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use tally_conformance::StaleWrite;
use tally_core::app::{Config, Tally};
use tally_core::catalog::StockEvent;
use tally_core::idempotency::{IdemKey, IdemScope};
use tally_core::ids::{ProductId, SeqIds, UserId};
use tally_core::ledger::TransferKind;
use tally_core::store::{Fences, LockKey, LockSet, Store, StoreError, Tx};
use tally_core::time::{ManualClock, Timestamp};
use tally_pg::{PgConfig, PgStore, Strategy};

use crate::harness::{Pool, Reply, TestApp, fresh_database, spawn_app, spawn_app_paying_back};
// The inventory and money-hole scenarios drive the core directly; they run
// per strategy like everything here.
pub use crate::holes::{
    a_charge_for_another_order_is_neither_adopted_nor_cancelled, a_charge_landing_after_the_give_up_is_refunded,
    a_payback_that_does_not_fit_refuses_the_confirm_before_the_charge, a_payment_key_pays_one_payment,
    a_refund_at_the_ceiling_reverses_the_payback_first, a_spent_payback_refuses_the_cancel_before_the_refund,
    a_token_holds_at_most_its_events_seats, a_wrong_amount_charge_is_refunded_until_it_lands,
    an_orders_payback_is_the_merchants_policy, no_balance_passes_the_cap, the_schema_refuses_a_balance_past_the_cap,
    two_payments_racing_for_one_key_charge_once,
};
pub use crate::inventory::{
    cancel_racing_expiry_gives_back_once, confirm_racing_expiry_ends_one_way,
    crossed_two_product_orders_never_deadlock, gateway_charge_in_flight_holds_off_expiry, hundred_buyers_ten_units,
    stock_one_two_buyers_one_order, ten_bookings_one_seat, two_sweepers_expire_each_order_once,
    unpaid_order_expires_and_stock_returns,
};
pub use crate::one_step::{
    one_step_payments_spend_the_last_funds_exactly, one_step_payments_under_one_key_charge_once,
};

/// Runs `n` requests at once; returns the replies in request order.
pub(crate) async fn concurrently<F, Fut>(app: &Arc<TestApp>, n: usize, request: F) -> Vec<Reply>
where
    F: Fn(Arc<TestApp>, usize) -> Fut,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(request(app.clone(), i))).collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}

fn code(reply: &Reply) -> &str {
    reply.json["code"].as_str().unwrap_or("")
}

pub(crate) fn count(replies: &[Reply], status: StatusCode, problem: Option<&str>) -> usize {
    replies.iter().filter(|r| r.status == status && problem.is_none_or(|c| code(r) == c)).count()
}

/// Seed 001: 1000 concurrent confirms of one payment → one charge.
pub async fn concurrent_confirms_charge_once(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 10_000).await;
    let payment = app.create_payment(&key, "create", 2_500).await;
    let n = 1000;
    let replies = concurrently(&app, n, |app, i| {
        let (key, payment) = (key.clone(), payment.clone());
        async move { app.confirm(&key, &format!("confirm-{i}"), &payment).await }
    })
    .await;
    assert_eq!(count(&replies, StatusCode::OK, None), 1, "exactly one confirm succeeds");
    let refused = count(&replies, StatusCode::CONFLICT, Some("invalid_state"));
    if strategy == Strategy::Redis {
        // Redis keeps no queue of waiters (each retries on its own), so a
        // thousand on one key do not all get their turn within the lock
        // wait: a loser may be told to retry (503) instead of refused.
        let retry = count(&replies, StatusCode::SERVICE_UNAVAILABLE, None);
        assert_eq!(refused + retry, n - 1, "every other confirm is refused or told to retry");
    } else {
        assert_eq!(refused, n - 1, "every other confirm is refused");
    }
    assert_eq!(app.balance(&key).await, 7_500);
    let snapshot = app.snapshot().await;
    let charges = snapshot.transfers.iter().filter(|t| t.kind == TransferKind::Payment).count();
    assert_eq!(charges, 1);
    app.assert_invariants().await;
}

/// Seed 000: 50 concurrent payments by one user → exact balance, exactly 50
/// payment lines in the history.
pub async fn fifty_concurrent_payments_exact_history(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 100_000).await;
    let mut payments = Vec::new();
    for i in 0..50 {
        payments.push(app.create_payment(&key, &format!("create-{i}"), 100 + i64::from(i)).await);
    }
    let payments = Arc::new(payments);
    let replies = concurrently(&app, 50, |app, i| {
        let (key, payments) = (key.clone(), payments.clone());
        async move { app.confirm(&key, &format!("confirm-{i}"), &payments[i]).await }
    })
    .await;
    assert_eq!(count(&replies, StatusCode::OK, None), 50);
    let paid: i64 = (0..50).map(|i| 100 + i).sum();
    assert_eq!(app.balance(&key).await, 100_000 - paid);
    let ledger = app.request(Method::GET, "/v1/wallet/ledger?limit=100", &key, None, None).await;
    let entries = ledger.json["entries"].as_array().expect("entries");
    assert_eq!(entries.iter().filter(|e| e["kind"] == "payment").count(), 50);
    assert_eq!(entries.len(), 51, "one top-up and fifty payments");
    app.assert_invariants().await;
}

/// Sends a top-up, retrying with the same key while the server says 503 (as
/// a well-behaved client does); returns the final reply.
async fn top_up_with_retries(app: &TestApp, key: &str, idem: &str, amount: i64) -> Reply {
    for _ in 0..200 {
        let reply = app.top_up(key, idem, amount).await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("top-up {idem} still unavailable after 200 tries");
}

/// Creates `n` payments of `amount` one by one, then confirms them all at once.
async fn confirm_payments_concurrently(app: &Arc<TestApp>, key: &str, n: usize, amount: i64) -> Vec<Reply> {
    let mut payments = Vec::new();
    for i in 0..n {
        payments.push(app.create_payment(key, &format!("create-{i}"), amount).await);
    }
    let payments = Arc::new(payments);
    concurrently(app, n, |app, i| {
        let (key, payments) = (key.to_owned(), payments.clone());
        async move { app.confirm(&key, &format!("confirm-{i}"), &payments[i]).await }
    })
    .await
}

/// Seed 002's point charge: 200 concurrent top-ups → the exact sum.
pub async fn concurrent_top_ups_sum_exactly(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 0).await;
    let replies = concurrently(&app, 200, |app, i| {
        let key = key.clone();
        async move { top_up_with_retries(&app, &key, &format!("t-{i}"), i64::try_from(i).expect("small") + 1).await }
    })
    .await;
    assert_eq!(count(&replies, StatusCode::CREATED, None), 200);
    assert_eq!(app.balance(&key).await, (1..=200).sum::<i64>());
    app.assert_invariants().await;
}

/// A balance that covers 7 of 20 concurrent payments → exactly 7.
pub async fn balance_for_k_pays_exactly_k(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 700).await;
    let replies = confirm_payments_concurrently(&app, &key, 20, 100).await;
    assert_eq!(count(&replies, StatusCode::OK, None), 7);
    assert_eq!(count(&replies, StatusCode::CONFLICT, Some("insufficient_balance")), 13);
    assert_eq!(app.balance(&key).await, 0);
    app.assert_invariants().await;
}

/// Seed 001's daily limit under 20 concurrent payments: exact.
pub async fn daily_limit_exact_under_concurrency(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({"daily_limit": 500}), 10_000).await;
    let replies = confirm_payments_concurrently(&app, &key, 20, 100).await;
    assert_eq!(count(&replies, StatusCode::OK, None), 5);
    assert_eq!(count(&replies, StatusCode::CONFLICT, Some("limit_exceeded")), 15);
    let wallet = app.request(Method::GET, "/v1/wallet", &key, None, None).await;
    assert_eq!(wallet.json["spent_today"], 500);
    assert_eq!(wallet.json["balance"], 9_500);
    app.assert_invariants().await;
}

/// Invariant 2 over concurrent replies to one keyed request: exactly one
/// fresh 201, every other 201 a byte-for-byte replay of it, and nothing but
/// those and 409 in use. Returns the 201s.
pub(crate) fn assert_one_effect(replies: &[Reply]) -> Vec<&Reply> {
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    assert!(!created.is_empty(), "the first request succeeds");
    let fresh = created.iter().filter(|r| !r.headers.contains_key("idempotent-replayed")).count();
    assert_eq!(fresh, 1, "exactly one fresh execution");
    assert!(created.iter().all(|r| r.bytes == created[0].bytes), "every replay is byte for byte");
    let in_use = count(replies, StatusCode::CONFLICT, Some("idempotency_key_in_use"));
    let others: Vec<String> = replies
        .iter()
        .filter(|r| r.status != StatusCode::CREATED)
        .filter(|r| r.status != StatusCode::CONFLICT || code(r) != "idempotency_key_in_use")
        .map(|r| format!("{} {}", r.status, String::from_utf8_lossy(&r.bytes)))
        .take(3)
        .collect();
    assert_eq!(created.len() + in_use, replies.len(), "nothing else is answered; for example {others:?}");
    created
}

/// 1000 concurrent identical requests with one Idempotency-Key → one effect;
/// every other answer is the same response replayed, or 409 in use.
pub async fn one_key_one_effect(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 0).await;
    let replies = concurrently(&app, 1000, |app, _| {
        let key = key.clone();
        async move { app.top_up(&key, "the-one-key", 4_242).await }
    })
    .await;
    let created = assert_one_effect(&replies);
    assert_eq!(app.balance(&key).await, 4_242);
    // After completion every retry replays.
    let again = app.top_up(&key, "the-one-key", 4_242).await;
    assert_eq!((again.status, again.bytes.clone()), (StatusCode::CREATED, created[0].bytes.clone()));
    app.assert_invariants().await;
}

/// 50 duplicates of one key at once, whose request is refused, or which run
/// after the first one took the effect and are refused for it: every answer
/// is the key's one answer (given fresh once, then replayed byte for byte)
/// or 409 in use — never a 503 because a duplicate's refusal could not be
/// stored under a key another request had just answered.
pub async fn duplicates_answer_as_their_key(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 100).await;
    let affordable = app.create_payment(&key, "create-affordable", 50).await;
    let too_dear = app.create_payment(&key, "create-too-dear", 1_000).await;
    let mut paid = None;
    for (payment, status) in [(affordable, StatusCode::OK), (too_dear, StatusCode::CONFLICT)] {
        let idem = format!("confirm-{payment}");
        let replies = concurrently(&app, 50, |app, _| {
            let (key, idem, payment) = (key.clone(), idem.clone(), payment.clone());
            async move { app.confirm(&key, &idem, &payment).await }
        })
        .await;
        let answers: Vec<&Reply> = replies
            .iter()
            .filter(|r| r.status != StatusCode::CONFLICT || code(r) != "idempotency_key_in_use")
            .collect();
        let shown: Vec<String> = answers
            .iter()
            .filter(|r| r.status != status || r.bytes != answers[0].bytes)
            .take(3)
            .map(|r| format!("{} {}", r.status, String::from_utf8_lossy(&r.bytes)))
            .collect();
        assert!(shown.is_empty(), "one answer, {} {}: also {shown:?}", answers[0].status, answers[0].json);
        let fresh = answers.iter().filter(|r| !r.headers.contains_key("idempotent-replayed")).count();
        assert_eq!(fresh, 1, "answered fresh exactly once");
        if status == StatusCode::OK {
            paid = answers[0].json["payback_amount"].as_i64();
        } else {
            assert_eq!(code(answers[0]), "insufficient_balance");
        }
    }
    let payback = paid.expect("the affordable confirm's answer names its payback");
    assert_eq!(app.balance(&key).await, 100 - 50 + payback, "one payment paid, once");
    app.assert_invariants().await;
}

/// A pool of 5 under 200 concurrent requests: no double charge, nobody waits
/// past the acquire timeout, and a saturated pool answers 503 + Retry-After.
pub async fn small_pool_sheds_load_safely(strategy: Strategy) {
    let acquire = Duration::from_millis(300);
    let app = Arc::new(spawn_app(strategy, Pool { max_connections: 5, acquire_timeout: acquire }).await);
    let key = app.user(json!({}), 50_000).await;
    let payment = app.create_payment(&key, "create", 1_000).await;
    let started = Instant::now();
    let replies = concurrently(&app, 200, |app, i| {
        let (key, payment) = (key.clone(), payment.clone());
        async move {
            let begun = Instant::now();
            let reply = if i % 2 == 0 {
                app.confirm(&key, &format!("confirm-{i}"), &payment).await
            } else {
                app.top_up(&key, &format!("top-{i}"), 1).await
            };
            let waited = begun.elapsed();
            // No request hangs: it is answered within the acquire timeout
            // plus the statement and lock timeouts of the work it got to do.
            assert!(waited < Duration::from_secs(15), "request {i} took {waited:?}");
            reply
        }
    })
    .await;
    let elapsed = started.elapsed();
    for reply in replies.iter().filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE) {
        assert_eq!(code(reply), "unavailable");
        assert!(reply.headers.contains_key("retry-after"), "a 503 says when to retry");
    }
    assert!(count(&replies, StatusCode::OK, None) <= 1, "at most one confirm succeeds");
    let charges = app.snapshot().await.transfers.iter().filter(|t| t.kind == TransferKind::Payment).count();
    assert!(charges <= 1, "never two charges");
    let top_ups = count(&replies, StatusCode::CREATED, None);
    let balance = app.balance(&key).await;
    assert_eq!(
        balance,
        50_000 + i64::try_from(top_ups).expect("small") - 1_000 * i64::try_from(charges).expect("small")
    );
    app.assert_invariants().await;

    // Saturation, deterministically: hold every connection, then ask.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(app.app.store().pool().acquire().await.expect("a pooled connection"));
    }
    let asked = Instant::now();
    let refused = app.top_up(&key, "while-saturated", 1).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.json);
    assert_eq!(code(&refused), "unavailable");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(asked.elapsed() < acquire + Duration::from_secs(2), "answered soon after the acquire timeout");
    drop(held);
    // Not stored: the same key works once the pool has room again.
    assert_eq!(app.top_up(&key, "while-saturated", 1).await.status, StatusCode::CREATED);
    eprintln!(
        "    {strategy:?}: 200 requests on a pool of 5 in {elapsed:?}: {} ok, {} created, {} refused, {} unavailable",
        count(&replies, StatusCode::OK, None),
        top_ups,
        count(&replies, StatusCode::CONFLICT, None),
        count(&replies, StatusCode::SERVICE_UNAVAILABLE, None)
    );
}

/// The store conformance suite (shared with the in-memory store) on this
/// strategy, with a pool of `connections`.
pub async fn store_conforms(strategy: Strategy, connections: u32) {
    let url = fresh_database().await;
    let config = PgConfig { strategy, max_connections: connections, ..PgConfig::default() };
    let store = PgStore::connect_lazy(&url, config).expect("store");
    let clock = ManualClock::new(Timestamp(20_780 * 86_400_000));
    // The suite moves a payback with every payment: it runs on the merchant
    // policy it was written for.
    let config = Config {
        payback_bps: tally_conformance::PAYBACK_BPS,
        batch_max: super::harness::batch_max(),
        batch_overlap: super::harness::batch_overlap(),
        ..Config::default()
    };
    let app = Tally::new(
        store,
        crate::harness::locks_for(strategy),
        clock,
        Arc::new(SeqIds::new(u64::from(std::process::id()))),
        config,
    );
    let stale_write = match strategy {
        Strategy::Atomic => StaleWrite::Rebases,
        Strategy::Pessimistic | Strategy::Optimistic | Strategy::Advisory | Strategy::Redis => StaleWrite::Conflicts,
    };
    // One connection cannot hold a transaction open while another commits.
    let checks_reads = matches!(strategy, Strategy::Optimistic | Strategy::Atomic) && connections > 1;
    let ran = tally_conformance::run_all(&app, tally_conformance::Profile { stale_write, checks_reads }).await;
    assert_eq!(ran.len(), 27);
    // Every strategy claims fencing tokens when a lock manager hands some in.
    let ran = tally_conformance::fences::run_all(&app, tally_conformance::fences::Overtaking::Waits).await;
    assert_eq!(ran.len(), 4);
}

/// With a single pooled connection everything still works: no use case asks
/// the pool for a second connection while it holds one.
pub async fn single_connection_pool(strategy: Strategy) {
    store_conforms(strategy, 1).await;
    let app =
        Arc::new(spawn_app(strategy, Pool { max_connections: 1, acquire_timeout: Duration::from_secs(10) }).await);
    let key = app.user(json!({"max_balance": 1_000_000}), 1_000).await;
    let payment = app.create_payment(&key, "p", 300).await;
    assert_eq!(app.confirm(&key, "c", &payment).await.status, StatusCode::OK);
    let cancel =
        app.request(Method::POST, &format!("/v1/payments/{payment}/cancel"), &key, Some("x"), Some(json!({}))).await;
    assert_eq!((cancel.status, cancel.json["status"].clone()), (StatusCode::OK, json!("cancelled")));
    let replies = concurrently(&app, 20, |app, i| {
        let key = key.clone();
        async move { app.top_up(&key, &format!("q-{i}"), 10).await }
    })
    .await;
    assert_eq!(count(&replies, StatusCode::CREATED, None), 20);
    assert_eq!(app.balance(&key).await, 1_200);
    app.assert_invariants().await;
}

/// Bad input gets its 4xx and changes nothing.
pub async fn bad_input_changes_nothing(strategy: Strategy) {
    let app = spawn_app(strategy, Pool::default()).await;
    let key = app.user(json!({}), 100).await;
    let payment = app.create_payment(&key, "p", 10).await;
    let before = app.snapshot().await;
    let json = "application/json";
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        ("/v1/wallet/top-ups", json, br#"{"amount": 0}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        ("/v1/wallet/top-ups", json, br#"{"amount": -5}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        ("/v1/wallet/top-ups", json, br#"{"amount": 10.5}"#.to_vec(), StatusCode::BAD_REQUEST, "malformed_request"),
        ("/v1/wallet/top-ups", json, br#"{"amount": "10"}"#.to_vec(), StatusCode::BAD_REQUEST, "malformed_request"),
        (
            "/v1/wallet/top-ups",
            json,
            br#"{"amount": 9223372036854775808}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        // An integer written with an exponent, beyond the maximum: too large, not malformed.
        (
            "/v1/wallet/top-ups",
            json,
            br#"{"amount": 1e30}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            "/v1/wallet/top-ups",
            json,
            br#"{"amount": 10, "balance": 1000000}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            "/v1/wallet/top-ups",
            json,
            br#"{"amount": 10, "user_id": "x"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        ("/v1/wallet/top-ups", json, br#"{"amount": "#.to_vec(), StatusCode::BAD_REQUEST, "malformed_request"),
        ("/v1/wallet/top-ups", json, br#"{}"#.to_vec(), StatusCode::BAD_REQUEST, "malformed_request"),
        (
            "/v1/wallet/top-ups",
            "text/plain",
            br#"{"amount": 10}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        ("/v1/wallet/top-ups", json, vec![b' '; 1024 * 1024], StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (
            "/v1/payments",
            json,
            br#"{"amount": 0, "method": "wallet"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        // The payback is the merchant's policy: a customer never sends one,
        // however small (SPEC.md, issue 10's hole 3).
        (
            "/v1/payments",
            json,
            br#"{"amount": 10, "method": "wallet", "payback_amount": 11}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            "/v1/payments",
            json,
            br#"{"amount": 1000, "method": "wallet", "payback_amount": 1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
    ];
    for (i, (path, content_type, body, status, expected)) in cases.into_iter().enumerate() {
        let reply = app.raw(path, &key, &format!("bad-{i}"), content_type, body).await;
        assert_eq!((reply.status, code(&reply)), (status, expected), "case {i} on {path}: {}", reply.json);
        assert_eq!(
            reply.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "case {i}"
        );
    }
    // Keys: missing and invalid.
    let missing = app.request(Method::POST, "/v1/wallet/top-ups", &key, None, Some(json!({"amount": 1}))).await;
    assert_eq!((missing.status, code(&missing)), (StatusCode::BAD_REQUEST, "idempotency_key_missing"));
    let long = "k".repeat(256);
    let invalid = app.request(Method::POST, "/v1/wallet/top-ups", &key, Some(&long), Some(json!({"amount": 1}))).await;
    assert_eq!((invalid.status, code(&invalid)), (StatusCode::BAD_REQUEST, "idempotency_key_invalid"));
    // Auth: none, unknown, a user on an admin endpoint, another user's payment.
    let nobody = app.request(Method::GET, "/v1/wallet", "tly_unknown", None, None).await;
    assert_eq!((nobody.status, code(&nobody)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let not_admin = app.request(Method::POST, "/v1/users", &key, None, Some(json!({"name": "x"}))).await;
    assert_eq!((not_admin.status, code(&not_admin)), (StatusCode::FORBIDDEN, "forbidden"));
    let other = app.user(json!({}), 0).await;
    let theirs = app.confirm(&other, "steal", &payment).await;
    assert_eq!((theirs.status, code(&theirs)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(app.snapshot().await.transfers, before.transfers, "no bad request moved money");
    assert_eq!(app.snapshot().await.payments, before.payments);
    app.assert_invariants().await;
}

/// Seed 003: 100 concurrent confirms of one gateway payment → the gateway
/// receives exactly one confirm, the payment is charged once.
pub async fn gateway_concurrent_confirms_send_one(strategy: Strategy) {
    let app = Arc::new(spawn_app_paying_back(strategy, Pool::default(), 1_000).await);
    let key = app.user(json!({}), 0).await;
    let payment = app.create_gateway_payment(&key, "create", 3_000).await;
    let replies = concurrently(&app, 100, |app, i| {
        let (key, payment) = (key.clone(), payment.clone());
        async move { app.confirm_gateway(&key, &format!("confirm-{i}"), &payment, "pk-concurrent").await }
    })
    .await;
    let stats = app.gateway.payment_stats("pk-concurrent");
    assert_eq!((stats.confirm_requests, stats.confirm_effects), (1, 1), "one confirm reached the gateway");
    assert!(count(&replies, StatusCode::OK, None) >= 1, "the sender records the charge");
    for reply in &replies {
        let fine = reply.status == StatusCode::OK && reply.json["status"] == "done"
            || (reply.status, code(reply)) == (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            || (reply.status, code(reply)) == (StatusCode::CONFLICT, "invalid_state");
        assert!(fine, "unexpected answer {} {}", reply.status, reply.json);
    }
    let got = app.request(Method::GET, &format!("/v1/payments/{payment}"), &key, None, None).await;
    assert_eq!(got.json["status"], "done");
    assert_eq!(app.balance(&key).await, 300, "the payback, once");
    let charges = app.snapshot().await.transfers.iter().filter(|t| t.kind == TransferKind::Payment).count();
    assert_eq!(charges, 1);
    app.assert_invariants().await;
}

/// The gateway's reply is lost after it charged: the confirm looks the
/// payment up and records it, and never sends a second confirm.
pub async fn gateway_lost_reply_is_looked_up(strategy: Strategy) {
    use tally_gateway::fake::{FaultRule, Trigger};
    let app = spawn_app(strategy, Pool::default()).await;
    let key = app.user(json!({}), 0).await;
    let payment = app.create_gateway_payment(&key, "create", 800).await;
    app.gateway.faults().set_lose_reply_after_commit(Some(FaultRule::new(Trigger::Next(1))));
    let reply = app.confirm_gateway(&key, "confirm", &payment, "pk-lost").await;
    assert_eq!((reply.status, reply.json["status"].clone()), (StatusCode::OK, json!("done")), "{}", reply.json);
    let stats = app.gateway.payment_stats("pk-lost");
    assert_eq!((stats.confirm_requests, stats.confirm_effects, stats.lookups), (1, 1, 1));
    app.assert_invariants().await;
}

/// The gateway is slower than our timeout: the confirm answers 503 (outcome
/// unknown, not stored), the payment stays `confirming`, and the completer
/// resolves it by lookup once the charge has landed. One confirm in all, and
/// the retry under the confirm's key answers the charge (invariant 2: a
/// key's one effect, and its answer).
pub async fn gateway_timeout_resolved_by_completer(strategy: Strategy) {
    use tally_gateway::fake::{LatencyFault, Trigger};
    let app = spawn_app_paying_back(strategy, Pool::default(), 1_000).await;
    let key = app.user(json!({}), 0).await;
    let payment = app.create_gateway_payment(&key, "create", 900).await;
    app.gateway.faults().set_latency(Some(LatencyFault::fixed(Duration::from_millis(1_500)).when(Trigger::Next(1))));
    let reply = app.confirm_gateway(&key, "confirm", &payment, "pk-slow").await;
    assert_eq!((reply.status, code(&reply)), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{}", reply.json);
    assert!(reply.headers.contains_key("retry-after"));
    let got = app.request(Method::GET, &format!("/v1/payments/{payment}"), &key, None, None).await;
    assert_eq!(got.json["status"], "confirming");
    // The charge lands at the gateway a moment later; the completer finds it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let resolved = app.app.resolve_stuck(Duration::ZERO, 16).await.expect("completer");
    assert_eq!(resolved, 1);
    let got = app.request(Method::GET, &format!("/v1/payments/{payment}"), &key, None, None).await;
    assert_eq!(got.json["status"], "done");
    assert_eq!(app.gateway.payment_stats("pk-slow").confirm_requests, 1);
    // The client's retry with its key now gets the outcome, the charge its
    // request made, without a second confirm (a 409 would tell it that its
    // card was not charged); then that answer is replayed.
    let retried = app.confirm_gateway(&key, "confirm", &payment, "pk-slow").await;
    assert_eq!((retried.status, retried.json["status"].clone()), (StatusCode::OK, json!("done")), "{}", retried.json);
    let replayed = app.confirm_gateway(&key, "confirm", &payment, "pk-slow").await;
    assert_eq!((replayed.status, replayed.json["status"].clone()), (StatusCode::OK, json!("done")));
    assert_eq!(replayed.headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    // Another request's confirm is a second confirm, refused.
    let other = app.confirm_gateway(&key, "confirm-again", &payment, "pk-slow").await;
    assert_eq!((other.status, code(&other)), (StatusCode::CONFLICT, "invalid_state"), "{}", other.json);
    assert_eq!(app.gateway.payment_stats("pk-slow").confirm_requests, 1);
    assert_eq!(app.balance(&key).await, 90);
    app.assert_invariants().await;
}

/// The same for a cancel: the gateway fails the refund (a 5xx), the cancel
/// answers 503 and stays `cancelling`, the completer re-sends the refund, and
/// the retry under the cancel's key answers the cancelled payment, not 409:
/// the card was refunded, once.
pub async fn gateway_cancel_settled_by_completer_answers_its_retry(strategy: Strategy) {
    use tally_gateway::fake::{Endpoint, ErrorFault, Trigger};
    let app = spawn_app_paying_back(strategy, Pool::default(), 1_000).await;
    let key = app.user(json!({}), 0).await;
    let payment = app.create_gateway_payment(&key, "create", 2_000).await;
    assert_eq!(app.confirm_gateway(&key, "confirm", &payment, "pk-refund").await.status, StatusCode::OK);
    app.gateway.faults().set_fail_5xx(Some(ErrorFault::new(Trigger::Next(1)).on(&[Endpoint::Cancel])));
    let path = format!("/v1/payments/{payment}/cancel");
    let cancel = app.request(Method::POST, &path, &key, Some("cancel"), None).await;
    assert_eq!((cancel.status, code(&cancel)), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{}", cancel.json);
    let got = app.request(Method::GET, &format!("/v1/payments/{payment}"), &key, None, None).await;
    assert_eq!(got.json["status"], "cancelling");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(app.app.resolve_stuck(Duration::ZERO, 16).await.expect("completer"), 1);
    let retried = app.request(Method::POST, &path, &key, Some("cancel"), None).await;
    assert_eq!(
        (retried.status, retried.json["status"].clone()),
        (StatusCode::OK, json!("cancelled")),
        "{}",
        retried.json
    );
    let other = app.request(Method::POST, &path, &key, Some("cancel-again"), None).await;
    assert_eq!((other.status, code(&other)), (StatusCode::CONFLICT, "invalid_state"), "{}", other.json);
    assert_eq!(app.gateway.payment_stats("pk-refund").cancel_effects, 1, "refunded once");
    assert_eq!(app.balance(&key).await, 0, "payback credited, then reversed once");
    app.assert_invariants().await;
}

/// Cancelling a gateway payment cancels at the gateway once, however many
/// cancels race, and books one refund.
pub async fn gateway_cancel_happens_once(strategy: Strategy) {
    let app = Arc::new(spawn_app_paying_back(strategy, Pool::default(), 1_000).await);
    let key = app.user(json!({}), 0).await;
    let payment = app.create_gateway_payment(&key, "create", 2_000).await;
    assert_eq!(app.confirm_gateway(&key, "confirm", &payment, "pk-cancel").await.status, StatusCode::OK);
    let replies = concurrently(&app, 10, |app, i| {
        let (key, payment) = (key.clone(), payment.clone());
        async move {
            app.request(Method::POST, &format!("/v1/payments/{payment}/cancel"), &key, Some(&format!("x-{i}")), None)
                .await
        }
    })
    .await;
    // One request cancels; the others are second cancels, refused as they
    // would be a moment later (409 invalid_state), and send the gateway
    // nothing. Under the strategies that decide without locks a refusal may
    // be decided on a payment read before the winner's commit and a wallet
    // read after it (the payback already reversed): it is answered only once
    // its reads are checked still current, else decided again, so it is
    // never 409 insufficient_balance (hole 12).
    assert_eq!(count(&replies, StatusCode::OK, None), 1);
    let others: Vec<String> = replies
        .iter()
        .filter(|r| r.status != StatusCode::OK)
        .filter(|r| r.status != StatusCode::CONFLICT || code(r) != "invalid_state")
        .map(|r| format!("{} {}", r.status, r.json))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    let stats = app.gateway.payment_stats("pk-cancel");
    assert_eq!((stats.cancel_requests, stats.cancel_effects), (1, 1));
    let got = app.request(Method::GET, &format!("/v1/payments/{payment}"), &key, None, None).await;
    assert_eq!(got.json["status"], "cancelled");
    let refunds = app.snapshot().await.transfers.iter().filter(|t| t.kind == TransferKind::Refund).count();
    assert_eq!(refunds, 1);
    assert_eq!(app.balance(&key).await, 0, "payback credited, then reversed");
    app.assert_invariants().await;
}

/// `tally check`, the operator's command, reads a live database with the
/// same checker the proofs use: sound books pass, and money written into a
/// wallet behind the ledger's back is a violation (exit status non-zero).
pub async fn tally_check_passes_a_sound_database_and_fails_a_tampered_one(strategy: Strategy) {
    let app = spawn_app(strategy, Pool::default()).await;
    let key = app.user(json!({}), 1_000).await;
    let payment = app.create_payment(&key, "pay", 400).await;
    assert_eq!(app.confirm(&key, "confirm", &payment).await.status, 200);
    let url = crate::harness::database_url(&app).await;
    let args = || tally::check::CheckArgs {
        database: tally::serve::DatabaseArgs { database_url: Some(url.clone()), data_dir: "./.tally".into() },
    };
    assert_eq!(tally::check::check(args()).await, Ok(true));
    sqlx::query("UPDATE wallets SET balance = balance + 1").execute(app.app.store().pool()).await.expect("tamper");
    assert_eq!(tally::check::check(args()).await, Ok(false), "a balance its ledger does not explain");
}

/// The advisory strategy's locks exclude (invariants 1–6 rest on it): while
/// one transaction holds a wallet's key, a zero-wait begin on the key is
/// `Busy`, a waiting one gives up at the lock timeout (`Unavailable`), a
/// begin on another key goes ahead, and the holder's commit frees the key.
/// The other strategies lock rows as they load, not keys at begin, so every
/// begin goes ahead.
pub async fn record_keys_lock_at_begin(strategy: Strategy) {
    let url = fresh_database().await;
    let config = PgConfig { strategy, lock_timeout: Duration::from_millis(200), ..PgConfig::default() };
    let store = PgStore::connect_lazy(&url, config).expect("url");
    let wallet = LockSet::new([LockKey::Wallet(UserId(1))]);
    let other = LockSet::new([LockKey::Wallet(UserId(2))]);
    let holder =
        store.begin_locked(&wallet, &Fences::default(), Duration::from_secs(1)).await.expect("the first holder");
    let at_once = store.begin_locked(&wallet, &Fences::default(), Duration::ZERO).await.map(drop);
    let waiting = store.begin_locked(&wallet, &Fences::default(), Duration::from_secs(1)).await.map(drop);
    let elsewhere = store.begin_locked(&other, &Fences::default(), Duration::ZERO).await.map(drop);
    if strategy == Strategy::Advisory {
        assert_eq!(at_once, Err(StoreError::Busy));
        assert_eq!(waiting, Err(StoreError::Unavailable("lock wait timed out".into())));
    } else {
        assert_eq!((at_once, waiting.clone()), (Ok(()), Ok(())));
    }
    assert_eq!(elsewhere, Ok(()));
    holder.commit().await.expect("commit");
    assert_eq!(store.begin_locked(&wallet, &Fences::default(), Duration::ZERO).await.map(drop), Ok(()));
}

/// The row locks each strategy promises, seen from a second transaction
/// (the SQL mutants `pg_drop_for_update` and `pg_nowait_waits` each break
/// one): under pessimistic, a wallet one transaction loaded cannot be loaded
/// by another until the first ends; and under the strategies that lock key
/// rows (pessimistic, advisory), admission's no-wait load of a key whose row
/// another transaction holds answers `Busy` at once instead of waiting.
pub async fn loaded_rows_lock_as_the_strategy_promises(strategy: Strategy) {
    let app = spawn_app(strategy, Pool::default()).await;
    let key = app.user(json!({}), 100).await;
    assert_eq!(app.top_up(&key, "held-key", 1).await.status, StatusCode::CREATED);
    let user = app.snapshot().await.wallets[0].user;
    // A store of its own: the second transaction must never wait for a pool
    // connection (CI also runs this suite on one-connection pools).
    let url = crate::harness::database_url(&app).await;
    let store =
        PgStore::connect_lazy(&url, PgConfig { strategy, max_connections: 4, ..PgConfig::default() }).expect("url");
    let patience = Duration::from_millis(500);

    let mut holder = store.begin().await.expect("begin");
    holder.wallet(user).await.expect("load").expect("the wallet");
    let second = tokio::time::timeout(patience, async {
        let mut tx = store.begin().await.expect("begin");
        let loaded = tx.wallet(user).await.map(|w| w.is_some());
        tx.rollback().await;
        loaded
    })
    .await;
    if strategy == Strategy::Pessimistic {
        assert!(second.is_err(), "a pessimistic load waits for the row another transaction loaded");
    } else {
        assert_eq!(second.ok(), Some(Ok(true)), "{strategy:?} loads take no row lock");
    }
    holder.rollback().await;

    let scope = IdemScope { user, key: IdemKey::new("held-key").expect("a valid key") };
    let mut holder = store.begin().await.expect("begin");
    assert!(holder.idempotency(&scope).await.expect("load").is_some(), "the key's record");
    let admission = tokio::time::timeout(patience, async {
        let mut tx = store.begin().await.expect("begin");
        let loaded = tx.idempotency_no_wait(&scope).await.map(|r| r.is_some());
        tx.rollback().await;
        loaded
    })
    .await;
    match strategy {
        Strategy::Pessimistic | Strategy::Advisory | Strategy::Redis => {
            assert_eq!(admission.ok(), Some(Err(StoreError::Busy)), "a held key is in flight: Busy, at once");
        }
        _ => assert_eq!(admission.ok(), Some(Ok(true)), "{strategy:?} does not lock key rows"),
    }
    holder.rollback().await;
}

/// Two writers that cross on two rows deadlock, and PostgreSQL aborts one.
/// The store must say so to that one (`Conflict`: its use case runs again),
/// never report the aborted write as done: its commit would then be a
/// silent rollback (the SQL mutant `pg_conflict_is_success`). Restocks of
/// two products, so no money moves; the winner's two restocks are all that
/// lands.
pub async fn crossed_writers_deadlock_and_exactly_one_is_told(strategy: Strategy) {
    let app = spawn_app(strategy, Pool::default()).await;
    let mut products = Vec::new();
    for name in ["p", "q"] {
        let body = json!({"name": name, "price": 1, "stock": 1});
        let created = app.request(Method::POST, "/v1/products", &app.admin_key, None, Some(body)).await;
        products.push(ProductId::parse(created.json["id"].as_str().expect("an id")).expect("a product id"));
    }
    let (p, q) = (products[0], products[1]);
    let url = crate::harness::database_url(&app).await;
    let store =
        PgStore::connect_lazy(&url, PgConfig { strategy, max_connections: 4, ..PgConfig::default() }).expect("url");
    let mut first = store.begin().await.expect("begin");
    let mut second = store.begin().await.expect("begin");
    restock_one(&mut first, p).await.expect("the first writer takes p");
    restock_one(&mut second, q).await.expect("the second writer takes q");
    let (crossed_first, crossed_second) = tokio::join!(restock_one(&mut first, q), restock_one(&mut second, p));
    let told = [&crossed_first, &crossed_second].iter().filter(|r| ***r == Err(StoreError::Conflict)).count();
    let went_on = [&crossed_first, &crossed_second].iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        (told, went_on),
        (1, 1),
        "one writer told of the deadlock, one goes on: {crossed_first:?} {crossed_second:?}"
    );
    let (winner, loser) = if crossed_first.is_ok() { (first, second) } else { (second, first) };
    loser.rollback().await;
    winner.commit().await.expect("the winner commits");
    let mut reader = store.begin().await.expect("begin");
    let stock_p = reader.product(p).await.expect("load").expect("p").stock;
    let stock_q = reader.product(q).await.expect("load").expect("q").stock;
    reader.rollback().await;
    assert_eq!((stock_p, stock_q), (2, 2), "the winner's two restocks, nothing of the loser's");
}

/// Restocks one unit of `product` in `tx`: a load, the transition, a write.
async fn restock_one(tx: &mut impl Tx, product: ProductId) -> Result<(), StoreError> {
    let before = tx.product(product).await?.expect("the product");
    let after = before.apply(StockEvent::Restock(1), before.updated_at).expect("a restock of one unit");
    tx.put_product(Some(&before), &after).await
}
