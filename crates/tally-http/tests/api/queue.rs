//! The waiting queue: `POST /v1/events/{id}/queue`, `GET /v1/queue/{token}`.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{ADMIN_KEY, Call, TestApp, TestEvent, TestUser};

/// A fresh app with an event of one active slot and one seat, and a user
/// per name; the first has joined and holds the slot's token.
async fn one_slot_event(names: [&str; 2]) -> (TestApp, TestEvent, [TestUser; 2], String) {
    let app = TestApp::spawn();
    let event = app.create_event(1, &[1], 1000).await;
    let users = app.create_users(names).await;
    let token = app.active_token(&users[0], &event.id).await;
    (app, event, users, token)
}

#[tokio::test]
async fn the_second_joiner_waits_and_is_promoted_when_the_first_pays() {
    let app = TestApp::spawn();
    let event = app.create_event(1, &[3], 1000).await;
    let first = app.funded_user("first", 10_000).await;
    let second = app.funded_user("second", 10_000).await;
    let joined = app.join_queue(&first, &event.id).await.assert_status(201);
    let first_token = joined["token"].as_str().unwrap().to_owned();
    assert!(tally_core::ids::TokenId::parse(&first_token).is_some());
    assert_eq!(
        joined,
        json!({"token": first_token, "event_id": event.id, "position": 0, "status": "active", "expires_at": "2026-11-23T00:01:00.000Z"})
    );
    let waiting = app.join_queue(&second, &event.id).await.assert_status(201);
    let second_token = waiting["token"].as_str().unwrap().to_owned();
    assert_eq!(waiting, json!({"token": second_token, "event_id": event.id, "position": 1, "status": "waiting"}));
    // Joining again answers the same token; polling says the same.
    assert_eq!(app.join_queue(&second, &event.id).await.assert_status(201), waiting);
    assert_eq!(app.queue_token(&second, &second_token).await.assert_status(200), waiting);

    app.clock.advance(Duration::from_secs(5));
    let body = json!({"seats": [event.seat(0, 0)]});
    let order = app.order(&first, "o1", body, Some(&first_token)).await.assert_status(201);
    let order = order["id"].as_str().unwrap();
    // Ordering alone does not use the token up; paying does.
    assert_eq!(app.queue_token(&second, &second_token).await.assert_status(200)["status"], "waiting");
    app.pay_order(&first, order).await;
    let promoted = app.queue_token(&second, &second_token).await.assert_status(200);
    assert_eq!(
        promoted,
        json!({"token": second_token, "event_id": event.id, "position": 0, "status": "active", "expires_at": "2026-11-23T00:01:05.000Z"})
    );
    let used = app.queue_token(&first, &first_token).await.assert_status(200);
    assert_eq!(used["status"], "expired", "a used token is over: {used}");
    // The first user's next turn is a new token, at the back of the line.
    let again = app.join_queue(&first, &event.id).await.assert_status(201);
    assert_ne!(again["token"], first_token.as_str());
    assert_eq!((again["status"].as_str(), again["position"].as_u64()), (Some("waiting"), Some(1)));
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_active_token_past_its_ttl_expires_and_frees_its_slot() {
    let (app, event, [first, second], first_token) = one_slot_event(["first", "second"]).await;
    let second_token = app.waiting_token(&second, &event.id).await;
    app.clock.advance(Duration::from_secs(59));
    assert_eq!(app.queue_token(&first, &first_token).await.assert_status(200)["status"], "active");
    app.clock.advance(Duration::from_secs(1));
    let expired = app.queue_token(&first, &first_token).await.assert_status(200);
    assert_eq!(
        expired,
        json!({"token": first_token, "event_id": event.id, "position": 0, "status": "expired", "expires_at": "2026-11-23T00:01:00.000Z"})
    );
    let promoted = app.queue_token(&second, &second_token).await.assert_status(200);
    assert_eq!((promoted["status"].as_str(), promoted["position"].as_u64()), (Some("active"), Some(0)));
    assert_eq!(promoted["expires_at"], "2026-11-23T00:02:00.000Z");
    // An expired token books nothing.
    app.order(&first, "late", json!({"seats": [event.seat(0, 0)]}), Some(&first_token))
        .await
        .assert_problem(403, "forbidden");
    app.assert_invariants().await;
}

#[tokio::test]
async fn tokens_are_their_owners_alone() {
    let (app, event, [owner, other], token) = one_slot_event(["owner", "other"]).await;
    app.queue_token(&other, &token).await.assert_problem(404, "not_found");
    for unknown in ["00000000-0000-0000-0000-000000000009", "x"] {
        app.queue_token(&owner, unknown).await.assert_problem(404, "not_found");
        app.join_queue(&owner, unknown).await.assert_problem(404, "not_found");
    }
    app.call(Call::get(&format!("/v1/queue/{token}"))).await.assert_problem(401, "unauthorized");
    app.call(Call::post(&format!("/v1/events/{}/queue", event.id)).bearer(ADMIN_KEY))
        .await
        .assert_problem(403, "forbidden");
    app.call(Call::post(&format!("/v1/events/{}/queue", event.id)).bearer(&other.key).json(r#"{"position":1}"#))
        .await
        .assert_problem(400, "malformed_request");
    assert_eq!(app.snapshot().await.tokens.len(), 1, "only the owner's token");
}
