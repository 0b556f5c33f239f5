//! The client against the fake gateway with no faults: every outcome the
//! classification promises, end to end over real HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SECRET, client, start};
use tally_gateway::fake::FakeGateway;
use tally_gateway::protocol::codes;
use tally_gateway::{CancelOutcome, ConfirmOutcome, GatewayClient, GatewayConfig, GatewayError, LookupOutcome};

fn declined(code: &str) -> impl Fn(&ConfirmOutcome) -> bool + '_ {
    move |outcome| matches!(outcome, ConfirmOutcome::Declined { code: c, .. } if c == code)
}

#[tokio::test]
async fn approve_then_already_processed_then_lookup() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = fake.client();

    let first = client.confirm("pk_approve", "order-1", 15_000, "tally-pay-1").await;
    let ConfirmOutcome::Approved { payment_key, order_id, amount, approved_at } = first else {
        panic!("expected Approved, got {first:?}");
    };
    assert_eq!((payment_key.as_str(), order_id.as_str(), amount), ("pk_approve", "order-1", 15_000));
    assert!(!approved_at.is_empty());

    // Seed 003: the gateway's confirm is not idempotent, whatever the key.
    assert_eq!(client.confirm("pk_approve", "order-1", 15_000, "tally-pay-1").await, ConfirmOutcome::AlreadyProcessed);
    assert_eq!(client.confirm("pk_approve", "order-1", 15_000, "another-key").await, ConfirmOutcome::AlreadyProcessed);

    assert_eq!(
        client.lookup("pk_approve").await,
        LookupOutcome::Done { amount: 15_000, order_id: "order-1".into(), status: "DONE".into() }
    );
    let stats = fake.gateway.payment_stats("pk_approve");
    assert_eq!((stats.confirm_requests, stats.confirm_effects, stats.lookups), (3, 1, 1));
    assert_eq!(stats.idempotency_keys, ["tally-pay-1", "tally-pay-1", "another-key"]);
    fake.stop().await;
}

#[tokio::test]
async fn a_declined_card_charges_nothing() {
    let fake = start(FakeGateway::new(SECRET)).await;
    fake.gateway.decline("pk_declined");
    let client = fake.client();

    let outcome = client.confirm("pk_declined", "order-2", 5_000, "k-2").await;
    assert!(declined(codes::REJECT_CARD_PAYMENT)(&outcome), "{outcome:?}");
    assert_eq!(client.lookup("pk_declined").await, LookupOutcome::NotFound);
    assert_eq!(fake.gateway.payment_stats("pk_declined").confirm_effects, 0);
}

#[tokio::test]
async fn an_amount_mismatch_is_declined_and_the_right_amount_then_approved() {
    let fake = start(FakeGateway::new(SECRET)).await;
    fake.gateway.register("pk_registered", 10_000);
    let client = fake.client();

    let outcome = client.confirm("pk_registered", "order-3", 9_999, "k-3").await;
    assert!(declined(codes::INVALID_REQUEST)(&outcome), "{outcome:?}");
    // A registered but unconfirmed payment has not been charged.
    assert_eq!(client.lookup("pk_registered").await, LookupOutcome::NotFound);

    let outcome = client.confirm("pk_registered", "order-3", 10_000, "k-3b").await;
    assert!(matches!(outcome, ConfirmOutcome::Approved { amount: 10_000, .. }), "{outcome:?}");
    assert_eq!(fake.gateway.payment_stats("pk_registered").confirm_effects, 1);
}

/// A wrong secret key is a definite refusal: the gateway charged nothing.
/// Confirm reports it as `Declined` with `UNAUTHORIZED_KEY` (so the caller
/// can tell a misconfiguration from a card decline), cancel as `Refused`,
/// and lookup as `Unknown` (it learnt nothing about the payment).
#[tokio::test]
async fn a_wrong_secret_key_is_declined_and_charges_nothing() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let wrong = client(&fake.base_url(), "test_sk_wrong", Duration::from_secs(2), Duration::from_secs(10));

    let outcome = wrong.confirm("pk_auth", "order-4", 1_000, "k-4").await;
    assert!(declined(codes::UNAUTHORIZED_KEY)(&outcome), "{outcome:?}");
    assert!(matches!(wrong.lookup("pk_auth").await, LookupOutcome::Unknown { .. }));
    assert!(matches!(
        wrong.cancel("pk_auth", "customer asked", "k-4c").await,
        CancelOutcome::Refused { code, .. } if code == codes::UNAUTHORIZED_KEY
    ));
    assert_eq!(fake.gateway.payment("pk_auth"), None);
    assert_eq!(fake.gateway.payment_stats("pk_auth").confirm_effects, 0);
    assert_eq!(fake.gateway.stats().unauthorized, 3);
}

#[tokio::test]
async fn cancel_once_then_already_cancelled() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = fake.client();
    assert!(matches!(client.confirm("pk_cancel", "order-5", 7_000, "k-5").await, ConfirmOutcome::Approved { .. }));

    assert_eq!(client.cancel("pk_cancel", "customer asked", "k-5-cancel").await, CancelOutcome::Cancelled);
    assert_eq!(client.cancel("pk_cancel", "customer asked", "k-5-cancel").await, CancelOutcome::AlreadyCancelled);
    assert_eq!(
        client.lookup("pk_cancel").await,
        LookupOutcome::Done { amount: 7_000, order_id: "order-5".into(), status: "CANCELED".into() }
    );
    // A cancelled payment was charged first: confirming it again is "already processed".
    assert_eq!(client.confirm("pk_cancel", "order-5", 7_000, "k-5").await, ConfirmOutcome::AlreadyProcessed);
    assert_eq!(fake.cancels("pk_cancel"), (2, 1), "requests, effects");
}

#[tokio::test]
async fn unknown_payments_are_not_found() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = fake.client();
    assert_eq!(client.lookup("pk_nobody").await, LookupOutcome::NotFound);
    assert_eq!(client.cancel("pk_nobody", "why not", "k-6").await, CancelOutcome::NotFound);
}

#[tokio::test]
async fn payment_keys_are_path_encoded_and_base_paths_kept() {
    // A key with a slash and a space must stay one path segment.
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = fake.client();
    let key = "pk/odd key?x=1";
    assert!(matches!(client.confirm(key, "order-7", 100, "k-7").await, ConfirmOutcome::Approved { .. }));
    assert!(matches!(client.lookup(key).await, LookupOutcome::Done { amount: 100, .. }));
    assert_eq!(client.cancel(key, "test", "k-7c").await, CancelOutcome::Cancelled);

    // A base URL with a path prefix the fake does not serve: a bare 404 is
    // not the gateway saying "no such payment".
    let prefixed = common::client(
        &format!("{}/not-the-gateway/", fake.base_url()),
        SECRET,
        Duration::from_secs(2),
        Duration::from_secs(10),
    );
    assert!(matches!(prefixed.lookup(key).await, LookupOutcome::Unknown { .. }));
}

#[tokio::test]
async fn the_client_refuses_arguments_the_gateway_would_reject_without_sending() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = fake.client();
    for outcome in [
        client.confirm("pk_bad", "order-8", 0, "k-8").await,
        client.confirm("pk_bad", "order-8", -5, "k-8").await,
        client.confirm("pk_bad", "", 10, "k-8").await,
        client.confirm("pk_bad", "order-8", 10, "").await,
        client.confirm("pk_bad", "order-8", 10, "has space").await,
        client.confirm("pk_bad", "order-8", 10, &"k".repeat(301)).await,
    ] {
        assert!(declined(codes::CLIENT_REFUSED)(&outcome), "{outcome:?}");
    }
    assert!(matches!(client.cancel("pk_bad", "", "k").await, CancelOutcome::Refused { .. }));
    assert_eq!(fake.gateway.payment_stats("pk_bad").confirm_requests, 0);
}

#[test]
fn client_config_is_checked_up_front() {
    let config = |url: &str, secret: &str| GatewayConfig::new(url, secret);
    assert!(matches!(
        GatewayClient::new(config("https://api.example", "sk")),
        Err(GatewayError::InvalidBaseUrl { .. })
    ));
    assert!(matches!(GatewayClient::new(config("not a url", "sk")), Err(GatewayError::InvalidBaseUrl { .. })));
    assert!(matches!(GatewayClient::new(config("http://h?q=1", "sk")), Err(GatewayError::InvalidBaseUrl { .. })));
    assert!(matches!(GatewayClient::new(config("http://h", "")), Err(GatewayError::EmptySecretKey)));
    assert!(matches!(GatewayClient::new(config("http://h", "a\nb")), Err(GatewayError::InvalidSecretKey)));
    let zero = GatewayConfig { request_timeout: Duration::ZERO, ..config("http://h", "sk") };
    assert!(matches!(GatewayClient::new(zero), Err(GatewayError::ZeroTimeout)));
    assert!(GatewayClient::new(config("http://127.0.0.1:9/prefix/", "sk")).is_ok());
    // The secret never reaches a log line.
    assert!(!format!("{:?}", config("http://h", "sk_live_secret")).contains("sk_live_secret"));
}

/// Seed 003 at 100 threads, straight at the fake: one charge, 99 "already
/// processed", however the requests interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_confirms_charge_once() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = Arc::new(fake.client());
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (client, barrier) = (Arc::clone(&client), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.confirm("pk_race", "order-race", 30_000, &format!("attempt-{i}")).await
        }));
    }
    let mut approved = 0;
    let mut already = 0;
    for task in tasks {
        match task.await.expect("task panicked") {
            ConfirmOutcome::Approved { amount: 30_000, .. } => approved += 1,
            ConfirmOutcome::AlreadyProcessed => already += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((approved, already), (1, 99));
    assert_eq!(fake.confirms("pk_race"), (100, 1), "requests, effects");
    fake.stop().await;
}

/// The admin endpoints, as a separate process would use them.
#[tokio::test]
async fn admin_endpoints_drive_the_fake_over_http() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let admin = reqwest::Client::new();
    let base = fake.base_url();
    let post = |path: &str, body: serde_json::Value| admin.post(format!("{base}{path}")).json(&body).send();

    assert_eq!(
        post("/__register", serde_json::json!({"paymentKey": "pk_admin", "amount": 500})).await.unwrap().status(),
        204
    );
    assert_eq!(post("/__decline", serde_json::json!({"paymentKey": "pk_no"})).await.unwrap().status(), 204);
    let set = post("/__faults", serde_json::json!({"seed": 9, "fail_5xx": {"when": {"next": 1}, "on": ["confirm"]}}))
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let bad = post("/__faults", serde_json::json!({"fail_5xx": {"when": {"probability": 1.5}}})).await.unwrap();
    assert_eq!(bad.status(), 422);
    // The refused plan did not replace the good one.
    let client = fake.client();
    assert!(matches!(client.confirm("pk_admin", "o", 500, "k-a").await, ConfirmOutcome::Unknown { .. }));
    assert!(matches!(client.confirm("pk_admin", "o", 400, "k-a").await, ConfirmOutcome::Declined { .. }));
    assert!(matches!(client.confirm("pk_admin", "o", 500, "k-a").await, ConfirmOutcome::Approved { .. }));
    assert!(declined(codes::REJECT_CARD_PAYMENT)(&client.confirm("pk_no", "o", 1, "k-n").await));

    let stats: serde_json::Value = admin.get(format!("{base}/__stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["payments"]["pk_admin"]["confirm_requests"], 3);
    assert_eq!(stats["payments"]["pk_admin"]["confirm_effects"], 1);
    assert_eq!(stats["faults"]["fail_5xx"], 1);
    let faults: serde_json::Value = admin.get(format!("{base}/__faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(faults["fail_5xx"]["when"]["next"], 0);
    assert_eq!(faults["seed"], 9);
    let cleared = admin.delete(format!("{base}/__faults")).send().await.unwrap();
    assert_eq!(cleared.status(), 200);
    assert_eq!(fake.gateway.faults().snapshot().fail_5xx, None);
    fake.stop().await;
}
