//! One-step payments (`POST /v1/payments {…, "confirm": true}`, issue 12):
//! created and confirmed in one request and one transaction, racing for the
//! last funds and for one key, on real PostgreSQL through the HTTP API.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;
use tally_core::payment::PaymentStatus;
use tally_pg::Strategy;

use crate::harness::{Pool, Reply, TestApp, spawn_app};
use crate::scenarios::{assert_one_effect, concurrently, count};

async fn pay_now(app: &TestApp, key: &str, idem: &str, amount: i64) -> Reply {
    let body = json!({"amount": amount, "method": "wallet", "confirm": true});
    app.request(Method::POST, "/v1/payments", key, Some(idem), Some(body)).await
}

/// Invariant 3 (never negative) and SPEC's "refused → state unchanged":
/// 20 one-step payments of 100 on a balance of 700 → exactly 7 are `done`,
/// 13 are refused, and a refused one-step payment creates no payment at all.
pub async fn one_step_payments_spend_the_last_funds_exactly(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 700).await;
    let replies = concurrently(&app, 20, |app, i| {
        let key = key.clone();
        async move { pay_now(&app, &key, &format!("pay-now-{i}"), 100).await }
    })
    .await;
    assert_eq!(count(&replies, StatusCode::CREATED, None), 7);
    assert_eq!(count(&replies, StatusCode::CONFLICT, Some("insufficient_balance")), 13);
    assert!(
        replies.iter().filter(|r| r.status == StatusCode::CREATED).all(|r| r.json["status"] == "done"),
        "a one-step payment answers done"
    );
    assert_eq!(app.balance(&key).await, 0);
    let snapshot = app.snapshot().await;
    assert_eq!(snapshot.payments.len(), 7, "a refused one-step payment creates nothing");
    assert!(snapshot.payments.iter().all(|p| p.status == PaymentStatus::Done));
    app.assert_invariants().await;
}

/// Invariant 2: 50 concurrent one-step payments under one key → one charge;
/// every other answer is that response replayed, or 409 in use.
pub async fn one_step_payments_under_one_key_charge_once(strategy: Strategy) {
    let app = Arc::new(spawn_app(strategy, Pool::default()).await);
    let key = app.user(json!({}), 1_000).await;
    let replies = concurrently(&app, 50, |app, _| {
        let key = key.clone();
        async move { pay_now(&app, &key, "pay-now-once", 100).await }
    })
    .await;
    assert_one_effect(&replies);
    assert_eq!(app.balance(&key).await, 900);
    assert_eq!(app.snapshot().await.payments.len(), 1);
    app.assert_invariants().await;
}
