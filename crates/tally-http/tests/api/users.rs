//! `POST /v1/users` and authentication.

use serde_json::json;

use crate::helpers::{ADMIN_KEY, Call, TestApp, fresh_wallet};

#[tokio::test]
async fn the_admin_creates_a_user_and_sees_the_key_once() {
    let app = TestApp::spawn();
    let response = app.call(Call::post("/v1/users").bearer(ADMIN_KEY).json(r#"{"name":"  Ada  "}"#)).await;
    let user = response.assert_status(201);
    assert_eq!(response.content_type(), "application/json");
    let mut fields: Vec<&str> = user.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["api_key", "id", "name"]);
    assert_eq!(user["name"], "Ada", "the name is trimmed");
    assert!(tally_core::ids::UserId::parse(user["id"].as_str().unwrap()).is_some());
    let key = user["api_key"].as_str().unwrap();
    assert!(key.starts_with("tly_") && key.len() == 68, "{key}");
    // The key works.
    let wallet = app.call(Call::get("/v1/wallet").bearer(key)).await;
    wallet.assert_status(200);
}

#[tokio::test]
async fn limits_given_at_creation_show_on_the_wallet() {
    let app = TestApp::spawn();
    let user = app
        .create_user_with(json!({
            "name": "Lim",
            "limits": {"max_balance": 1000, "per_payment_limit": 300, "daily_limit": 500, "monthly_limit": 0}
        }))
        .await;
    let wallet = app.wallet(&user).await;
    assert_eq!(
        wallet,
        fresh_wallet(json!({"max_balance": 1000, "per_payment_limit": 300, "daily_limit": 500, "monthly_limit": 0}))
    );
}

#[tokio::test]
async fn a_user_key_on_an_admin_route_is_forbidden() {
    let app = TestApp::spawn();
    let user = app.create_user("u").await;
    let response = app.call(Call::post("/v1/users").bearer(&user.key).json(r#"{"name":"x"}"#)).await;
    response.assert_problem(403, "forbidden");
}

#[tokio::test]
async fn the_admin_key_cannot_act_as_a_user() {
    let app = TestApp::spawn();
    app.call(Call::get("/v1/wallet").bearer(ADMIN_KEY)).await.assert_problem(403, "forbidden");
}

#[tokio::test]
async fn missing_malformed_or_unknown_keys_are_unauthorized() {
    let app = TestApp::spawn();
    for call in [
        Call::get("/v1/wallet"),
        Call::get("/v1/wallet").header("authorization", "Basic YTpi"),
        Call::get("/v1/wallet").header("authorization", "Bearer"),
        Call::get("/v1/wallet").bearer("tly_0000"),
        Call::post("/v1/users").json(r#"{"name":"x"}"#),
        Call::post("/v1/users").bearer("not-the-admin").json(r#"{"name":"x"}"#),
    ] {
        let response = app.call(call).await;
        response.assert_problem(401, "unauthorized");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn();
    let user = app.create_user("u").await;
    let response = app.call(Call::get("/v1/wallet").header("authorization", &format!("bearer {}", user.key))).await;
    response.assert_status(200);
}

#[tokio::test]
async fn bad_user_bodies_are_refused_and_create_nobody() {
    let app = TestApp::spawn();
    let cases: [(&str, u16, &str); 8] = [
        (r#"{"name":""}"#, 400, "malformed_request"),
        (r#"{"name":"   "}"#, 400, "malformed_request"),
        (r#"{}"#, 400, "malformed_request"),
        (r#"{"name":"x","admin":true}"#, 400, "malformed_request"),
        (r#"{"name":"x","limits":{"max_balance":-1}}"#, 422, "invalid_amount"),
        (r#"{"name":"x","limits":{"daily_limit":1000000000000000001}}"#, 422, "invalid_amount"),
        (r#"{"name":"x","limits":{"daily_limit":10.5}}"#, 400, "malformed_request"),
        (r#"{"name":"x","limits":{"weekly_limit":1}}"#, 400, "malformed_request"),
    ];
    for (body, status, code) in cases {
        let response = app.call(Call::post("/v1/users").bearer(ADMIN_KEY).json(body)).await;
        response.assert_problem(status, code);
    }
    let long_name = format!(r#"{{"name":"{}"}}"#, "n".repeat(201));
    app.call(Call::post("/v1/users").bearer(ADMIN_KEY).json(long_name)).await.assert_problem(400, "malformed_request");
    assert!(app.snapshot().await.wallets.is_empty());
}
