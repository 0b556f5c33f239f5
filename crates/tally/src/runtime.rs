//! The production implementations of the core's injected traits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tally_core::ids::IdGen;
use tally_core::time::{Clock, Timestamp};

/// Wall-clock time; lock-wait timeouts on tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
        Timestamp(i64::try_from(since_epoch.as_millis()).expect("milliseconds fit in i64 until the year 292 million"))
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
