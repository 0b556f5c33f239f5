//! Orders: `POST /v1/orders`, `GET /v1/orders/{id}`, `POST /v1/orders/{id}/cancel`,
//! and paying them with `POST /v1/payments {order_id}`.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Call, TestApp, TestEvent, TestUser, call_router};

#[tokio::test]
async fn an_order_reserves_products_and_seats_and_reads_back() {
    let app = TestApp::spawn();
    let product = app.create_product("poster", 1500, 5).await;
    let event = app.create_event(2, &[3], 12_000).await;
    let user = app.create_user("buyer").await;
    let token = app.active_token(&user, &event.id).await;
    let (a1, a3) = (event.seat(0, 0).to_owned(), event.seat(0, 2).to_owned());
    let body = json!({"items": [{"product_id": product, "quantity": 2}], "seats": [a3, a1]});
    let response = app.order(&user, "o1", body, Some(&token)).await;
    let order = response.assert_status(201);
    assert_eq!(response.content_type(), "application/json");
    let id = order["id"].as_str().unwrap();
    assert!(tally_core::ids::OrderId::parse(id).is_some());
    assert_eq!(
        order,
        json!({
            "id": id,
            "status": "pending_payment",
            "total": 2 * 1500 + 2 * 12_000,
            "expires_at": "2026-11-23T00:05:00.000Z",
            "items": [{"product_id": product, "quantity": 2, "unit_price": 1500}],
            "seats": [{"seat_id": a1, "price": 12_000}, {"seat_id": a3, "price": 12_000}],
            "created_at": "2026-11-23T00:00:00.000Z",
        })
    );
    assert_eq!(app.get_order(&user, id).await.assert_status(200), order);
    assert_eq!(app.stock(&product).await, 3);
    let statuses: Vec<String> = app.seat_statuses(&event.showtimes[0].0).await.into_iter().map(|s| s.1).collect();
    assert_eq!(statuses, ["held", "available", "held"]);
    let showtimes = app.call(Call::get(&format!("/v1/events/{}/showtimes", event.id))).await.assert_status(200);
    assert_eq!(showtimes["showtimes"][0]["available_seats"], 1);
    app.assert_invariants().await;
}

/// A fresh app with a product and a user: what most order tests start from.
struct Shop {
    app: TestApp,
    product: String,
    user: TestUser,
}

impl Shop {
    /// `product` is (name, price, stock), `buyer` (name, balance); a buyer
    /// with no balance has never topped up.
    async fn open(product: (&str, i64, u64), buyer: (&str, i64)) -> Shop {
        let app = TestApp::spawn();
        let product = app.create_product(product.0, product.1, product.2).await;
        let user = match buyer.1 {
            0 => app.create_user(buyer.0).await,
            balance => app.funded_user(buyer.0, balance).await,
        };
        Shop { app, product, user }
    }
}

/// A [`Shop`] whose user holds a pending order of its product and one seat,
/// taken with a fresh active queue token of theirs.
struct SeatOrder {
    app: TestApp,
    product: String,
    event: TestEvent,
    user: TestUser,
    seat: String,
    order: String,
}

impl SeatOrder {
    /// `event` is (active limit, seats of its one showtime, seat price); the
    /// order is of `quantity` units and the showtime's seat number `seat`.
    async fn place(
        product: (&str, i64, u64),
        event: (u32, usize, i64),
        buyer: (&str, i64),
        seat: usize,
        quantity: u64,
    ) -> SeatOrder {
        let Shop { app, product, user } = Shop::open(product, buyer).await;
        let event = app.create_event(event.0, &[event.1], event.2).await;
        let seat = event.seat(0, seat).to_owned();
        let token = app.active_token(&user, &event.id).await;
        let body = json!({"items": [{"product_id": product, "quantity": quantity}], "seats": [seat]});
        let order = app.order(&user, "o", body, Some(&token)).await.assert_created();
        SeatOrder { app, product, event, user, seat, order }
    }
}

#[tokio::test]
async fn paying_an_order_charges_its_total_once_and_sells_it() {
    let SeatOrder { app, product, event, user, seat, order } =
        SeatOrder::place(("poster", 1500, 5), (2, 2, 12_000), ("buyer", 100_000), 1, 1).await;
    let created = app.pay_order_create(&user, &order, "pay").await.assert_status(201);
    let payment = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created,
        json!({"id": payment, "status": "wait", "amount": 13_500, "payback_amount": 0, "method": "wallet", "order_id": order})
    );
    let confirmed = app.confirm(&user, &payment, "confirm").await.assert_status(200);
    assert_eq!(confirmed["status"], "done");
    assert_eq!(confirmed["order_id"], order.as_str());
    let paid = app.get_order(&user, &order).await.assert_status(200);
    assert_eq!((paid["status"].as_str(), paid["payment_id"].as_str()), (Some("paid"), Some(payment.as_str())));
    assert_eq!(app.balance(&user).await, 100_000 - 13_500);
    assert_eq!(app.seat_status(&event.showtimes[0].0, &seat).await, "sold");
    assert_eq!(app.stock(&product).await, 4, "taken at order time, kept when paid");
    // The order is paid: another payment for it is refused, and moves nothing.
    app.pay_order_create(&user, &order, "pay-again").await.assert_problem(409, "invalid_state");
    assert_eq!(app.payment(&user, &payment).await, confirmed);
    assert_eq!(app.balance(&user).await, 100_000 - 13_500);
    app.assert_invariants().await;
}

#[tokio::test]
async fn two_payments_for_one_order_charge_once() {
    let Shop { app, product, user } = Shop::open(("p", 700, 5), ("u", 10_000)).await;
    let order = app.order_of(&user, &product, 1).await;
    let first = app.pay_order_create(&user, &order, "a").await.assert_created();
    let second = app.pay_order_create(&user, &order, "b").await.assert_created();
    app.confirm(&user, &first, "ca").await.assert_status(200);
    app.confirm(&user, &second, "cb").await.assert_problem(409, "invalid_state");
    assert_eq!(app.balance(&user).await, 10_000 - 700);
    assert_eq!(app.payment(&user, &second).await["status"], "wait", "the refused confirm changed nothing");
    app.assert_invariants().await;
}

#[tokio::test]
async fn out_of_stock_is_a_stored_refusal_that_changes_nothing() {
    let Shop { app, product, user } = Shop::open(("scarce", 100, 1), ("u", 0)).await;
    let body = json!({"items": [{"product_id": product, "quantity": 2}]});
    let refused = app.order(&user, "want-2", body.clone(), None).await;
    let problem = refused.assert_problem(409, "out_of_stock");
    assert_eq!(problem["title"], "Out of stock");
    assert_eq!(app.stock(&product).await, 1);
    // Stock arrives; the same key still answers what it answered.
    app.call(Call::restock(&product, "r").json(r#"{"quantity":4}"#)).await.assert_status(200);
    let replayed = app.order(&user, "want-2", body.clone(), None).await;
    replayed.assert_replay_of(&refused);
    assert_eq!(app.stock(&product).await, 5);
    app.order(&user, "want-2-again", body, None).await.assert_status(201);
    assert_eq!(app.stock(&product).await, 3);
    assert_eq!(app.snapshot().await.orders.len(), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_held_seat_is_unavailable_to_anyone_else() {
    let app = TestApp::spawn();
    let event = app.create_event(2, &[2], 5000).await;
    let [first, second] = app.create_users(["first", "second"]).await;
    let first_token = app.active_token(&first, &event.id).await;
    let second_token = app.active_token(&second, &event.id).await;
    let seat = event.seat(0, 0).to_owned();
    let other = event.seat(0, 1).to_owned();
    app.order(&first, "mine", json!({"seats": [seat]}), Some(&first_token)).await.assert_status(201);
    // All or nothing: the free seat in the same order is not held either.
    let refused = app.order(&second, "mine-too", json!({"seats": [other, seat]}), Some(&second_token)).await;
    refused.assert_problem(409, "seat_unavailable");
    assert_eq!(app.seat_status(&event.showtimes[0].0, &other).await, "available");
    let replayed = app.order(&second, "mine-too", json!({"seats": [other, seat]}), Some(&second_token)).await;
    replayed.assert_replay_of(&refused);
    assert_eq!(app.snapshot().await.orders.len(), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_unpaid_order_expires_and_its_stock_and_seats_come_back() {
    let SeatOrder { app, product, event, user, seat, order } =
        SeatOrder::place(("p", 100, 5), (1, 1, 900), ("slow", 10_000), 0, 3).await;
    // A payment created in time, confirmed too late.
    let payment = app.pay_order_create(&user, &order, "in-time").await.assert_created();
    app.clock.advance(Duration::from_secs(299));
    assert_eq!(app.get_order(&user, &order).await.assert_status(200)["status"], "pending_payment");
    app.clock.advance(Duration::from_secs(1));
    // Past its TTL it reads expired even before the sweeper ran.
    assert_eq!(app.get_order(&user, &order).await.assert_status(200)["status"], "expired");
    app.pay_order_create(&user, &order, "too-late").await.assert_problem(409, "order_expired");
    let refused = app.confirm(&user, &payment, "confirm").await;
    refused.assert_problem(409, "order_expired");
    let replayed = app.confirm(&user, &payment, "confirm").await;
    replayed.assert_replay_of(&refused);
    app.cancel_order(&user, &order, "cancel").await.assert_problem(409, "order_expired");
    assert_eq!(app.balance(&user).await, 10_000, "never charged");
    assert_eq!(app.stock(&product).await, 2, "held until the sweeper writes the expiry");
    assert_eq!(app.tally.expire_orders(100).await.unwrap(), 1);
    assert_eq!(app.tally.expire_orders(100).await.unwrap(), 0, "once");
    assert_eq!(app.stock(&product).await, 5);
    assert_eq!(app.seat_status(&event.showtimes[0].0, &seat).await, "available");
    assert_eq!(app.get_order(&user, &order).await.assert_status(200)["status"], "expired");
    app.assert_invariants().await;
}

#[tokio::test]
async fn cancelling_a_pending_order_gives_everything_back_once() {
    let Shop { app, product, user } = Shop::open(("p", 100, 5), ("u", 0)).await;
    let order = app.order_of(&user, &product, 4).await;
    assert_eq!(app.stock(&product).await, 1);
    let response = app.cancel_order(&user, &order, "cancel").await;
    let cancelled = response.assert_status(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["id"], order.as_str());
    assert_eq!(app.stock(&product).await, 5);
    let replayed = app.cancel_order(&user, &order, "cancel").await;
    replayed.assert_replay_of(&response);
    // A new key: the order is already cancelled.
    app.cancel_order(&user, &order, "cancel-again").await.assert_problem(409, "invalid_state");
    app.pay_order_create(&user, &order, "pay").await.assert_problem(409, "invalid_state");
    assert_eq!(app.stock(&product).await, 5, "given back once");
    app.assert_invariants().await;
}

#[tokio::test]
async fn cancelling_a_paid_order_refunds_it_and_gives_stock_and_seats_back() {
    let SeatOrder { app, product, event, user, seat, order } =
        SeatOrder::place(("p", 2000, 3), (1, 1, 8000), ("u", 50_000), 0, 2).await;
    let payment = app.pay_order(&user, &order).await;
    assert_eq!(app.balance(&user).await, 50_000 - 12_000);
    let cancelled = app.cancel_order(&user, &order, "cancel").await.assert_status(200);
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["payment_id"].as_str()),
        (Some("cancelled"), payment["id"].as_str())
    );
    assert_eq!(app.balance(&user).await, 50_000, "refunded");
    assert_eq!(app.stock(&product).await, 3);
    assert_eq!(app.seat_status(&event.showtimes[0].0, &seat).await, "available");
    assert_eq!(app.payment(&user, payment["id"].as_str().unwrap()).await["status"], "cancelled");
    let kinds: Vec<String> = app.ledger(&user, "").await.assert_status(200)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["kind"].as_str().unwrap(), e["amount"]))
        .collect();
    assert_eq!(kinds, ["top_up 50000", "payment -12000", "refund 12000"]);
    app.cancel_order(&user, &order, "cancel-again").await.assert_problem(409, "invalid_state");
    app.assert_invariants().await;
}

#[tokio::test]
async fn seats_need_the_callers_active_token_for_their_event() {
    let app = TestApp::spawn();
    let event = app.create_event(1, &[2], 1000).await;
    let elsewhere = app.create_event(5, &[1], 1000).await;
    let [user, other, latecomer] = app.create_users(["u", "other", "late"]).await;
    let others_token = app.active_token(&other, &event.id).await;
    let waiting = app.waiting_token(&latecomer, &event.id).await;
    let elsewhere_token = app.active_token(&user, &elsewhere.id).await;
    let seat = json!({"seats": [event.seat(0, 0)]});
    // No token; another user's; another event's; a waiting one.
    app.order(&user, "k1", seat.clone(), None).await.assert_problem(403, "forbidden");
    app.order(&user, "k2", seat.clone(), Some(&others_token)).await.assert_problem(403, "forbidden");
    app.order(&user, "k3", seat.clone(), Some(&elsewhere_token)).await.assert_problem(403, "forbidden");
    app.order(&latecomer, "k4", seat.clone(), Some(&waiting)).await.assert_problem(403, "forbidden");
    app.order(&user, "k5", seat.clone(), Some("not-a-token")).await.assert_problem(400, "malformed_request");
    assert!(app.snapshot().await.orders.is_empty());
    assert_eq!(app.seat_status(&event.showtimes[0].0, event.seat(0, 0)).await, "available");
    // A 403 is not stored: the same key runs again once the token is given.
    app.order(&other, "retry", seat.clone(), None).await.assert_problem(403, "forbidden");
    let response = app.order(&other, "retry", seat, Some(&others_token)).await;
    response.assert_status(201);
    assert_eq!(response.header("idempotent-replayed"), None);
    // Seats of two events in one order.
    let mixed = json!({"seats": [event.seat(0, 1), elsewhere.seat(0, 0)]});
    app.order(&user, "k6", mixed, Some(&elsewhere_token)).await.assert_problem(400, "malformed_request");
    // The admin has no orders.
    app.call(Call::post("/v1/orders").bearer(ADMIN_KEY).idem("a").json(r#"{"items":[]}"#))
        .await
        .assert_problem(403, "forbidden");
    app.assert_invariants().await;
}

#[tokio::test]
async fn another_users_order_is_not_found() {
    let Shop { app, product, user: owner } = Shop::open(("p", 100, 5), ("owner", 1000)).await;
    let thief = app.funded_user("thief", 1000).await;
    let order = app.order_of(&owner, &product, 1).await;
    app.get_order(&thief, &order).await.assert_problem(404, "not_found");
    app.cancel_order(&thief, &order, "steal").await.assert_problem(404, "not_found");
    app.pay_order_create(&thief, &order, "steal-pay").await.assert_problem(404, "not_found");
    for unknown in ["00000000-0000-0000-0000-000000000009", "nope"] {
        app.get_order(&owner, unknown).await.assert_problem(404, "not_found");
        app.cancel_order(&owner, unknown, &format!("c-{unknown}")).await.assert_problem(404, "not_found");
    }
    let unknown_product = json!({"items": [{"product_id": "00000000-0000-0000-0000-000000000009", "quantity": 1}]});
    app.order(&owner, "ghost", unknown_product, None).await.assert_problem(404, "not_found");
    assert_eq!(app.get_order(&owner, &order).await.assert_status(200)["status"], "pending_payment");
    assert_eq!((app.balance(&owner).await, app.balance(&thief).await), (1000, 1000));
    assert_eq!(app.stock(&product).await, 4);
    app.call(Call::get(&format!("/v1/orders/{order}"))).await.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn a_keyed_order_is_created_once_and_replayed() {
    let Shop { app, product, user } = Shop::open(("p", 250, 10), ("u", 0)).await;
    let body = json!({"items": [{"product_id": product, "quantity": 3}]});
    let first = app.order(&user, "once", body.clone(), None).await;
    first.assert_status(201);
    app.clock.advance(Duration::from_secs(10));
    let again = app.order(&user, "once", body, None).await;
    again.assert_replay_of(&first);
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(app.stock(&product).await, 7, "reserved once");
    assert_eq!(app.snapshot().await.orders.len(), 1);
    let other = json!({"items": [{"product_id": product, "quantity": 4}]});
    app.order(&user, "once", other, None).await.assert_problem(422, "idempotency_key_reused");
    app.order(&user, "none", json!({"items": [{"product_id": product, "quantity": 1}]}), None).await.assert_status(201);
    let missing = app
        .call(
            Call::post("/v1/orders")
                .bearer(&user.key)
                .json(json!({"items": [{"product_id": product, "quantity": 1}]}).to_string()),
        )
        .await;
    missing.assert_problem(400, "idempotency_key_missing");
    assert_eq!(app.stock(&product).await, 6);
    app.assert_invariants().await;
}

#[tokio::test]
async fn bad_order_input_gets_its_code_and_changes_nothing() {
    let Shop { app, product, user } = Shop::open(("p", 100, 1000), ("u", 0)).await;
    let item = |quantity: &str| format!(r#"{{"items":[{{"product_id":"{product}","quantity":{quantity}}}]}}"#);
    let many_items: Vec<Value> =
        (0..11).map(|i| json!({"product_id": format!("00000000-0000-0000-0000-{i:012}"), "quantity": 1})).collect();
    let many_seats: Vec<String> = (0..11).map(|i| format!("00000000-0000-0000-0000-{i:012}")).collect();
    let cases = [
        (item("0"), 422, "invalid_amount"),
        (item("-1"), 422, "invalid_amount"),
        (item("1001"), 422, "invalid_amount"),
        (item("1e30"), 422, "invalid_amount"),
        (item("1.5"), 400, "malformed_request"),
        (item("\"1\""), 400, "malformed_request"),
        ("{}".to_owned(), 400, "malformed_request"),
        (r#"{"items":[],"seats":[]}"#.to_owned(), 400, "malformed_request"),
        (r#"{"items":[{"product_id":"x","quantity":1}]}"#.to_owned(), 400, "malformed_request"),
        (r#"{"items":[{"quantity":1}]}"#.to_owned(), 400, "malformed_request"),
        (format!(r#"{{"items":[{{"product_id":"{product}","quantity":1,"price":1}}]}}"#), 400, "malformed_request"),
        (format!(r#"{{"items":[{{"product_id":"{product}","quantity":1}}],"user_id":"x"}}"#), 400, "malformed_request"),
        (
            format!(
                r#"{{"items":[{{"product_id":"{product}","quantity":1}},{{"product_id":"{product}","quantity":2}}]}}"#
            ),
            400,
            "malformed_request",
        ),
        (json!({"items": many_items}).to_string(), 400, "malformed_request"),
        (json!({"seats": many_seats}).to_string(), 400, "malformed_request"),
        (r#"{"seats":["not-a-seat"]}"#.to_owned(), 400, "malformed_request"),
        (r#"{"seats":"00000000-0000-0000-0000-000000000001"}"#.to_owned(), 400, "malformed_request"),
    ];
    for (i, (body, status, code)) in cases.iter().enumerate() {
        let response =
            app.call(Call::post("/v1/orders").bearer(&user.key).idem(&format!("bad-{i}")).json(body.clone())).await;
        assert_eq!(response.status.as_u16(), *status, "{body}: {}", String::from_utf8_lossy(&response.body));
        response.assert_problem(*status, code);
    }
    assert!(app.snapshot().await.orders.is_empty());
    assert_eq!(app.stock(&product).await, 1000);
    // The largest line is fine.
    app.order(&user, "max", json!({"items": [{"product_id": product, "quantity": 1000}]}), None)
        .await
        .assert_status(201);
    assert_eq!(app.stock(&product).await, 0);
}

#[tokio::test]
async fn order_payment_bodies_take_exactly_one_of_amount_and_order_id() {
    let Shop { app, product, user } = Shop::open(("p", 100, 5), ("u", 1000)).await;
    let order = app.order_of(&user, &product, 1).await;
    let cases = [
        json!({"order_id": order, "amount": 100, "method": "wallet"}),
        json!({"method": "wallet"}),
        json!({"order_id": "not-a-uuid", "method": "wallet"}),
        json!({"order_id": 7, "method": "wallet"}),
        json!({"order_id": order}),
    ];
    for (i, body) in cases.into_iter().enumerate() {
        app.create_payment(&user, &format!("k{i}"), body).await.assert_problem(400, "malformed_request");
    }
    let unknown = json!({"order_id": "00000000-0000-0000-0000-000000000009", "method": "wallet"});
    app.create_payment(&user, "unknown", unknown).await.assert_problem(404, "not_found");
    let payback = json!({"order_id": order, "method": "wallet", "payback_amount": 101});
    app.create_payment(&user, "payback", payback).await.assert_problem(400, "malformed_request");
    assert!(app.snapshot().await.payments.is_empty());
}

/// Sends every call at once and returns their statuses, sorted; each 409
/// must be the problem `conflict`.
async fn race(app: &TestApp, calls: impl Iterator<Item = Call>, conflict: &str) -> Vec<u16> {
    let racers: Vec<_> = calls.map(|call| tokio::spawn(call_router(app.router.clone(), call))).collect();
    let mut statuses = Vec::new();
    for racer in racers {
        let response = racer.await.unwrap();
        if response.status == StatusCode::CONFLICT {
            response.assert_problem(409, conflict);
        }
        statuses.push(response.status.as_u16());
    }
    statuses.sort_unstable();
    statuses
}

/// Racers for the last units: exactly as many win as there are units.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_never_oversell() {
    let app = TestApp::spawn();
    let product = app.create_product("last", 100, 3).await;
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(app.create_user(&format!("racer-{i}")).await);
    }
    let body = json!({"items": [{"product_id": product, "quantity": 1}]}).to_string();
    let calls = users.iter().map(|user| Call::post("/v1/orders").bearer(&user.key).idem("race").json(body.clone()));
    let statuses = race(&app, calls, "out_of_stock").await;
    assert_eq!(statuses, [201, 201, 201, 409, 409, 409, 409, 409]);
    assert_eq!(app.stock(&product).await, 0);
    app.assert_invariants().await;
}

/// Racers for one seat: exactly one holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_seat_orders_hold_a_seat_once() {
    let app = TestApp::spawn();
    let event = app.create_event(10, &[1], 500).await;
    let mut racers = Vec::new();
    for i in 0..6 {
        let user = app.create_user(&format!("fan-{i}")).await;
        let token = app.active_token(&user, &event.id).await;
        racers.push((user, token));
    }
    let body = json!({"seats": [event.seat(0, 0)]}).to_string();
    let calls = racers.iter().map(|(user, token)| {
        Call::post("/v1/orders").bearer(&user.key).idem("seat").header("queue-token", token).json(body.clone())
    });
    let statuses = race(&app, calls, "seat_unavailable").await;
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409]);
    assert_eq!(app.seat_status(&event.showtimes[0].0, event.seat(0, 0)).await, "held");
    app.assert_invariants().await;
}

/// An event whose tokens may hold `max_seats_per_token` seats, with one
/// showtime of `seats` seats at 100; returns the event's id and the seat ids.
async fn event_with_seat_limit(app: &TestApp, max_seats_per_token: u32, seats: usize) -> (String, Vec<String>) {
    let seats: Vec<Value> = (1..=seats).map(|n| json!({"label": format!("A{n}"), "price": 100})).collect();
    let body = json!({
        "name": "concert",
        "active_limit": 1,
        "token_ttl_seconds": 600,
        "max_seats_per_token": max_seats_per_token,
        "showtimes": [{"starts_at": "2026-12-24T19:30:00Z", "seats": seats}],
    });
    let event = app.call(Call::post("/v1/events").bearer(ADMIN_KEY).json(body.to_string())).await.assert_status(201);
    assert_eq!(event["max_seats_per_token"], max_seats_per_token);
    let seat_ids = event["showtimes"][0]["seats"].as_array().unwrap().iter();
    (event["id"].as_str().unwrap().to_owned(), seat_ids.map(|s| s["id"].as_str().unwrap().to_owned()).collect())
}

async fn available_seats(app: &TestApp, event: &str) -> u64 {
    let showtimes = app.call(Call::get(&format!("/v1/events/{event}/showtimes"))).await.assert_status(200);
    showtimes["showtimes"][0]["available_seats"].as_u64().unwrap()
}

/// Issue 10's hole 7: one active token placing order after order could hold
/// every seat of a showtime, so the K-token queue protected nothing.
#[tokio::test]
async fn one_queue_token_holds_at_most_its_events_seats_across_its_orders() {
    let app = TestApp::spawn();
    let (event, seats) = event_with_seat_limit(&app, 2, 5).await;
    let user = app.funded_user("hoarder", 10_000).await;
    let token = app.active_token(&user, &event).await;

    // Two seats in one order: the token's limit, reached.
    let first = app.order(&user, "first", json!({"seats": [seats[0], seats[1]]}), Some(&token)).await;
    let first = first.assert_created();
    // A third in a second order: refused, stored, nothing held.
    let refused = app.order(&user, "second", json!({"seats": [seats[2]]}), Some(&token)).await;
    refused.assert_problem(409, "seat_limit_reached");
    let replayed = app.order(&user, "second", json!({"seats": [seats[2]]}), Some(&token)).await;
    replayed.assert_replay_of(&refused);
    // Nor do several at once slip by.
    app.order(&user, "third", json!({"seats": [seats[3], seats[4]]}), Some(&token))
        .await
        .assert_problem(409, "seat_limit_reached");
    assert_eq!(available_seats(&app, &event).await, 3);
    assert_eq!(app.snapshot().await.orders.len(), 1);

    // Cancelling the first order gives its seats back to the token too.
    app.cancel_order(&user, &first, "cancel-first").await.assert_status(200);
    let again = app.order(&user, "again", json!({"seats": [seats[2]]}), Some(&token)).await;
    assert_eq!(again.assert_status(201)["status"], "pending_payment");
    let more = app.order(&user, "more", json!({"seats": [seats[3]]}), Some(&token)).await;
    more.assert_status(201);
    app.order(&user, "too-many", json!({"seats": [seats[4]]}), Some(&token))
        .await
        .assert_problem(409, "seat_limit_reached");
    assert_eq!(available_seats(&app, &event).await, 3);
    app.assert_invariants().await;
}

/// Invariant 2 (a replay returns the first response): the `Queue-Token`
/// header is not part of a key's fingerprint, so a stored seat order is
/// replayed to its retry whatever token the retry sends, none included
/// (session 14: without the header it was refused 403 before the key was
/// looked up). A fresh key without a token is still 403, not stored.
#[tokio::test]
async fn a_stored_seat_order_replays_without_its_queue_token() {
    let app = TestApp::spawn();
    let (event, seats) = event_with_seat_limit(&app, 2, 3).await;
    let user = app.funded_user("fan", 10_000).await;
    let token = app.active_token(&user, &event).await;
    let body = json!({"seats": [seats[0]]});
    let first = app.order(&user, "seat-k", body.clone(), Some(&token)).await;
    first.assert_status(201);
    app.order(&user, "seat-k", body.clone(), None).await.assert_replay_of(&first);
    let stranger = "0b7c9e6a-1d2f-4e3a-9b8c-7d6e5f4a3b2c";
    app.order(&user, "seat-k", body.clone(), Some(stranger)).await.assert_replay_of(&first);
    let fresh = app.order(&user, "seat-fresh", json!({"seats": [seats[1]]}), None).await;
    fresh.assert_problem(403, "forbidden");
    let again = app.order(&user, "seat-fresh", json!({"seats": [seats[1]]}), Some(&token)).await;
    again.assert_status(201);
    assert_eq!(app.snapshot().await.orders.len(), 2);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_events_seat_limit_defaults_to_4_and_is_1_to_1000() {
    let app = TestApp::spawn();
    let event = app.create_event(1, &[6], 100).await;
    let user = app.funded_user("u", 10_000).await;
    let token = app.active_token(&user, &event.id).await;
    let four: Vec<&str> = (0..4).map(|i| event.seat(0, i)).collect();
    app.order(&user, "four", json!({"seats": four}), Some(&token)).await.assert_status(201);
    app.order(&user, "fifth", json!({"seats": [event.seat(0, 4)]}), Some(&token))
        .await
        .assert_problem(409, "seat_limit_reached");
    for bad in ["0", "1001", "-1", "null2"] {
        let body = format!(
            r#"{{"name":"e","active_limit":1,"token_ttl_seconds":60,"max_seats_per_token":{bad},"showtimes":[{{"starts_at":"2026-12-24T19:30:00Z","seats":[{{"label":"A1","price":1}}]}}]}}"#
        );
        app.call(Call::post("/v1/events").bearer(ADMIN_KEY).json(body)).await.assert_problem(400, "malformed_request");
    }
    assert_eq!(event_with_seat_limit(&app, 1_000, 1).await.1.len(), 1);
    assert_eq!(app.snapshot().await.events.len(), 2);
}
