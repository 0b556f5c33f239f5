//! Health, readiness, metrics, OpenAPI, Swagger UI, request ids.

use serde_json::Value;
use tally_http::Readiness;

use crate::helpers::{Call, Options, TestApp};

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn();
    let health = app.call(Call::get("/healthz")).await;
    assert_eq!(health.assert_status(200), serde_json::json!({"status": "ok"}));
    let ready = app.call(Call::get("/readyz")).await;
    assert_eq!(ready.assert_status(200), serde_json::json!({"status": "ready"}));
}

#[tokio::test]
async fn an_unreachable_database_makes_the_instance_unready() {
    let app =
        TestApp::spawn_with(Options { readiness: Readiness::new(|| Box::pin(async { false })), ..Options::default() });
    let response = app.call(Call::get("/readyz")).await;
    response.assert_problem(503, "unavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
    app.call(Call::get("/healthz")).await.assert_status(200);
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route_and_status() {
    let app = TestApp::spawn();
    let user = app.create_user("m").await;
    app.top_up(&user, "k", 5).await.assert_status(201);
    app.top_up(&user, "k", 5).await.assert_status(201);
    app.call(Call::get("/v1/payments/00000000-0000-0000-0000-000000000001").bearer(&user.key)).await.assert_status(404);
    app.call(Call::get("/nowhere")).await.assert_status(404);
    let response = app.call(Call::get("/metrics")).await;
    assert_eq!(response.status, 200);
    assert!(response.content_type().starts_with("text/plain"));
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    let has = |needle: &str| text.lines().any(|line| line.starts_with(needle));
    assert!(has(r#"http_requests_total{method="POST",path="/v1/wallet/top-ups",status="201"} 2"#), "{text}");
    assert!(has(r#"http_requests_total{method="GET",path="/v1/payments/{id}",status="404"} 1"#), "{text}");
    assert!(has(r#"http_requests_total{method="GET",path="unmatched",status="404"} 1"#), "{text}");
    assert!(
        has(r#"http_request_duration_seconds_bucket{method="POST",path="/v1/wallet/top-ups",status="201",le="0.001"}"#),
        "a histogram, not a summary: {text}"
    );
    assert!(!text.contains("00000000-0000"), "ids never become labels");
}

#[tokio::test]
async fn routers_do_not_share_metrics() {
    let a = TestApp::spawn();
    let b = TestApp::spawn();
    a.call(Call::get("/healthz")).await.assert_status(200);
    let text = String::from_utf8(b.call(Call::get("/metrics")).await.body.to_vec()).unwrap();
    assert!(!text.contains("/healthz"), "{text}");
}

#[tokio::test]
async fn the_openapi_document_covers_every_endpoint() {
    let app = TestApp::spawn();
    let response = app.call(Call::get("/openapi.json")).await;
    let doc: Value = response.assert_status(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/users", "post"),
        ("/v1/wallet", "get"),
        ("/v1/wallet/top-ups", "post"),
        ("/v1/wallet/ledger", "get"),
        ("/v1/payments", "post"),
        ("/v1/payments/{id}", "get"),
        ("/v1/payments/{id}/confirm", "post"),
        ("/v1/payments/{id}/cancel", "post"),
        ("/v1/products", "post"),
        ("/v1/products/{id}", "get"),
        ("/v1/products/{id}/restock", "post"),
        ("/v1/events", "post"),
        ("/v1/events/{id}/showtimes", "get"),
        ("/v1/showtimes/{id}/seats", "get"),
        ("/v1/events/{id}/queue", "post"),
        ("/v1/queue/{token}", "get"),
        ("/v1/orders", "post"),
        ("/v1/orders/{id}", "get"),
        ("/v1/orders/{id}/cancel", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
    ];
    for (path, method) in expected {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "Problem",
        "TopUpRequest",
        "TopUpBody",
        "PaymentBody",
        "WalletBody",
        "LedgerBody",
        "UserCreated",
        "CreateProductRequest",
        "RestockRequest",
        "ProductBody",
        "CreateEventRequest",
        "EventBody",
        "ShowtimesBody",
        "SeatsBody",
        "TokenBody",
        "CreateOrderRequest",
        "OrderBody",
    ] {
        assert!(schemas.contains_key(schema), "{schema} missing");
    }
    let top_up = &paths["/v1/wallet/top-ups"]["post"];
    let conflict = &top_up["responses"]["409"]["content"]["application/problem+json"];
    assert!(conflict.is_object(), "{top_up}");
    let params: Vec<&str> =
        top_up["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["Idempotency-Key"]);
    assert!(top_up["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object(), "{top_up}");
    let order = &paths["/v1/orders"]["post"];
    let params: Vec<&str> =
        order["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["Idempotency-Key", "Queue-Token"]);
    assert!(order["responses"]["409"]["description"].as_str().unwrap().contains("out_of_stock"), "{order}");
    assert!(paths["/v1/products/{id}"]["get"].get("security").is_none(), "reading a product needs no key");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("user_key") && schemes.contains_key("admin_key"));
}

/// Issue 10's new refusals and fields are part of the documented contract.
#[tokio::test]
async fn the_openapi_document_shows_the_payment_key_seat_limit_and_payback_rules() {
    let app = TestApp::spawn();
    let doc: Value = app.call(Call::get("/openapi.json")).await.assert_status(200);
    let conflict =
        |path: &str| doc["paths"][path]["post"]["responses"]["409"]["description"].as_str().unwrap().to_owned();
    assert!(
        conflict("/v1/payments/{id}/confirm").contains("`payment_key_in_use`"),
        "{}",
        conflict("/v1/payments/{id}/confirm")
    );
    assert!(conflict("/v1/orders").contains("`seat_limit_reached`"), "{}", conflict("/v1/orders"));
    let schemas = &doc["components"]["schemas"];
    let status = schemas["PaymentBody"]["properties"]["status"]["description"].as_str().unwrap();
    assert!(status.contains("`refunding`"), "{status}");
    // A payback is not the customer's to send: not even documented as input.
    assert!(
        schemas["CreatePaymentRequest"]["properties"].get("payback_amount").is_none(),
        "{}",
        schemas["CreatePaymentRequest"]
    );
    let bad_request = doc["paths"]["/v1/payments"]["post"]["responses"]["400"]["description"].as_str().unwrap();
    assert!(bad_request.contains("payback_amount"), "{bad_request}");
    for (schema, field) in [
        ("CreateProductRequest", "payback_bps"),
        ("ProductBody", "payback_bps"),
        ("CreateEventRequest", "max_seats_per_token"),
        ("EventBody", "max_seats_per_token"),
    ] {
        assert!(schemas[schema]["properties"].get(field).is_some(), "{schema}.{field}: {}", schemas[schema]);
    }
    assert!(
        schemas["CreateProductRequest"]["required"].as_array().unwrap().iter().all(|f| f != "payback_bps"),
        "payback_bps is optional"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn();
    let redirect = app.call(Call::get("/docs")).await;
    assert!(redirect.status.is_redirection(), "{}", redirect.status);
    assert_eq!(redirect.header("location"), Some("/docs/"));
    let page = app.call(Call::get("/docs/")).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"), "{}", page.content_type());
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    let config = app.call(Call::get("/docs/swagger-initializer.js")).await;
    assert_eq!(config.status, 200);
    assert!(String::from_utf8_lossy(&config.body).contains("/openapi.json"));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let app = TestApp::spawn();
    let generated = app.call(Call::get("/healthz")).await;
    let id = generated.header("x-request-id").expect("a request id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let given = app.call(Call::get("/nowhere").header("x-request-id", "trace-me-42")).await;
    assert_eq!(given.header("x-request-id"), Some("trace-me-42"));
}
