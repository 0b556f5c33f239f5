//! The catalogue: `POST /v1/products`, `…/restock`, `GET /v1/products/{id}`,
//! `POST /v1/events`, `GET /v1/events/{id}/showtimes`, `GET /v1/showtimes/{id}/seats`.

use serde_json::json;

use crate::helpers::{ADMIN_KEY, Call, TestApp};

#[tokio::test]
async fn the_admin_creates_a_product_and_anyone_reads_it() {
    let app = TestApp::spawn();
    let response = app
        .call(Call::post("/v1/products").bearer(ADMIN_KEY).json(r#"{"name":" Ticket bundle ","price":2500,"stock":7}"#))
        .await;
    let product = response.assert_status(201);
    assert_eq!(response.content_type(), "application/json");
    let id = product["id"].as_str().unwrap();
    assert!(tally_core::ids::ProductId::parse(id).is_some());
    assert_eq!(product, json!({"id": id, "name": "Ticket bundle", "price": 2500, "stock": 7, "payback_bps": 0}));
    // No key needed to read it; a key that is not one is not even looked at.
    assert_eq!(app.product(id).await, product);
    let with_junk = app.call(Call::get(&format!("/v1/products/{id}")).bearer("not-a-key")).await;
    assert_eq!(with_junk.assert_status(200), product);
    for missing in ["00000000-0000-0000-0000-000000000009", "not-a-uuid"] {
        app.call(Call::get(&format!("/v1/products/{missing}"))).await.assert_problem(404, "not_found");
    }
}

#[tokio::test]
async fn a_restock_is_keyed_and_happens_once() {
    let app = TestApp::spawn();
    let id = app.create_product("p", 100, 2).await;
    let restock = |key: &str, body: &str| Call::restock(&id, key).json(body.to_owned());
    let first = app.call(restock("r1", r#"{"quantity":5}"#)).await;
    assert_eq!(first.assert_status(200), json!({"id": id, "name": "p", "price": 100, "stock": 7, "payback_bps": 0}));
    let replayed = app.call(restock("r1", r#"{"quantity":5}"#)).await;
    replayed.assert_replay_of(&first);
    assert_eq!(app.stock(&id).await, 7, "restocked once");
    app.call(restock("r1", r#"{"quantity":6}"#)).await.assert_problem(422, "idempotency_key_reused");
    app.call(Call::post(&format!("/v1/products/{id}/restock")).bearer(ADMIN_KEY).json(r#"{"quantity":5}"#))
        .await
        .assert_problem(400, "idempotency_key_missing");
    let unknown = "00000000-0000-0000-0000-000000000009";
    app.call(Call::restock(unknown, "r2").json(r#"{"quantity":1}"#)).await.assert_problem(404, "not_found");
    assert_eq!(app.stock(&id).await, 7);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_restock_past_the_stock_ceiling_is_a_stored_limit_refusal() {
    let app = TestApp::spawn();
    let id = app.create_product("full", 1, 1_000_000_000).await;
    let call = || Call::restock(&id, "over").json(r#"{"quantity":1}"#);
    let refused = app.call(call()).await;
    // A limit of the product as it stands (409), not a bad quantity.
    refused.assert_problem(409, "limit_exceeded");
    let replayed = app.call(call()).await;
    assert_eq!((replayed.status, &replayed.body), (refused.status, &refused.body));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"), "a business refusal is stored");
    assert_eq!(app.stock(&id).await, 1_000_000_000);
}

#[tokio::test]
async fn bad_product_input_gets_its_code_and_changes_nothing() {
    let app = TestApp::spawn();
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"name":"p","price":0,"stock":1}"#, 422, "invalid_amount"),
        (r#"{"name":"p","price":-1,"stock":1}"#, 422, "invalid_amount"),
        (r#"{"name":"p","price":1000000000001,"stock":1}"#, 422, "invalid_amount"),
        (r#"{"name":"p","price":10,"stock":-1}"#, 422, "invalid_amount"),
        (r#"{"name":"p","price":10,"stock":1000000001}"#, 422, "invalid_amount"),
        (r#"{"name":"p","price":10,"stock":1e30}"#, 422, "invalid_amount"),
        (r#"{"name":"p","price":10.5,"stock":1}"#, 400, "malformed_request"),
        (r#"{"name":"p","price":10,"stock":"1"}"#, 400, "malformed_request"),
        (r#"{"name":"p","price":10}"#, 400, "malformed_request"),
        (r#"{"name":"p","price":10,"stock":1,"id":"x"}"#, 400, "malformed_request"),
        (r#"{"name":"  ","price":10,"stock":1}"#, 400, "malformed_request"),
    ];
    for (body, status, code) in cases {
        let response = app.call(Call::post("/v1/products").bearer(ADMIN_KEY).json(*body)).await;
        assert_eq!(response.status.as_u16(), *status, "{body}: {}", String::from_utf8_lossy(&response.body));
        response.assert_problem(*status, code);
    }
    let id = app.create_product("p", 10, 3).await;
    for body in [r#"{"quantity":0}"#, r#"{"quantity":-2}"#, r#"{"quantity":1000000001}"#] {
        app.call(Call::restock(&id, body).json(body)).await.assert_problem(422, "invalid_amount");
    }
    assert_eq!(app.snapshot().await.products.len(), 1, "only the good one");
    assert_eq!(app.stock(&id).await, 3);
}

#[tokio::test]
async fn only_the_admin_writes_the_catalogue() {
    let app = TestApp::spawn();
    let user = app.create_user("u").await;
    let id = app.create_product("p", 10, 3).await;
    let product = r#"{"name":"p","price":10,"stock":1}"#;
    let event = r#"{"name":"e","active_limit":1,"token_ttl_seconds":60,"showtimes":[{"starts_at":"2026-12-24T19:30:00Z","seats":[{"label":"A1","price":5}]}]}"#;
    let restock = format!("/v1/products/{id}/restock");
    for (path, body) in [("/v1/products", product), ("/v1/events", event), (restock.as_str(), r#"{"quantity":1}"#)] {
        app.call(Call::post(path).bearer(&user.key).idem("k").json(body)).await.assert_problem(403, "forbidden");
        app.call(Call::post(path).idem("k").json(body)).await.assert_problem(401, "unauthorized");
    }
    let snapshot = app.snapshot().await;
    assert_eq!((snapshot.products.len(), snapshot.events.len()), (1, 0));
    assert_eq!(app.stock(&id).await, 3);
}

#[tokio::test]
async fn the_admin_creates_an_event_and_anyone_reads_its_showtimes_and_seats() {
    let app = TestApp::spawn();
    let body = json!({
        "name": "Concert",
        "active_limit": 2,
        "token_ttl_seconds": 90,
        "showtimes": [
            {"starts_at": "2026-12-24T19:30:00Z", "seats": [{"label": "A1", "price": 5000}, {"label": "A2", "price": 7000}]},
            {"starts_at": "2026-12-25T10:30:00.250+09:00", "seats": [{"label": "B1", "price": 4000}]},
        ],
    });
    let response = app.call(Call::post("/v1/events").bearer(ADMIN_KEY).json(body.to_string())).await;
    let event = response.assert_status(201);
    let id = event["id"].as_str().unwrap();
    let showtime = |i: usize| event["showtimes"][i]["id"].as_str().unwrap();
    let seat = |i: usize, j: usize| event["showtimes"][i]["seats"][j]["id"].as_str().unwrap();
    assert_eq!(
        event,
        json!({
            "id": id,
            "name": "Concert",
            "active_limit": 2,
            "token_ttl_seconds": 90,
            "max_seats_per_token": 4,
            "showtimes": [
                {"id": showtime(0), "starts_at": "2026-12-24T19:30:00.000Z", "seats": [
                    {"id": seat(0, 0), "label": "A1", "price": 5000, "status": "available"},
                    {"id": seat(0, 1), "label": "A2", "price": 7000, "status": "available"},
                ]},
                {"id": showtime(1), "starts_at": "2026-12-25T01:30:00.250Z", "seats": [
                    {"id": seat(1, 0), "label": "B1", "price": 4000, "status": "available"},
                ]},
            ],
        })
    );
    let showtimes = app.call(Call::get(&format!("/v1/events/{id}/showtimes"))).await.assert_status(200);
    assert_eq!(
        showtimes,
        json!({"showtimes": [
            {"id": showtime(0), "starts_at": "2026-12-24T19:30:00.000Z", "available_seats": 2},
            {"id": showtime(1), "starts_at": "2026-12-25T01:30:00.250Z", "available_seats": 1},
        ]})
    );
    let seats = app.call(Call::get(&format!("/v1/showtimes/{}/seats", showtime(0)))).await.assert_status(200);
    assert_eq!(seats, json!({"seats": event["showtimes"][0]["seats"]}));
    for missing in ["00000000-0000-0000-0000-000000000009", "x"] {
        app.call(Call::get(&format!("/v1/events/{missing}/showtimes"))).await.assert_problem(404, "not_found");
        app.call(Call::get(&format!("/v1/showtimes/{missing}/seats"))).await.assert_problem(404, "not_found");
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn bad_event_input_gets_its_code_and_creates_nothing() {
    let app = TestApp::spawn();
    let event = |active_limit: &str, ttl: &str, starts_at: &str, seats: &str| {
        format!(
            r#"{{"name":"e","active_limit":{active_limit},"token_ttl_seconds":{ttl},"showtimes":[{{"starts_at":"{starts_at}","seats":{seats}}}]}}"#
        )
    };
    let good_seats = r#"[{"label":"A1","price":5}]"#;
    let cases = [
        (event("1", "60", "tomorrow", good_seats), 400, "malformed_request"),
        (event("1", "60", "2026-02-30T00:00:00Z", good_seats), 400, "malformed_request"),
        (event("1", "60", "2026-12-24T19:30:00", good_seats), 400, "malformed_request"),
        (event("0", "60", "2026-12-24T19:30:00Z", good_seats), 400, "malformed_request"),
        (event("10001", "60", "2026-12-24T19:30:00Z", good_seats), 400, "malformed_request"),
        (event("-1", "60", "2026-12-24T19:30:00Z", good_seats), 400, "malformed_request"),
        (event("1", "0", "2026-12-24T19:30:00Z", good_seats), 400, "malformed_request"),
        (event("1", "86401", "2026-12-24T19:30:00Z", good_seats), 400, "malformed_request"),
        (event("1", "60", "2026-12-24T19:30:00Z", "[]"), 400, "malformed_request"),
        (
            event("1", "60", "2026-12-24T19:30:00Z", r#"[{"label":"A1","price":5},{"label":"A1","price":6}]"#),
            400,
            "malformed_request",
        ),
        (event("1", "60", "2026-12-24T19:30:00Z", r#"[{"label":"A1","price":0}]"#), 422, "invalid_amount"),
        (event("1", "60", "2026-12-24T19:30:00Z", r#"[{"label":"A1","price":5,"row":1}]"#), 400, "malformed_request"),
        (r#"{"name":"e","active_limit":1,"token_ttl_seconds":60,"showtimes":[]}"#.to_owned(), 400, "malformed_request"),
    ];
    for (body, status, code) in cases {
        let response = app.call(Call::post("/v1/events").bearer(ADMIN_KEY).json(body.clone())).await;
        assert_eq!(response.status.as_u16(), status, "{body}: {}", String::from_utf8_lossy(&response.body));
        response.assert_problem(status, code);
    }
    let snapshot = app.snapshot().await;
    assert_eq!((snapshot.events.len(), snapshot.seats.len()), (0, 0));
}
