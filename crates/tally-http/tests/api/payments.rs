//! `POST /v1/payments`, `…/confirm`, `…/cancel`, `GET /v1/payments/{id}`.

use serde_json::json;

use crate::helpers::{Call, Options, TestApp};

#[tokio::test]
async fn a_payment_is_created_waiting_and_moves_no_money() {
    // The merchant pays back 10 %.
    let (app, user) = TestApp::with_funded_user(Options::payback_bps(1_000), 1000).await;
    let response = app.create_payment(&user, "p1", json!({"amount": 400, "method": "wallet"})).await;
    let payment = response.assert_status(201);
    assert_eq!(response.content_type(), "application/json");
    let id = payment["id"].as_str().unwrap();
    assert!(tally_core::ids::PaymentId::parse(id).is_some());
    assert_eq!(payment, json!({"id": id, "status": "wait", "amount": 400, "payback_amount": 40, "method": "wallet"}));
    assert_eq!(app.balance(&user).await, 1000);
    // A payback that rounds down to nothing reads 0.
    let plain = app.create_payment(&user, "p2", json!({"amount": 5, "method": "wallet"})).await;
    assert_eq!(plain.assert_status(201)["payback_amount"], 0);
}

#[tokio::test]
async fn confirming_charges_the_wallet_and_credits_the_payback() {
    let (app, user) = TestApp::with_funded_user(Options::payback_bps(1_000), 1000).await;
    let id = app.payment_of(&user, 400).await;
    let response = app.confirm(&user, &id, "c1").await;
    let payment = response.assert_status(200);
    assert_eq!(payment, json!({"id": id, "status": "done", "amount": 400, "payback_amount": 40, "method": "wallet"}));
    let wallet = app.wallet(&user).await;
    assert_eq!(wallet["balance"], 640);
    assert_eq!(wallet["spent_today"], 400);
    assert_eq!(wallet["spent_this_month"], 400);
    assert_eq!(app.payment(&user, &id).await, payment);
    app.assert_invariants().await;
}

#[tokio::test]
async fn confirm_accepts_no_body_or_an_empty_object_and_nothing_else() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 1000).await;
    let a = app.payment_of(&user, 1).await;
    let b = app.payment_of(&user, 1).await;
    let c = app.payment_of(&user, 1).await;
    // No body at all, no content type.
    app.call(Call::confirm(&user, &a, "a")).await.assert_status(200);
    // `{}` as JSON.
    app.confirm(&user, &b, "b").await.assert_status(200);
    // A gateway field on a wallet payment: the body is well formed, the
    // payment is not one it fits (409, like any refusal by state).
    app.call(Call::confirm(&user, &c, "c").json(r#"{"payment_key":"pk_1"}"#))
        .await
        .assert_problem(409, "invalid_state");
    // `null` is no body, like the schema says.
    let d = app.payment_of(&user, 1).await;
    app.call(Call::confirm(&user, &d, "d").json("null")).await.assert_status(200);
    // `{}` in a non-JSON content type.
    app.call(Call::confirm(&user, &c, "c2").header("content-type", "text/plain").raw("{}"))
        .await
        .assert_problem(415, "unsupported_media_type");
    assert_eq!(app.balance(&user).await, 997);
}

#[tokio::test]
async fn cancelling_a_done_payment_refunds_it_and_reverses_the_payback() {
    let (app, user) = TestApp::with_funded_user(Options::payback_bps(1_000), 1000).await;
    let id = app.done_payment_of(&user, 400).await;
    let cancelled = app.cancel(&user, &id, "x").await.assert_status(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(app.balance(&user).await, 1000);
    // A second cancel is a state refusal, not a second refund.
    app.cancel(&user, &id, "x2").await.assert_problem(409, "invalid_state");
    assert_eq!(app.balance(&user).await, 1000);
    app.assert_invariants().await;
}

#[tokio::test]
async fn cancelling_a_waiting_payment_moves_nothing() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 100).await;
    let id = app.payment_of(&user, 50).await;
    assert_eq!(app.cancel(&user, &id, "x").await.assert_status(200)["status"], "cancelled");
    app.confirm(&user, &id, "c").await.assert_problem(409, "invalid_state");
    assert_eq!(app.balance(&user).await, 100);
}

#[tokio::test]
async fn a_second_confirm_is_refused_and_charges_nothing() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 1000).await;
    let id = app.payment_of(&user, 300).await;
    app.confirm(&user, &id, "first").await.assert_status(200);
    let again = app.confirm(&user, &id, "second").await;
    let problem = again.assert_problem(409, "invalid_state");
    assert_eq!(problem["detail"], "cannot confirm a payment that is done");
    assert_eq!(app.balance(&user).await, 700);
}

#[tokio::test]
async fn business_refusals_have_their_codes() {
    let app = TestApp::spawn();
    let user =
        app.create_user_with(json!({"name": "b", "limits": {"per_payment_limit": 500, "daily_limit": 600}})).await;
    app.top_up(&user, "fund", 1000).await.assert_status(201);
    // Per-payment limit: refused at creation already.
    app.create_payment(&user, "big", json!({"amount": 501, "method": "wallet"}))
        .await
        .assert_problem(409, "limit_exceeded");
    // Daily limit: refused at confirm.
    let a = app.payment_of(&user, 400).await;
    let b = app.payment_of(&user, 300).await;
    app.confirm(&user, &a, "a").await.assert_status(200);
    let refused = app.confirm(&user, &b, "b").await.assert_problem(409, "limit_exceeded");
    assert_eq!(refused["detail"], "daily limit exceeded");
    // Insufficient balance.
    let poor = app.funded_user("poor", 10).await;
    let p = app.payment_of(&poor, 11).await;
    app.confirm(&poor, &p, "p").await.assert_problem(409, "insufficient_balance");
    assert_eq!(app.balance(&user).await, 600);
    assert_eq!(app.balance(&poor).await, 10);
}

#[tokio::test]
async fn another_users_payment_does_not_exist_for_you() {
    let app = TestApp::spawn();
    let owner = app.funded_user("o", 100).await;
    let other = app.funded_user("x", 100).await;
    let id = app.payment_of(&owner, 50).await;
    app.call(Call::get(&format!("/v1/payments/{id}")).bearer(&other.key)).await.assert_problem(404, "not_found");
    app.confirm(&other, &id, "steal").await.assert_problem(404, "not_found");
    app.cancel(&other, &id, "steal2").await.assert_problem(404, "not_found");
    assert_eq!(app.balance(&owner).await, 100);
    assert_eq!(app.balance(&other).await, 100);
    app.confirm(&owner, &id, "mine").await.assert_status(200);
}

#[tokio::test]
async fn unknown_and_malformed_payment_ids_are_not_found() {
    let app = TestApp::spawn();
    let user = app.create_user("n").await;
    for id in ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "1"] {
        app.call(Call::get(&format!("/v1/payments/{id}")).bearer(&user.key)).await.assert_problem(404, "not_found");
        app.confirm(&user, id, &format!("k-{id}")).await.assert_problem(404, "not_found");
    }
}

#[tokio::test]
async fn bad_methods_and_a_gateway_without_one_are_malformed() {
    let (app, user) = TestApp::with_funded_user(Options::default(), 100).await;
    let cases = [
        json!({"amount": 10, "method": "gateway"}),
        json!({"amount": 10, "method": "cash"}),
        json!({"amount": 10}),
        json!({"method": "wallet"}),
    ];
    for (i, body) in cases.into_iter().enumerate() {
        let response = app.create_payment(&user, &format!("k{i}"), body).await;
        response.assert_problem(400, "malformed_request");
    }
    assert!(app.snapshot().await.payments.is_empty());
}
