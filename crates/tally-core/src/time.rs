//! Time, injected.
//!
//! Core code never reads a wall clock: it asks a [`Clock`], so daily and monthly
//! limit windows, idempotency-key expiry and lock-wait timeouts are all under the
//! control of whoever runs it. Production passes a system clock, tests pass a
//! [`ManualClock`], the simulation passes its simulated clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const MILLIS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// `self + duration`, saturating (durations here are configuration, bounded).
    pub fn plus(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// Days since the epoch, UTC: the daily-limit window.
    pub const fn day(self) -> i64 {
        self.0.div_euclid(MILLIS_PER_DAY)
    }

    /// Months since January 1970, UTC: the monthly-limit window.
    pub const fn month(self) -> i64 {
        let (year, month, _) = civil_from_days(self.day());
        (year - 1970) * 12 + (month - 1)
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// This is Howard Hinnant's well-known `civil_from_days` algorithm.
pub const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The injected source of time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Resolves after `duration` of this clock's time. Used for lock-wait
    /// timeouts: the lock manager gives up when it resolves.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// A clock that moves only when told to. Cloning shares the same time.
///
/// Its `sleep` never resolves (except a zero-length one, which is over at
/// once): a test on a manual clock decides time itself, so a lock wait there
/// ends by a grant, never by a timer the test did not ask for.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now_millis: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock { now_millis: Arc::new(AtomicI64::new(start.0)) }
    }

    pub fn advance(&self, duration: Duration) {
        let millis = i64::try_from(duration.as_millis()).expect("advance by a sane duration");
        self.now_millis.fetch_add(millis, Ordering::SeqCst);
    }

    pub fn set(&self, to: Timestamp) {
        self.now_millis.store(to.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_millis.load(Ordering::SeqCst))
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        // A zero wait is "don't wait": it is over at once, on any clock.
        let zero = duration.is_zero();
        async move {
            if !zero {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_calendar_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2000-02-29 is day 11_016; 2026-11-23 is day 20_780.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    }

    #[test]
    fn windows_roll_at_utc_midnight_and_month_start() {
        let last_ms_of_jan = Timestamp(31 * MILLIS_PER_DAY - 1);
        let first_ms_of_feb = Timestamp(31 * MILLIS_PER_DAY);
        assert_eq!(last_ms_of_jan.month(), 0);
        assert_eq!(first_ms_of_feb.month(), 1);
        assert_eq!(last_ms_of_jan.day() + 1, first_ms_of_feb.day());
        assert_eq!(Timestamp(-1).day(), -1);
    }
}
