//! Rate limits per API key (SPEC.md: 429 `rate_limited` with `Retry-After`).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::helpers::{Call, Options, TestApp};

fn limited(per_second: u32) -> Options {
    let mut options = Options::default();
    options.http.rate_limit = NonZeroU32::new(per_second);
    options
}

#[tokio::test]
async fn a_key_past_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
    let app = TestApp::spawn_with(limited(20));
    let [busy, quiet] = app.create_users(["busy", "quiet"]).await;
    let started = Instant::now();
    let (mut served, mut refused) = (0u64, 0u64);
    for _ in 0..200 {
        let response = app.call(Call::get("/v1/wallet").bearer(&busy.key)).await;
        if response.status == 429 {
            response.assert_problem(429, "rate_limited");
            let wait: u64 = response.header("retry-after").expect("Retry-After on a 429").parse().unwrap();
            assert!((1..=2).contains(&wait), "a 20/s bucket refills a token well within 2 s: {wait}");
            refused += 1;
        } else {
            response.assert_status(200);
            served += 1;
        }
    }
    // The burst, plus what refilled while the loop ran (20 a second).
    let refilled = u64::try_from(started.elapsed().as_millis().div_ceil(50)).unwrap();
    assert!(served >= 20 && served <= 20 + refilled, "served {served} in {:?}", started.elapsed());
    assert_eq!(served + refused, 200);
    assert!(refused > 0, "200 quick reads are past a 20/s limit");
    // Another key has its own bucket.
    app.call(Call::get("/v1/wallet").bearer(&quiet.key)).await.assert_status(200);
}

#[tokio::test]
async fn a_rate_limited_request_is_not_stored_under_its_idempotency_key() {
    let app = TestApp::spawn_with(limited(1));
    let user = app.create_user("u").await;
    app.top_up(&user, "first", 100).await.assert_status(201);
    let refused = app.top_up(&user, "second", 50).await;
    refused.assert_problem(429, "rate_limited");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    // The same key runs now: the 429 was not its answer.
    let ran = app.top_up(&user, "second", 50).await;
    ran.assert_status(201);
    assert_eq!(ran.header("idempotent-replayed"), None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.balance(&user).await, 150);
}
