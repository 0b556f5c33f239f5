//! Unit tests of the oracle's checks, on hand-written histories and stores.

use super::*;

fn reply(key: &str, status: u16, body: &str) -> Exchange {
    Exchange {
        client: 0,
        user: UserId(1),
        op: 0,
        kind: "top-up",
        path: "/v1/wallet/top-ups".into(),
        body: None,
        queue_token: None,
        key: Some(key.to_owned()),
        host: "tally-1".into(),
        attempt: 1,
        duplicate: false,
        sent_at: Timestamp(0),
        ended_at: Timestamp(0),
        answer: Answer::Reply { status, body: body.as_bytes().to_vec(), replayed: false },
    }
}

fn evidence<'a>(
    snapshot: &'a Snapshot,
    exchanges: &'a [Exchange],
    gateway: &'a FakeGateway,
    catalogue: &'a Catalogue,
    now: Timestamp,
) -> Evidence<'a> {
    static NONE: BTreeMap<String, u64> = BTreeMap::new();
    Evidence {
        snapshot,
        exchanges,
        gateway,
        catalogue,
        now,
        confirms_by_order: &NONE,
        confirms_by_key: &NONE,
        foreign_confirms: &NONE,
        skew_max_ms: 0,
    }
}

fn judge_history(exchanges: &[Exchange]) -> Vec<Violation> {
    let snapshot = Snapshot::default();
    let gateway = FakeGateway::new("sk");
    let catalogue = Catalogue::default();
    judge(&evidence(&snapshot, exchanges, &gateway, &catalogue, Timestamp(0)))
}

#[test]
fn answers_for_one_key_must_agree_except_transient_ones() {
    let in_use = r#"{"code":"idempotency_key_in_use"}"#;
    let fine = [
        reply("k", 409, in_use),
        reply("k", 503, r#"{"code":"unavailable"}"#),
        reply("k", 409, r#"{"code":"insufficient_balance"}"#),
        reply("k", 409, r#"{"code":"insufficient_balance"}"#),
        reply("other", 422, r#"{"code":"invalid_amount"}"#),
    ];
    assert_eq!(judge_history(&fine), Vec::new());
    let mut broken = fine.to_vec();
    broken.push(reply("k", 409, r#"{"code":"invalid_state"}"#));
    let found = judge_history(&broken);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].invariant.as_str(), found[0].check), (INV_IDEMPOTENCY, "all answers for one key agree"));
}

fn exchange(kind: &'static str, path: String, answer: Answer) -> Exchange {
    Exchange { kind, path, key: None, answer, ..reply("k", 200, "{}") }
}

fn order(id: u128, status: OrderStatus, seat: u128) -> Order {
    let price = tally_core::money::Amount::new(100).expect("a valid amount");
    Order {
        id: OrderId(id),
        user: UserId(1),
        lines: Vec::new(),
        seats: vec![tally_core::order::OrderSeat { seat: SeatId(seat), price }],
        event: None,
        token: None,
        total: price,
        payback: Money::ZERO,
        status,
        payment: None,
        expires_at: Timestamp(1_000),
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        version: 1,
    }
}

/// The history checks only (the core's checker sees these hand-made
/// snapshots as broken in other ways).
fn judge_orders(snapshot: &Snapshot, exchanges: &[Exchange], catalogue: &Catalogue) -> Vec<Violation> {
    let gateway = FakeGateway::new("sk");
    let evidence = evidence(snapshot, exchanges, &gateway, catalogue, Timestamp(500));
    let mut found = Vec::new();
    orders(&evidence, &mut found);
    found
}

#[test]
fn an_order_seen_paid_stays_paid_and_a_seat_is_sold_once() {
    let snapshot = Snapshot {
        orders: vec![
            order(1, OrderStatus::Expired, 9),
            order(2, OrderStatus::Paid, 9),
            order(3, OrderStatus::Cancelled, 8),
        ],
        ..Snapshot::default()
    };
    let seen_paid = |id: u128| {
        let body = format!(r#"{{"id":"{}","status":"paid"}}"#, OrderId(id));
        exchange(
            "read-order",
            format!("/v1/orders/{}", OrderId(id)),
            Answer::Reply { status: 200, body: body.into_bytes(), replayed: false },
        )
    };
    // Order 3's cancel was sent but never answered: it may have taken effect.
    let cancel =
        exchange("cancel-order", format!("/v1/orders/{}/cancel", OrderId(3)), Answer::Failed("timed out".into()));
    let found = judge_orders(&snapshot, &[seen_paid(1), seen_paid(2), seen_paid(3), cancel], &Catalogue::default());
    let checks: Vec<(&str, &str)> = found.iter().map(|v| (v.invariant.as_str(), v.check)).collect();
    assert_eq!(
        checks,
        [
            (INV_ORDERS, "an order acknowledged paid stays paid unless a cancel of it was sent"),
            (INV_SEATS, "a seat is sold at most once (orders acknowledged paid, never cancelled)"),
        ],
        "{found:#?}"
    );
}

#[test]
fn a_restock_takes_effect_once_and_no_unpaid_order_outlives_its_ttl() {
    let product = tally_core::catalog::Product::new(
        tally_core::ids::ProductId(5),
        "p".into(),
        tally_core::money::Amount::new(100).expect("a valid amount"),
        2,
        0,
        Timestamp(0),
    )
    .expect("a valid product");
    let twice = tally_core::catalog::Product { stocked: 4, stock: 4, ..product.clone() };
    let snapshot = Snapshot {
        products: vec![twice],
        orders: vec![order(1, OrderStatus::PendingPayment, 9)],
        ..Snapshot::default()
    };
    let catalogue = Catalogue {
        products: vec![crate::catalogue::CatalogueProduct { id: product.id.to_string(), initial: 2, payback_bps: 0 }],
        ..Catalogue::default()
    };
    let restock = Exchange {
        key: Some("c1-o3".into()),
        ..exchange(
            "restock",
            format!("/v1/products/{}/restock", product.id),
            Answer::Reply { status: 200, body: b"{}".to_vec(), replayed: false },
        )
    };
    let mut evidence_now = judge_orders(&snapshot, &[restock], &catalogue);
    evidence_now.sort_by_key(|v| v.check);
    let checks: Vec<&str> = evidence_now.iter().map(|v| v.check).collect();
    // Order 1 expired at 1000 and is judged at 500: not yet past its TTL.
    assert_eq!(checks, ["each restock takes effect at most once"], "{evidence_now:#?}");
    let late = Snapshot {
        orders: vec![Order { expires_at: Timestamp(400), ..order(1, OrderStatus::PendingPayment, 9) }],
        ..Snapshot::default()
    };
    let found = judge_orders(&late, &[], &Catalogue::default());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].invariant.as_str(), found[0].check),
        (INV_RECOVERED, "no unpaid order is left past its TTL once the sweepers ran")
    );
}

#[test]
fn a_500_is_a_violation() {
    let found = judge_history(&[reply("k", 500, r#"{"code":"internal_error"}"#)]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].invariant, INV_NO_500);
}

fn gateway_payment(id: u128, key: &str, status: PaymentStatus) -> Payment {
    let amount = Amount::new(1_000).expect("a valid amount");
    let attempt = tally_core::payment::GatewayAttempt {
        payment_key: key.to_owned(),
        started_at: Timestamp(0),
        sent_at: Timestamp(0),
        requested_by: None,
        watch_until: None,
    };
    Payment {
        status,
        gateway: Some(attempt),
        ..Payment::new(tally_core::ids::PaymentId(id), UserId(1), amount, None, Method::Gateway, Timestamp(0))
            .expect("a valid payment")
    }
}

fn confirm(payment: u128, key: &str, status: u16, body: &str) -> Exchange {
    Exchange {
        kind: "confirm",
        path: format!("/v1/payments/{}/confirm", tally_core::ids::PaymentId(payment)),
        body: Some(format!(r#"{{"payment_key":"{key}"}}"#).into_bytes()),
        ..reply("k", status, body)
    }
}

#[test]
fn the_request_that_began_a_phase_is_never_refused() {
    let mut payment = gateway_payment(1, "pk-1", PaymentStatus::Done);
    if let Some(attempt) = payment.gateway.as_mut() {
        attempt.requested_by = Some(tally_core::idempotency::IdemKey::new("k").expect("a valid key"));
    }
    let snapshot = Snapshot { payments: vec![payment], ..Snapshot::default() };
    let judge_phase = |exchanges: &[Exchange]| {
        let gateway = FakeGateway::new("sk");
        let catalogue = Catalogue::default();
        let mut found = Vec::new();
        a_phase_is_never_refused_to_its_request(
            &evidence(&snapshot, exchanges, &gateway, &catalogue, Timestamp(0)),
            &mut found,
        );
        found.into_iter().map(|v| v.check).collect::<Vec<_>>()
    };
    let unclear = confirm(1, "pk-1", 503, r#"{"code":"unavailable"}"#);
    let done = confirm(1, "pk-1", 200, r#"{"status":"done"}"#);
    assert!(judge_phase(&[unclear.clone(), done]).is_empty(), "503, then the charge on retry");
    let refused = confirm(1, "pk-1", 409, r#"{"code":"invalid_state"}"#);
    assert_eq!(judge_phase(&[unclear, refused.clone()]), ["the request that began a gateway phase is never refused"]);
    // Another key's refusal is a second confirm's, and fine.
    assert!(judge_phase(&[Exchange { key: Some("other".into()), ..refused }]).is_empty());
}

/// The checks `key_refusals_are_right` fails over `exchanges` against `snapshot`.
fn judge_key_refusals(snapshot: &Snapshot, exchanges: &[Exchange]) -> Vec<&'static str> {
    let gateway = FakeGateway::new("sk");
    let catalogue = Catalogue::default();
    let mut found = Vec::new();
    key_refusals_are_right(&evidence(snapshot, exchanges, &gateway, &catalogue, Timestamp(0)), &mut found);
    found.into_iter().map(|v| v.check).collect()
}

#[test]
fn payment_key_in_use_needs_another_owner_and_a_claimed_key_never_confirms() {
    let snapshot = Snapshot { payments: vec![gateway_payment(1, "pk-1", PaymentStatus::Done)], ..Snapshot::default() };
    let in_use = r#"{"code":"payment_key_in_use"}"#;
    let judge_keys = |exchanges: &[Exchange]| judge_key_refusals(&snapshot, exchanges);
    // Payment 2 reusing payment 1's key: refused, as it must be.
    assert!(judge_keys(&[confirm(2, "pk-1", 409, in_use)]).is_empty());
    // The owner itself refused, or a fresh key refused: wrong.
    assert_eq!(
        judge_keys(&[confirm(1, "pk-1", 409, in_use), confirm(2, "pk-9", 409, in_use)]),
        ["409 payment_key_in_use only for a key another payment claimed"; 2]
    );
    // Payment 2 confirmed with payment 1's key: one charge paying two.
    assert_eq!(
        judge_keys(&[confirm(2, "pk-1", 200, r#"{"status":"failed"}"#)]),
        ["a key another payment claimed is refused"]
    );
}

#[test]
fn a_confirm_is_answered_with_a_charge_only_under_its_own_key() {
    let snapshot = Snapshot { payments: vec![gateway_payment(1, "pk-1", PaymentStatus::Done)], ..Snapshot::default() };
    let judge_keys = |exchanges: &[Exchange]| judge_key_refusals(&snapshot, exchanges);
    let done = r#"{"status":"done"}"#;
    let refused = r#"{"code":"invalid_state"}"#;
    // Two tabs, two keys: the one charged is answered, the other refused.
    assert!(judge_keys(&[confirm(1, "pk-1", 200, done), confirm(1, "pk-1-tab", 409, refused)]).is_empty());
    // The other tab answered with the charge its key did not make.
    assert_eq!(
        judge_keys(&[confirm(1, "pk-1", 200, done), confirm(1, "pk-1-tab", 200, done)]),
        ["a confirm is answered 2xx only for the key its payment is charged under"]
    );
}

#[test]
fn a_payback_is_the_policy_never_the_request() {
    let amount = Amount::new(1_001).expect("a valid amount");
    let payment = |id: u128, payback: i64| {
        Payment::new(
            tally_core::ids::PaymentId(id),
            UserId(1),
            amount,
            Amount::new(payback).ok(),
            Method::Wallet,
            Timestamp(0),
        )
        .expect("a valid payment")
    };
    // 5 % of 1001, rounded down: 50.
    let snapshot = Snapshot { payments: vec![payment(1, 50), payment(2, 100)], ..Snapshot::default() };
    let catalogue = Catalogue { payback_bps: 500, ..Catalogue::default() };
    let gateway = FakeGateway::new("sk");
    let mut found = Vec::new();
    paybacks_follow_the_policy(&evidence(&snapshot, &[], &gateway, &catalogue, Timestamp(0)), &mut found);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].detail.contains("pays back 100 where the policy says 50"), "{found:#?}");
    // A body naming its own payback: 400 is right, 201 is not.
    let named = |status, body: &str| Exchange {
        body: Some(br#"{"amount":1001,"method":"wallet","payback_amount":1001}"#.to_vec()),
        ..reply("k", status, body)
    };
    assert!(judge_history(&[named(400, r#"{"code":"malformed_request"}"#)]).is_empty());
    let found = judge_history(&[named(201, r#"{"id":"x"}"#)]);
    assert!(found.iter().any(|v| v.check == "a request naming its own payback_amount is refused 400"), "{found:#?}");
}

#[test]
fn a_token_is_judged_over_the_run_and_refusals_need_a_full_token() {
    let token = Some(tally_core::ids::TokenId(7));
    let booked = |id: u128, seats: &[u128], status: OrderStatus, created: i64, updated: i64| Order {
        token,
        seats: seats
            .iter()
            .map(|&seat| tally_core::order::OrderSeat {
                seat: SeatId(seat),
                price: Amount::new(100).expect("a valid amount"),
            })
            .collect(),
        created_at: Timestamp(created),
        updated_at: Timestamp(updated),
        ..order(id, status, 0)
    };
    let catalogue = Catalogue { max_seats_per_token: 2, ..Catalogue::default() };
    let gateway = FakeGateway::new("sk");
    let judge_tokens = |orders: Vec<Order>, exchanges: &[Exchange]| {
        let snapshot = Snapshot { orders, ..Snapshot::default() };
        let evidence = evidence(&snapshot, exchanges, &gateway, &catalogue, Timestamp(0));
        let mut found = Vec::new();
        tokens_never_hoard(&evidence, &mut found);
        seat_limit_refusals_are_right(&evidence, &mut found);
        found.into_iter().map(|v| v.check).collect::<Vec<_>>()
    };
    // Two seats, expired at 500; a third booked at 100, while they were held.
    let hoarded = vec![booked(1, &[1, 2], OrderStatus::Expired, 0, 500), booked(2, &[3], OrderStatus::Paid, 100, 100)];
    assert_eq!(judge_tokens(hoarded, &[]), ["a token's live orders never hold more than max_seats_per_token"]);
    // Booked after the first order ended: within the limit.
    let fair = vec![booked(1, &[1, 2], OrderStatus::Expired, 0, 50), booked(2, &[3], OrderStatus::Paid, 100, 100)];
    assert!(judge_tokens(fair.clone(), &[]).is_empty());
    // Refused seat_limit_reached for one seat while the token held one.
    let refused = Exchange {
        kind: "order-seats",
        queue_token: token.map(|t| t.to_string()),
        body: Some(br#"{"seats":["s"]}"#.to_vec()),
        sent_at: Timestamp(200),
        ended_at: Timestamp(210),
        ..reply("k", 409, r#"{"code":"seat_limit_reached"}"#)
    };
    assert_eq!(
        judge_tokens(fair, std::slice::from_ref(&refused)),
        ["409 seat_limit_reached only when the token's live orders hold the limit"]
    );
    let full = vec![booked(1, &[1, 2], OrderStatus::Paid, 0, 0)];
    assert!(judge_tokens(full, &[refused]).is_empty());
}

#[test]
fn queue_activity_overlapping_by_less_than_the_lag_is_not_an_overlap() {
    let token = |id: u128, from: i64, until: i64| tally_core::queue::QueueToken {
        id: tally_core::ids::TokenId(id),
        event: tally_core::ids::EventId(1),
        user: UserId(1),
        seq: u64::try_from(id).expect("small"),
        status: tally_core::queue::TokenStatus::Expired,
        joined_at: Timestamp(0),
        activated_at: Some(Timestamp(from)),
        expires_at: Some(Timestamp(until)),
        used_at: None,
        seats_held: 0,
        version: 1,
    };
    let event = tally_core::catalog::Event {
        id: tally_core::ids::EventId(1),
        name: "e".into(),
        active_limit: 1,
        token_ttl: std::time::Duration::from_secs(1),
        next_seq: 3,
        head_seq: 3,
        active_count: 0,
        max_seats_per_token: 4,
        created_at: Timestamp(0),
        version: 1,
    };
    // What the final judgement and the chaos harness's live-snapshot check
    // both read: `judge_snapshot`.
    let judge_queue = |second_from: i64, skew_max_ms: i64| {
        let snapshot = Snapshot {
            events: vec![event.clone()],
            tokens: vec![token(1, 0, 1_000), token(2, second_from, 2_000)],
            ..Snapshot::default()
        };
        judge_snapshot(&snapshot, skew_max_ms).len()
    };
    // Stamped 200 ms early by a server lagging up to 300 ms: not an overlap.
    assert_eq!(judge_queue(800, 300), 0);
    // 400 ms: more than any lag explains.
    assert_eq!(judge_queue(600, 300), 1);
    // With no lag, 200 ms early is an overlap.
    assert_eq!(judge_queue(800, 0), 1);
}
