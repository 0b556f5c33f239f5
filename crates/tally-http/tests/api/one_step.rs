//! One-step payments (`confirm: true`, SPEC.md, issue 12): a wallet payment
//! created and confirmed in one request, like Stripe's `confirm=true`.

use serde_json::json;

use crate::helpers::{Options, TestApp};

#[tokio::test]
async fn a_one_step_payment_is_done_at_once_and_replays() {
    let (app, user) = TestApp::with_funded_user(Options::payback_bps(1_000), 5_000).await;
    let body = json!({"amount": 1_200, "method": "wallet", "confirm": true});
    let first = app.create_payment(&user, "now", body.clone()).await;
    let payment = first.assert_status(201);
    assert_eq!((payment["status"].as_str(), payment["amount"].as_i64()), (Some("done"), Some(1_200)));
    assert_eq!(payment["payback_amount"], 120, "the merchant's 10 %");
    assert_eq!(app.balance(&user).await, 5_000 - 1_200 + 120, "charged and paid back, once");
    app.create_payment(&user, "now", body).await.assert_replay_of(&first);
    assert_eq!(app.balance(&user).await, 5_000 - 1_200 + 120);
    // It is an ordinary done payment: it cancels like one.
    let id = payment["id"].as_str().unwrap();
    assert_eq!(app.cancel(&user, id, "undo").await.assert_status(200)["status"], "cancelled");
    assert_eq!(app.balance(&user).await, 5_000);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_refused_one_step_payment_creates_nothing() {
    let app = TestApp::spawn();
    let user = app.create_user_with(json!({"name": "u", "limits": {"daily_limit": 10_000}})).await;
    app.top_up(&user, "fund", 5_000).await.assert_status(201);
    let over_balance = json!({"amount": 6_000, "method": "wallet", "confirm": true});
    app.create_payment(&user, "a", over_balance).await.assert_problem(409, "insufficient_balance");
    let over_limit = json!({"amount": 10_001, "method": "wallet", "confirm": true});
    let refused = app.create_payment(&user, "b", over_limit.clone()).await;
    refused.assert_problem(409, "limit_exceeded");
    // The refusal is the key's answer, replayed.
    app.create_payment(&user, "b", over_limit).await.assert_replay_of(&refused);
    assert!(app.snapshot().await.payments.is_empty(), "no payment was created");
    assert_eq!(app.balance(&user).await, 5_000);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_order_paid_in_one_step_is_paid() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 5_000).await;
    let product = app.create_product("p", 700, 3).await;
    let order = app.order_of(&user, &product, 2).await;
    let body = json!({"order_id": order, "method": "wallet", "confirm": true});
    let payment = app.create_payment(&user, "pay", body).await.assert_status(201);
    assert_eq!((payment["status"].as_str(), payment["amount"].as_i64()), (Some("done"), Some(1_400)));
    assert_eq!(app.get_order(&user, &order).await.assert_status(200)["status"], "paid");
    assert_eq!(app.balance(&user).await, 5_000 - 1_400);
    assert_eq!(app.stock(&product).await, 1);
    // Paid: a second one-step payment of it is refused, and charges nothing.
    let again = json!({"order_id": order, "method": "wallet", "confirm": true});
    app.create_payment(&user, "pay-again", again).await.assert_problem(409, "invalid_state");
    assert_eq!(app.balance(&user).await, 5_000 - 1_400);
    app.assert_invariants().await;
}

#[tokio::test]
async fn one_step_is_for_wallet_payments_only() {
    let app = TestApp::spawn_with_gateway(Options::default()).await;
    let user = app.funded_user("u", 5_000).await;
    let body = json!({"amount": 100, "method": "gateway", "confirm": true});
    app.create_payment(&user, "g", body).await.assert_problem(400, "malformed_request");
    // `confirm: false` is the two-step flow, as if absent.
    let waiting = json!({"amount": 100, "method": "wallet", "confirm": false});
    assert_eq!(app.create_payment(&user, "w", waiting).await.assert_status(201)["status"], "wait");
    assert_eq!(app.balance(&user).await, 5_000);
}
