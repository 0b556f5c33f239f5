//! Gateway payments through the API, with the fake gateway's books checked
//! against ours: issue 10's holes 1 (a payment key paying two payments) and
//! 2 (a cancel refused after the card was refunded), reproduced the way an
//! adversarial customer would try them.

use serde_json::json;
use tally_gateway::fake::PaymentStats;
use tally_gateway::protocol::{PaymentBody, STATUS_CANCELED, STATUS_DONE};
use tally_gateway::{ConfirmOutcome, GatewayClient, GatewayConfig};

use crate::helpers::{GATEWAY_SECRET, GatewayApp, Options, TestApp, uuid_like};

/// The fake gateway's one charge under `key`, as its own books say.
#[track_caller]
fn charge(app: &GatewayApp, key: &str) -> PaymentBody {
    app.fake.payment(key).unwrap_or_else(|| panic!("the gateway holds no charge under {key}"))
}

/// How many charges the gateway holds, under any key.
fn charges(app: &GatewayApp) -> usize {
    app.fake.stats().payments.keys().filter(|key| app.fake.payment(key).is_some()).count()
}

fn stats(app: &GatewayApp, key: &str) -> PaymentStats {
    app.fake.payment_stats(key)
}

#[tokio::test]
async fn a_payment_key_pays_one_payment_only() {
    let app = TestApp::spawn_with_gateway(Options::default()).await;
    let [user, other] = app.create_users(["u", "o"]).await;

    // P1 is confirmed with K: the card is charged once, for P1.
    let p1 = app.gateway_payment_of(&user, 1_000).await;
    let done = app.confirm_with_key(&user, &p1, "pk_K", "confirm-p1").await.assert_status(200);
    assert_eq!(done["status"], "done");
    let first = charge(&app, "pk_K");
    assert_eq!((first.order_id.as_str(), first.total_amount, first.status.as_str()), (p1.as_str(), 1_000, STATUS_DONE));

    // P2 (same user, same amount) and another user's P2' with the same K:
    // refused before the gateway is asked anything.
    let p2 = app.gateway_payment_of(&user, 1_000).await;
    let refused = app.confirm_with_key(&user, &p2, "pk_K", "confirm-p2").await;
    let problem = refused.assert_problem(409, "payment_key_in_use");
    let p2_other = app.gateway_payment_of(&other, 1_000).await;
    app.confirm_with_key(&other, &p2_other, "pk_K", "confirm-p2-other").await.assert_problem(409, "payment_key_in_use");
    // P3 for another amount: before the fix this failed P3 and cancelled
    // K at the gateway, refunding P1's charge while P1 stayed done.
    let p3 = app.gateway_payment_of(&user, 1_001).await;
    app.confirm_with_key(&user, &p3, "pk_K", "confirm-p3").await.assert_problem(409, "payment_key_in_use");

    // A stored refusal: the same key replays it byte for byte.
    let replayed = app.confirm_with_key(&user, &p2, "pk_K", "confirm-p2").await;
    replayed.assert_replay_of(&refused);
    assert_eq!(
        problem["detail"],
        "this payment key was already used for another payment; a payment key pays one payment only"
    );

    // Our books: P1 done, the others still waiting and payable.
    assert_eq!(app.payment(&user, &p1).await["status"], "done");
    assert_eq!(app.payment(&user, &p2).await["status"], "wait");
    assert_eq!(app.payment(&other, &p2_other).await["status"], "wait");
    assert_eq!(app.payment(&user, &p3).await["status"], "wait");
    // The gateway's books: exactly one charge, P1's, never cancelled, and
    // it was asked to confirm K once.
    assert_eq!(charges(&app), 1);
    assert_eq!(charge(&app, "pk_K"), first);
    let k = stats(&app, "pk_K");
    assert_eq!((k.confirm_requests, k.confirm_effects, k.cancel_requests), (1, 1, 0));

    // P2 pays with its own key.
    let paid = app.confirm_with_key(&user, &p2, "pk_K2", "confirm-p2-own").await.assert_status(200);
    assert_eq!(paid["status"], "done");
    assert_eq!(charge(&app, "pk_K2").order_id, p2);
    assert_eq!(charges(&app), 2);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_key_charged_for_another_order_is_neither_adopted_nor_refunded() {
    let app = TestApp::spawn_with_gateway(Options::default()).await;
    let user = app.create_user("u").await;
    // Another checkout (another merchant on the same gateway, say) charged
    // K for its own order.
    let elsewhere = GatewayClient::new(GatewayConfig::new(app.gateway_url.clone(), GATEWAY_SECRET)).unwrap();
    let theirs = elsewhere.confirm("pk_theirs", "their-order-7", 1_000, "their-confirm").await;
    assert!(matches!(theirs, ConfirmOutcome::Approved { .. }), "{theirs:?}");

    // Our payment of the same amount, confirmed with that K: the gateway
    // says "already processed", the lookup names their order, so the
    // charge is not ours: the payment fails and nothing is cancelled.
    let ours = app.gateway_payment_of(&user, 1_000).await;
    let failed = app.confirm_with_key(&user, &ours, "pk_theirs", "confirm").await.assert_status(200);
    assert_eq!(failed["status"], "failed");
    let charged = charge(&app, "pk_theirs");
    assert_eq!((charged.order_id.as_str(), charged.status.as_str()), ("their-order-7", STATUS_DONE));
    let k = stats(&app, "pk_theirs");
    assert_eq!((k.confirm_requests, k.confirm_effects, k.cancel_requests), (2, 1, 0));
    assert_eq!(app.balance(&user).await, 0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_cancel_that_cannot_reverse_the_payback_is_refused_before_the_refund() {
    let app = TestApp::spawn_with_gateway(Options::default()).await;
    // The merchant pays back 50 % on this product.
    let product = app.create_product_with(json!({"name": "p", "price": 1_000, "stock": 3, "payback_bps": 5_000})).await;
    let user = app.funded_user("u", 100).await;

    // Pay 1000 through the gateway: 500 comes back to the wallet.
    let order = app.order_of(&user, &product, 1).await;
    let created = app.create_payment(&user, "pay", json!({"order_id": order, "method": "gateway"})).await;
    let payment = created.assert_status(201);
    assert_eq!((payment["amount"].as_i64(), payment["payback_amount"].as_i64()), (Some(1_000), Some(500)));
    let id = payment["id"].as_str().unwrap().to_owned();
    app.confirm_with_key(&user, &id, "pk_card", "confirm").await.assert_status(200);
    assert_eq!(app.balance(&user).await, 600);

    // Spend all of it, payback included.
    app.done_payment_of(&user, 600).await;
    assert_eq!(app.balance(&user).await, 0);

    // Cancelling would have to take the 500 back: refused, and the gateway
    // was never asked to refund (before the fix the card was refunded and
    // the payment stuck in `cancelling`).
    let refused = app.cancel(&user, &id, "cancel-1").await;
    refused.assert_problem(409, "insufficient_balance");
    app.cancel_order(&user, &order, "cancel-order-1").await.assert_problem(409, "insufficient_balance");
    assert_eq!(stats(&app, "pk_card").cancel_requests, 0);
    assert_eq!(charge(&app, "pk_card").status, STATUS_DONE);
    assert_eq!(app.payment(&user, &id).await["status"], "done");
    assert_eq!(app.get_order(&user, &order).await.assert_status(200)["status"], "paid");
    assert_eq!(app.stock(&product).await, 2);
    let replayed = app.cancel(&user, &id, "cancel-1").await;
    assert_eq!((replayed.status, &replayed.body), (refused.status, &refused.body));
    assert_eq!(stats(&app, "pk_card").cancel_requests, 0);

    // With the payback back in the wallet, the cancel goes through: the
    // card is refunded once, the payback reversed, the order given back.
    app.top_up(&user, "refill", 500).await.assert_status(201);
    let cancelled = app.cancel(&user, &id, "cancel-2").await.assert_status(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(app.balance(&user).await, 0);
    let card = stats(&app, "pk_card");
    assert_eq!((card.confirm_effects, card.cancel_requests, card.cancel_effects), (1, 1, 1));
    assert_eq!(charge(&app, "pk_card").status, STATUS_CANCELED);
    assert_eq!(app.get_order(&user, &order).await.assert_status(200)["status"], "cancelled");
    assert_eq!(app.stock(&product).await, 3);
    let ledger = app.ledger(&user, "?limit=100").await.assert_status(200);
    let kinds: Vec<(&str, i64)> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["amount"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("top_up", 100), ("payback", 500), ("payment", -600), ("top_up", 500), ("payback_reversal", -500)],
        "the card's charge and refund are the gateway's, not the wallet's"
    );
    // A second cancel is a state refusal, not a second refund.
    app.cancel(&user, &id, &format!("cancel-{}", uuid_like())).await.assert_problem(409, "invalid_state");
    assert_eq!(stats(&app, "pk_card").cancel_requests, 1);
    app.assert_invariants().await;
}

/// A payment key that no gateway hands out (empty, or longer than 200
/// characters) is malformed input: 400, before the payment is looked at,
/// and nothing is sent to the gateway or claimed. 200 characters of any
/// script are a key.
#[tokio::test]
async fn a_payment_key_out_of_shape_is_malformed() {
    let app = TestApp::spawn_with_gateway(Options::default()).await;
    let [user] = app.create_users(["u"]).await;
    let payment = app.gateway_payment_of(&user, 1_000).await;
    let too_long = "k".repeat(201);
    for (i, key) in ["", too_long.as_str()].into_iter().enumerate() {
        let reply = app.confirm_with_key(&user, &payment, key, &format!("bad-{i}")).await;
        reply.assert_problem(400, "malformed_request");
    }
    assert_eq!(charges(&app), 0, "nothing reached the gateway");
    let longest = "키".repeat(200);
    let done = app.confirm_with_key(&user, &payment, &longest, "confirm").await.assert_status(200);
    assert_eq!(done["status"], "done");
    assert_eq!(charge(&app, &longest).total_amount, 1_000);
}
