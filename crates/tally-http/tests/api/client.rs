//! The typed client (`tally-client`) against the real router: every method
//! reaches its route and decodes its reply into `tally-api`'s types, and a
//! refusal decodes to the server's own `Code`. What protects it: a route or
//! a body that drifts between the server and the client its callers use.

use axum::http::StatusCode;
use tally_client::dto::{CreateOrderRequest, CreatePaymentRequest, CreateProductRequest};
use tally_client::{Code, Error, LedgerCursor};

use crate::helpers::TestApp;

#[tokio::test]
async fn every_typed_method_reaches_its_route_and_decodes_its_reply() {
    let app = TestApp::spawn();
    assert_eq!(app.api.health().await.unwrap().body.status, "ok");
    assert_eq!(app.api.ready().await.unwrap().status, StatusCode::OK);
    let user = app.create_user("typed").await;
    let api = app.user_api(&user);

    let topped = api.top_up("t-1", 5_000).await.unwrap();
    assert_eq!((topped.status, topped.body.amount, topped.body.balance), (StatusCode::CREATED, 5_000, 5_000));
    let replay = api.top_up("t-1", 5_000).await.unwrap();
    assert_eq!((replay.replayed, replay.body.entry_id), (true, topped.body.entry_id));

    let created = api.create_payment("p-1", &CreatePaymentRequest::of_amount(1_200, "wallet")).await.unwrap();
    assert_eq!((created.status, created.body.status.as_str()), (StatusCode::CREATED, "wait"));
    let confirmed = api.confirm_payment("c-1", &created.body.id, None).await.unwrap();
    assert_eq!(confirmed.body.status, "done");
    let cancelled = api.cancel_payment("x-1", &created.body.id).await.unwrap();
    assert_eq!(cancelled.body.status, "cancelled");
    assert_eq!(api.payment(&created.body.id).await.unwrap().body, cancelled.body);
    let one_step = CreatePaymentRequest::of_amount(300, "wallet").confirmed();
    assert_eq!(api.create_payment("p-2", &one_step).await.unwrap().body.status, "done");

    let wallet = api.wallet().await.unwrap().body;
    assert_eq!(wallet.balance, 5_000 - 300);
    let first = api.ledger(2, LedgerCursor::First).await.unwrap().body;
    let cursor = first.next.clone().expect("four entries, pages of two");
    let second = api.ledger(2, LedgerCursor::After(&cursor)).await.unwrap().body;
    let sum: i64 = first.entries.iter().chain(&second.entries).map(|entry| entry.amount).sum();
    assert_eq!((first.entries.len() + second.entries.len(), sum), (4, wallet.balance));

    let admin = app.admin_api();
    let product = admin.create_product(&CreateProductRequest::new("pen", 100, 1)).await.unwrap().body;
    assert_eq!(admin.restock("r-1", &product.id, 2).await.unwrap().body.stock, 3);
    assert_eq!(app.api.product(&product.id).await.unwrap().body.stock, 3);

    let event = app.create_event(10, &[2], 700).await;
    let showtimes = app.api.showtimes(&event.id).await.unwrap().body.showtimes;
    assert_eq!((showtimes.len(), showtimes[0].available_seats), (1, 2));
    let token = api.join_queue(&event.id).await.unwrap().body;
    assert_eq!(api.queue_token(&token.token).await.unwrap().body.status, "active");
    let request = CreateOrderRequest::of(&[(&product.id, 1)], &[event.seat(0, 0)]);
    let order = api.create_order("o-1", &request, Some(&token.token)).await.unwrap().body;
    assert_eq!((order.total, order.status.as_str()), (800, "pending_payment"));
    assert_eq!(api.order(&order.id).await.unwrap().body, order);
    let seats = app.api.seats(&event.showtimes[0].0).await.unwrap().body.seats;
    assert_eq!(seats.iter().filter(|seat| seat.status == "held").count(), 1);
    assert_eq!(api.cancel_order("oc-1", &order.id).await.unwrap().body.status, "cancelled");
}

#[tokio::test]
async fn a_refusal_decodes_to_the_servers_code_and_is_not_retried() {
    let app = TestApp::spawn();
    let user = app.create_user("poor").await;
    let api = app.user_api(&user);
    let error = api.create_payment("p", &CreatePaymentRequest::of_amount(10, "wallet").confirmed()).await.unwrap_err();
    let Error::Problem { status, problem, .. } = &error else { panic!("a problem, not {error:?}") };
    assert_eq!((*status, problem.code()), (StatusCode::CONFLICT, Some(Code::InsufficientBalance)));
    // Stored under the key: the same request replays the refusal.
    let again = api.create_payment("p", &CreatePaymentRequest::of_amount(10, "wallet").confirmed()).await;
    assert_eq!(again.unwrap_err().code(), Some(Code::InsufficientBalance));
    let nobody = app.api.as_key("tly_nobody").wallet().await.unwrap_err();
    assert_eq!((nobody.status(), nobody.code()), (Some(StatusCode::UNAUTHORIZED), Some(Code::Unauthorized)));
}
