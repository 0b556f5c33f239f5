//! Bad input gets a clear 4xx and changes nothing (SPEC.md "Bad input and faults").

use serde_json::json;

use crate::helpers::{Call, TestApp, TestUser};

/// Top-up bodies whose amount is an integer out of range: 422 `invalid_amount`.
const OUT_OF_RANGE_TOP_UPS: &[&str] = &[
    r#"{"amount":0}"#,
    r#"{"amount":-5}"#,
    r#"{"amount":-9223372036854775808}"#,
    r#"{"amount":1000000000001}"#,
    r#"{"amount":9223372036854775807}"#,
    r#"{"amount":9223372036854775808}"#,
    r#"{"amount":18446744073709551616}"#,
    r#"{"amount":99999999999999999999999999999}"#,
    r#"{"amount":1e30}"#,
    r#"{"amount":-1e30}"#,
];

/// Top-up bodies that are not a top-up at all (a fraction, another type, an
/// unknown field, broken JSON): 400 `malformed_request`.
const MALFORMED_TOP_UPS: &[&str] = &[
    r#"{"amount":10.5}"#,
    r#"{"amount":"10"}"#,
    r#"{"amount":true}"#,
    r#"{"amount":null}"#,
    r#"{"amount":[10]}"#,
    r#"{"amount":10,"balance":1000000}"#,
    r#"{"amount":10,"user_id":"00000000-0000-0000-0000-000000000001"}"#,
    r#"{"amount":10"#,
    r#"{"amount":10}garbage"#,
    r#"{}"#,
    r#"[]"#,
    r#"null"#,
    r#""#,
    "\u{feff}{\"amount\":10}",
];

/// Each bad top-up body with the status and code it gets.
fn top_up_cases() -> impl Iterator<Item = (&'static str, u16, &'static str)> {
    let out_of_range = OUT_OF_RANGE_TOP_UPS.iter().map(|body| (*body, 422, "invalid_amount"));
    out_of_range.chain(MALFORMED_TOP_UPS.iter().map(|body| (*body, 400, "malformed_request")))
}

async fn funded(app: &TestApp) -> TestUser {
    app.funded_user("victim", 1000).await
}

#[tokio::test]
async fn every_bad_top_up_gets_its_code_and_changes_nothing() {
    let app = TestApp::spawn();
    let user = funded(&app).await;
    let before = app.wallet_state(&user).await;
    for (i, (body, status, code)) in top_up_cases().enumerate() {
        let response =
            app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem(&format!("bad-{i}")).json(body)).await;
        assert_eq!(
            (response.status.as_u16(), response.content_type()),
            (status, "application/problem+json"),
            "{body}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.json()["code"], code, "{body}");
    }
    assert_eq!(app.wallet_state(&user).await, before);
    app.assert_invariants().await;
}

#[tokio::test]
async fn bad_payment_amounts_are_refused_and_create_nothing() {
    let app = TestApp::spawn();
    let user = funded(&app).await;
    let before = app.wallet_state(&user).await;
    let cases = [
        (json!({"amount": 0, "method": "wallet"}), 422, "invalid_amount"),
        (json!({"amount": -1, "method": "wallet"}), 422, "invalid_amount"),
        (json!({"amount": 1_000_000_000_001_i64, "method": "wallet"}), 422, "invalid_amount"),
        // Whatever its value, a payback is not the customer's to send.
        (json!({"amount": 10, "method": "wallet", "payback_amount": -1}), 400, "malformed_request"),
        (json!({"amount": 10, "method": "wallet", "payback_amount": 1.5}), 400, "malformed_request"),
        (json!({"amount": 10.5, "method": "wallet"}), 400, "malformed_request"),
        (json!({"amount": "10", "method": "wallet"}), 400, "malformed_request"),
        (json!({"amount": 10, "method": "wallet", "user_id": "x"}), 400, "malformed_request"),
        (json!({"amount": 10, "method": 1}), 400, "malformed_request"),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        app.create_payment(&user, &format!("bad-{i}"), body).await.assert_problem(status, code);
    }
    for (i, body) in [r#"{"amount":9223372036854775808,"method":"wallet"}"#, r#"{"amount":1e30,"method":"wallet"}"#]
        .into_iter()
        .enumerate()
    {
        app.call(Call::post("/v1/payments").bearer(&user.key).idem(&format!("huge-{i}")).json(body))
            .await
            .assert_problem(422, "invalid_amount");
    }
    assert!(app.snapshot().await.payments.is_empty());
    assert_eq!(app.wallet_state(&user).await, before);
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413() {
    let app = TestApp::spawn();
    let user = funded(&app).await;
    let before = app.wallet_state(&user).await;
    // Valid JSON, just big: 1 MiB of whitespace before the object.
    let mut body = vec![b' '; 1024 * 1024];
    body.extend_from_slice(br#"{"amount":10}"#);
    let response = app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem("big").json(body)).await;
    response.assert_problem(413, "payload_too_large");
    // Just over the limit, too.
    let mut body = vec![b' '; 64 * 1024 - 12];
    body.extend_from_slice(br#"{"amount":10}"#);
    app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem("big2").json(body))
        .await
        .assert_problem(413, "payload_too_large");
    // And at the limit it is fine.
    let mut body = vec![b' '; 64 * 1024 - 13];
    body.extend_from_slice(br#"{"amount":10}"#);
    app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem("fits").json(body)).await.assert_status(201);
    let mut after = app.wallet_state(&user).await;
    assert_eq!(after.0["balance"], 1010);
    // Apart from that one accepted top-up, nothing changed.
    after.0["balance"] = before.0["balance"].clone();
    assert_eq!(after.0, before.0);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_with_415() {
    let app = TestApp::spawn();
    let user = funded(&app).await;
    let before = app.wallet_state(&user).await;
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx")]
    {
        let mut call = Call::post("/v1/wallet/top-ups").bearer(&user.key).idem("ct");
        if let Some(content_type) = content_type {
            call = call.header("content-type", content_type);
        }
        app.call(call.raw(r#"{"amount":10}"#)).await.assert_problem(415, "unsupported_media_type");
    }
    // Parameters on the JSON media type are fine.
    app.call(
        Call::post("/v1/wallet/top-ups")
            .bearer(&user.key)
            .idem("charset")
            .header("content-type", "application/json; charset=utf-8")
            .raw(r#"{"amount":10}"#),
    )
    .await
    .assert_status(201);
    assert_eq!(app.wallet_state(&user).await.0["balance"], before.0["balance"].as_i64().unwrap() + 10);
}

/// JSON Schema's `integer` is a value, not a spelling (the OpenAPI document
/// says `integer`): `10.0` and `1e3` are whole numbers; a fraction is not.
#[tokio::test]
async fn a_whole_number_written_with_a_fraction_or_an_exponent_is_that_integer() {
    let app = TestApp::spawn();
    let user = app.create_user("u").await;
    for (i, (body, amount)) in
        [(r#"{"amount":10.0}"#, 10), (r#"{"amount":1e3}"#, 1000), (r#"{"amount":1.5e1}"#, 15)].into_iter().enumerate()
    {
        let response =
            app.call(Call::post("/v1/wallet/top-ups").bearer(&user.key).idem(&format!("w-{i}")).json(body)).await;
        assert_eq!(response.assert_status(201)["amount"], amount, "{body}");
    }
    assert_eq!(app.balance(&user).await, 1_025);
    app.assert_invariants().await;
}
