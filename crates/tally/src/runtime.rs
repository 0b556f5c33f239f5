//! The production implementations of the core's injected traits.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tally_core::ids::IdGen;
use tally_core::time::{Clock, Timestamp};

/// Wall-clock time; lock-wait timeouts on tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The test-only clock skew (`tally serve --test-clock-offset-ms`, which is
/// refused without `TALLY_ALLOW_TEST_HOOKS=1`): added to every reading of
/// [`SystemClock`] in this process. A process-wide value rather than a field
/// so that production code keeps one zero-sized clock type; it is set at
/// most once, before the service starts, and is zero in production.
static TEST_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Skews this process's [`SystemClock`] by `offset_ms` (negative: behind).
/// Only `tally serve`'s test hook calls it, after checking it is allowed.
pub fn set_test_clock_offset(offset_ms: i64) {
    TEST_OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
        let millis =
            i64::try_from(since_epoch.as_millis()).expect("milliseconds fit in i64 until the year 292 million");
        Timestamp(millis.saturating_add(TEST_OFFSET_MS.load(Ordering::Relaxed)))
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// Random, time-ordered UUIDs (v7): unique across instances sharing a
/// database, and they keep the primary-key indexes append-mostly.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidIds;

impl IdGen for UuidIds {
    fn next_id(&self) -> u128 {
        uuid::Uuid::now_v7().as_u128()
    }
}
