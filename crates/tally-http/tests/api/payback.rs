//! The payback (cashback) is the merchant's policy, never the customer's
//! choice (issue 10's hole 3, OWASP API3): a product's `payback_bps`, or the
//! service default.

use serde_json::json;

use crate::helpers::{ADMIN_KEY, Call, Options, TestApp};

#[tokio::test]
async fn a_customer_cannot_choose_its_own_payback() {
    let (app, user) = TestApp::with_funded_user(Options::payback_bps(250), 5_000).await;
    let product = app.create_product("p", 1_000, 5).await;
    let order = app.order_of(&user, &product, 1).await;
    let before = app.wallet_state(&user).await;
    // Pay 1000, get 1000 back: whatever the value (even 0 or null, which
    // says "none" but is still the customer choosing), it is refused.
    let attempts = [
        json!({"amount": 1_000, "method": "wallet", "payback_amount": 1_000}),
        json!({"amount": 1_000, "method": "gateway", "payback_amount": 1_000}),
        json!({"order_id": order, "method": "wallet", "payback_amount": 1_000}),
        json!({"amount": 1_000, "method": "wallet", "payback_amount": 0}),
        json!({"amount": 1_000, "method": "wallet", "payback_amount": null}),
        json!({"amount": 1_000, "method": "wallet", "payback_amount": "all of it"}),
    ];
    for (i, body) in attempts.iter().enumerate() {
        let problem = app
            .create_payment(&user, &format!("mine-{i}"), body.clone())
            .await
            .assert_problem(400, "malformed_request");
        assert_eq!(
            problem["detail"],
            "payback_amount is not accepted: the payback is the merchant's policy (a product's payback_bps, or the \
             service default), never the customer's choice",
            "{body}"
        );
    }
    // Nothing was created, nothing moved, and no key was used up: the same
    // key with an honest body creates the payment.
    assert!(app.snapshot().await.payments.is_empty());
    assert_eq!(app.wallet_state(&user).await, before);
    let honest = app.create_payment(&user, "mine-0", json!({"amount": 1_000, "method": "wallet"})).await;
    assert_eq!(honest.assert_status(201)["payback_amount"], 25, "the policy's 2.5 %");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_payback_shown_and_credited_is_the_merchants_policy() {
    // The service pays back 2.5 % unless a product says otherwise.
    let (app, user) = TestApp::with_funded_user(Options::payback_bps(250), 10_000).await;

    // A payment for an amount: the service rate, rounded down.
    let created = app.create_payment(&user, "a", json!({"amount": 999, "method": "wallet"})).await;
    let payment = created.assert_status(201);
    assert_eq!(payment["payback_amount"], 24, "999 × 2.5 % rounded down");
    let id = payment["id"].as_str().unwrap();
    let done = app.confirm(&user, id, "a-confirm").await.assert_status(200);
    assert_eq!(done["payback_amount"], 24);
    assert_eq!(app.balance(&user).await, 10_000 - 999 + 24);

    // Products: one at 10 %, one at the service default (2.5 %, fixed
    // when it was created), one with none.
    let ten = app.create_product_with(json!({"name": "ten", "price": 300, "stock": 5, "payback_bps": 1_000})).await;
    let default = app.create_product("default", 1_000, 5).await;
    let none = app.create_product_with(json!({"name": "none", "price": 700, "stock": 5, "payback_bps": 0})).await;
    assert_eq!(app.product(&ten).await["payback_bps"], 1_000);
    assert_eq!(app.product(&default).await["payback_bps"], 250);
    assert_eq!(app.product(&none).await["payback_bps"], 0);
    let items = json!({"items": [
        {"product_id": ten, "quantity": 2},
        {"product_id": default, "quantity": 1},
        {"product_id": none, "quantity": 1},
    ]});
    let order = app.order(&user, "o", items, None).await.assert_status(201);
    assert_eq!(order["total"], 600 + 1_000 + 700);
    let order = order["id"].as_str().unwrap();
    let paid = app.pay_order(&user, order).await;
    assert_eq!(paid["payback_amount"], 60 + 25, "10 % of 600 and 2.5 % of 1000");
    assert_eq!(app.balance(&user).await, 10_000 - 999 + 24 - 2_300 + 85);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_products_payback_rate_is_at_most_100_percent() {
    let app = TestApp::spawn();
    let full = app.create_product_with(json!({"name": "free", "price": 10, "stock": 1, "payback_bps": 10_000})).await;
    assert_eq!(app.product(&full).await["payback_bps"], 10_000);
    for bad in ["10001", "-1", "4294967296", "1.5", "\"100\""] {
        let body = format!(r#"{{"name":"p","price":10,"stock":1,"payback_bps":{bad}}}"#);
        let response = app.call(Call::post("/v1/products").bearer(ADMIN_KEY).json(body)).await;
        response.assert_problem(400, "malformed_request");
    }
    assert_eq!(app.snapshot().await.products.len(), 1);
}
