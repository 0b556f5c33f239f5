//! The client against the fake gateway's injected faults: each failure the
//! confirm flow must survive, with what the client reports and what the
//! gateway actually did.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{SECRET, lookup_until_found, start, start_generic, wait_for_listener};
use tally_gateway::fake::{Endpoint, ErrorFault, FakeGateway, FaultPlan, FaultRule, LatencyFault, Trigger};
use tally_gateway::{ConfirmOutcome, GatewayClient, LookupOutcome};

fn is_unknown(outcome: &ConfirmOutcome) -> bool {
    matches!(outcome, ConfirmOutcome::Unknown { .. })
}

fn reason(outcome: &ConfirmOutcome) -> &str {
    match outcome {
        ConfirmOutcome::Unknown { reason } => reason,
        other => panic!("expected Unknown, got {other:?}"),
    }
}

/// The client gives up while the gateway is still working; the charge lands
/// afterwards. A lookup right after the timeout cannot see it yet (so
/// "not found" is not final while a confirm may be in flight); a later one does.
#[tokio::test]
async fn latency_past_the_client_timeout_is_unknown_and_the_charge_lands_later() {
    let fake = start(FakeGateway::new(SECRET)).await;
    fake.gateway.faults().set_latency(Some(LatencyFault::fixed(Duration::from_millis(1_500)).on(&[Endpoint::Confirm])));
    let client = fake.client_with(Duration::from_secs(1), Duration::from_millis(300));

    let started = Instant::now();
    let outcome = client.confirm("pk_slow", "order-slow", 2_000, "k-slow").await;
    assert!(reason(&outcome).contains("timed out"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_millis(1_200), "gave up after {:?}", started.elapsed());

    assert_eq!(client.lookup("pk_slow").await, LookupOutcome::NotFound);
    let later = lookup_until_found(&client, "pk_slow", Duration::from_secs(5)).await;
    assert_eq!(later, LookupOutcome::Done { amount: 2_000, order_id: "order-slow".into(), status: "DONE".into() });
    assert_eq!(fake.confirms("pk_slow"), (1, 1), "requests, effects");
    assert_eq!(fake.gateway.stats().faults.latency, 1);
}

/// The charge is committed, then the connection closes without a byte of
/// reply: the client cannot tell, and the lookup shows it happened.
#[tokio::test]
async fn a_reply_lost_after_commit_is_unknown_and_the_lookup_shows_the_charge() {
    let fake = start(FakeGateway::new(SECRET)).await;
    fake.gateway.faults().set_lose_reply_after_commit(Some(FaultRule::new(Trigger::Next(1))));
    let client = fake.client_with(Duration::from_secs(1), Duration::from_secs(10));

    let started = Instant::now();
    let outcome = client.confirm("pk_lost", "order-lost", 4_000, "k-lost").await;
    // A dropped connection, not a timeout: it comes back at once.
    assert!(is_unknown(&outcome), "{outcome:?}");
    assert!(!reason(&outcome).contains("timed out"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    assert_eq!(
        client.lookup("pk_lost").await,
        LookupOutcome::Done { amount: 4_000, order_id: "order-lost".into(), status: "DONE".into() }
    );
    assert_eq!(fake.gateway.payment_stats("pk_lost").confirm_effects, 1);
    assert_eq!(fake.gateway.stats().faults.lose_reply_after_commit, 1);

    // Re-sending the confirm blind (what Tally must never do) cannot charge
    // twice here, but it would fail a payment that succeeded.
    assert_eq!(client.confirm("pk_lost", "order-lost", 4_000, "k-lost").await, ConfirmOutcome::AlreadyProcessed);
    assert_eq!(fake.confirms("pk_lost"), (2, 1), "requests, effects");
}

#[tokio::test]
async fn a_5xx_before_commit_is_unknown_and_nothing_was_charged() {
    let fake = start(FakeGateway::new(SECRET)).await;
    fake.gateway.faults().set_fail_5xx(Some(ErrorFault::new(Trigger::Next(1))));
    let client = fake.client();

    let outcome = client.confirm("pk_503", "order-503", 3_000, "k-503").await;
    assert!(reason(&outcome).contains("503"), "{outcome:?}");
    assert_eq!(client.lookup("pk_503").await, LookupOutcome::NotFound);
    assert_eq!(fake.gateway.payment_stats("pk_503").confirm_effects, 0);

    // Once the lookup has shown nothing happened, a confirm under the same
    // idempotency key goes through.
    assert!(matches!(client.confirm("pk_503", "order-503", 3_000, "k-503").await, ConfirmOutcome::Approved { .. }));
}

#[tokio::test]
async fn a_5xx_after_commit_is_unknown_and_the_lookup_shows_the_charge() {
    let fake = start(FakeGateway::new(SECRET)).await;
    fake.gateway.faults().set_fail_5xx_after_commit(Some(ErrorFault::new(Trigger::Always)));
    let client = fake.client();

    let outcome = client.confirm("pk_500", "order-500", 6_000, "k-500").await;
    assert!(reason(&outcome).contains("500"), "{outcome:?}");
    assert_eq!(
        client.lookup("pk_500").await,
        LookupOutcome::Done { amount: 6_000, order_id: "order-500".into(), status: "DONE".into() }
    );
    assert_eq!(fake.gateway.payment_stats("pk_500").confirm_effects, 1);
    // After-commit faults only fire on requests that took effect.
    assert_eq!(client.confirm("pk_500", "order-500", 6_000, "k-500").await, ConfirmOutcome::AlreadyProcessed);
    assert_eq!(fake.gateway.stats().faults.fail_5xx_after_commit, 1);
}

/// The listener is closed: connecting fails at once, the request is never
/// sent. Resuming binds the same port again.
#[tokio::test]
async fn refused_connections_are_unknown_quickly_and_resume() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = fake.client_with(Duration::from_millis(300), Duration::from_secs(10));
    fake.gateway.faults().refuse_connections(None);
    wait_for_listener(fake.addr, false).await;

    let started = Instant::now();
    let outcome = client.confirm("pk_refused", "order-r", 1_000, "k-r").await;
    assert!(reason(&outcome).contains("could not connect"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(fake.gateway.payment_stats("pk_refused").confirm_requests, 0);

    fake.gateway.faults().resume_connections();
    wait_for_listener(fake.addr, true).await;
    assert!(matches!(client.confirm("pk_refused", "order-r", 1_000, "k-r").await, ConfirmOutcome::Approved { .. }));

    // A timed refusal lifts itself.
    fake.gateway.faults().refuse_connections(Some(Duration::from_millis(300)));
    assert!(is_unknown(&client.confirm("pk_refused_2", "order-r2", 1_000, "k-r2").await));
    tokio::time::sleep(Duration::from_millis(400)).await;
    wait_for_listener(fake.addr, true).await;
    assert!(matches!(client.confirm("pk_refused_2", "order-r2", 1_000, "k-r2").await, ConfirmOutcome::Approved { .. }));
    fake.stop().await;
}

/// Served on a generic listener, a refusal accepts and closes at once.
#[tokio::test]
async fn refusal_on_a_generic_listener_closes_each_connection() {
    let fake = start_generic(FakeGateway::new(SECRET)).await;
    let client = fake.client_with(Duration::from_millis(300), Duration::from_secs(10));
    fake.gateway.faults().refuse_connections(None);
    assert!(is_unknown(&client.confirm("pk_g", "order-g", 1_000, "k-g").await));
    assert!(fake.gateway.stats().faults.refused_connections >= 1);
    assert_eq!(fake.gateway.payment_stats("pk_g").confirm_requests, 0);
    fake.gateway.faults().resume_connections();
    assert!(matches!(client.confirm("pk_g", "order-g", 1_000, "k-g").await, ConfirmOutcome::Approved { .. }));
    fake.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_is_unknown_and_nothing_arrived() {
    let fake = start(FakeGateway::new(SECRET)).await;
    fake.gateway.faults().set_drop_connections(Some(Trigger::Next(1)));
    let client = fake.client();
    assert!(is_unknown(&client.confirm("pk_drop", "order-d", 1_000, "k-d").await));
    assert_eq!(fake.gateway.payment_stats("pk_drop").confirm_requests, 0);
    assert_eq!(client.lookup("pk_drop").await, LookupOutcome::NotFound);
    assert!(matches!(client.confirm("pk_drop", "order-d", 1_000, "k-d").await, ConfirmOutcome::Approved { .. }));
    assert_eq!(fake.gateway.stats().faults.dropped_connections, 1);
}

/// A gateway that never completes the TCP handshake (its accept queue is
/// full, so the kernel drops our SYN): the connect timeout, not the request
/// timeout, bounds the wait.
#[tokio::test]
async fn an_unreachable_gateway_is_unknown_after_the_connect_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    // Fill the accept queue, never accepting.
    let mut held = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            _ => break,
        }
    }
    let client = common::client(&format!("http://{addr}"), SECRET, Duration::from_millis(300), Duration::from_secs(20));
    let started = Instant::now();
    let outcome = client.confirm("pk_void", "order-v", 1_000, "k-v").await;
    let why = reason(&outcome);
    assert!(why.contains("could not connect") && why.contains("timed out"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    drop(listener);
}

/// Run 24 confirms against a fake whose `fail_5xx` fires with probability
/// one half, and report which ones failed.
async fn failure_pattern(fake: &common::Running, client: &GatewayClient) -> Vec<bool> {
    let mut pattern = Vec::new();
    for i in 0..24 {
        let key = format!("pk_p{i}");
        let outcome = client.confirm(&key, &format!("order-{i}"), 100, &format!("k-{i}")).await;
        let failed = is_unknown(&outcome);
        // What the client saw matches what the gateway did.
        let lookup = client.lookup(&key).await;
        assert_eq!(failed, lookup == LookupOutcome::NotFound, "{outcome:?} / {lookup:?}");
        assert_eq!(fake.gateway.payment_stats(&key).confirm_effects, u64::from(!failed));
        pattern.push(failed);
    }
    pattern
}

#[tokio::test]
async fn probability_faults_replay_from_their_seed() {
    let run = |seed: u64| async move {
        let fake = start(FakeGateway::with_options(
            SECRET,
            Arc::new(FaultPlan::new(seed)),
            Arc::new(|| "2024-01-01T00:00:00+09:00".to_owned()),
        ))
        .await;
        fake.gateway.faults().set_fail_5xx(Some(ErrorFault::new(Trigger::Probability(0.5))));
        let client = fake.client();
        let pattern = failure_pattern(&fake, &client).await;
        fake.stop().await;
        pattern
    };
    let first = run(42).await;
    assert!(first.contains(&true) && first.contains(&false), "{first:?}");
    assert_eq!(run(42).await, first);
    assert_ne!(run(43).await, first);

    // The same plan set over HTTP by another process replays the same way.
    let fake = start(FakeGateway::new(SECRET)).await;
    let response = reqwest::Client::new()
        .post(format!("{}/__faults", fake.base_url()))
        .json(&serde_json::json!({"seed": 42, "fail_5xx": {"when": {"probability": 0.5}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let client = fake.client();
    assert_eq!(failure_pattern(&fake, &client).await, first);
}

/// Lookups are only faulted when a rule names them.
#[tokio::test]
async fn lookup_faults_must_be_asked_for() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let client = fake.client();
    assert!(matches!(client.confirm("pk_l", "order-l", 100, "k-l").await, ConfirmOutcome::Approved { .. }));
    fake.gateway.faults().set_fail_5xx(Some(ErrorFault::new(Trigger::Always)));
    assert!(matches!(client.lookup("pk_l").await, LookupOutcome::Done { .. }));
    fake.gateway.faults().set_fail_5xx(Some(ErrorFault::new(Trigger::Always).on(&[Endpoint::Lookup]).status(500)));
    assert!(matches!(client.lookup("pk_l").await, LookupOutcome::Unknown { .. }));
}
