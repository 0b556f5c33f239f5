//! The simulated clock every server, lock manager and gateway reads.
//!
//! `now()` is the run's start (the simulation's epoch, or a moment just
//! before a UTC midnight or month end on seeds that pay across one) plus
//! turmoil's elapsed time (set by the driver before every step) plus a shared
//! *offset* that the clock-advance fault moves forward, so idempotency leases
//! and keys can expire in the middle of a flow while no simulated time passes
//! on the network. A server's clock may also *lag* the database's by a fixed
//! skew (the clock-skew fault): instances never agree on the time exactly,
//! and a request stamped by a lagging instance can reach a wallet after one
//! stamped later by another (issue 10, hole 6). `sleep` is the host
//! runtime's tokio sleep, which turmoil drives in simulated time. Nothing
//! here reads a wall clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tally_core::time::{Clock, Timestamp};

/// 2026-11-23T00:00:00Z: every run starts here or, on boundary seeds, a
/// few days later (see `plan::Calendar`).
pub const EPOCH: Timestamp = Timestamp(1_795_392_000_000);

#[derive(Debug)]
struct State {
    start_ms: i64,
    elapsed_ms: AtomicI64,
    offset_ms: AtomicI64,
}

/// Cloning shares the same time (and the same lag).
#[derive(Clone, Debug)]
pub struct SimClock {
    state: Arc<State>,
    /// How far this reader's clock runs behind the shared one.
    behind_ms: i64,
    /// How much slower it runs (parts per million of elapsed time).
    slow_ppm: i64,
}

impl Default for SimClock {
    fn default() -> SimClock {
        SimClock::new()
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).expect("simulated durations fit in i64 milliseconds")
}

impl SimClock {
    /// A clock that starts at [`EPOCH`].
    pub fn new() -> SimClock {
        SimClock::starting_at(EPOCH)
    }

    /// A clock whose run begins at `start`.
    pub fn starting_at(start: Timestamp) -> SimClock {
        let state = State { start_ms: start.0, elapsed_ms: AtomicI64::new(0), offset_ms: AtomicI64::new(0) };
        SimClock { state: Arc::new(state), behind_ms: 0, slow_ppm: 0 }
    }

    /// The same time, read `by` late: a server whose clock is skewed behind
    /// the database's. Only behind, never ahead: a clock ahead would take
    /// over idempotency leases early, which no lease design survives, while
    /// a lagging one only stamps records a little in the past.
    pub fn behind(&self, by: Duration) -> SimClock {
        SimClock { state: Arc::clone(&self.state), behind_ms: millis(by), slow_ppm: self.slow_ppm }
    }

    /// The same clock, drifting: it runs `ppm` parts per million slower
    /// than the shared one, so its lag grows by that much of the elapsed
    /// time (a server without time sync). Slower only, for the reason
    /// [`SimClock::behind`] gives; the oracle's skew bound adds the drift.
    pub fn slow_by(&self, ppm: u32) -> SimClock {
        SimClock { slow_ppm: i64::from(ppm), ..self.clone() }
    }

    /// How far this reader lags the shared clock after `elapsed`: its fixed
    /// lag plus its drift, rounded up to the millisecond.
    pub fn lag_after(&self, elapsed: Duration) -> Duration {
        let drift = (millis(elapsed) * self.slow_ppm + 999_999) / 1_000_000;
        Duration::from_millis(u64::try_from(self.behind_ms + drift).unwrap_or(0))
    }

    /// When the run began.
    pub fn start(&self) -> Timestamp {
        Timestamp(self.state.start_ms)
    }

    /// The driver's step: turmoil's elapsed simulated time.
    pub fn set_elapsed(&self, elapsed: Duration) {
        self.state.elapsed_ms.store(millis(elapsed), Ordering::Relaxed);
    }

    /// Simulated time since the run began, without the offset.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.state.elapsed_ms.load(Ordering::Relaxed)).unwrap_or(0))
    }

    /// The clock-advance fault: every reader's `now()` jumps forward.
    pub fn advance(&self, by: Duration) {
        self.state.offset_ms.fetch_add(millis(by), Ordering::Relaxed);
    }

    pub fn offset(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.state.offset_ms.load(Ordering::Relaxed)).unwrap_or(0))
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let state = &self.state;
        let elapsed = state.elapsed_ms.load(Ordering::Relaxed);
        Timestamp(
            state.start_ms + elapsed + state.offset_ms.load(Ordering::Relaxed)
                - self.behind_ms
                - elapsed * self.slow_ppm / 1_000_000,
        )
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        // A zero wait is "don't wait" (the admission's lock try): over at
        // once, without a trip through the timer.
        let timer = (!duration.is_zero()).then(|| tokio::time::sleep(duration));
        async move {
            if let Some(timer) = timer {
                timer.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lagging_reader_shares_the_time_and_reads_it_late() {
        let clock = SimClock::starting_at(Timestamp(1_000));
        let late = clock.behind(Duration::from_millis(300));
        clock.set_elapsed(Duration::from_millis(50));
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), Timestamp(2_050));
        assert_eq!(late.now(), Timestamp(1_750));
        assert_eq!(late.start(), Timestamp(1_000));
    }

    /// A drifting reader falls behind by its rate of the elapsed time (not
    /// of the clock-advance offset), on top of its fixed lag, and the bound
    /// the oracle uses covers it.
    #[test]
    fn a_slow_reader_drifts_behind_within_its_bound() {
        let clock = SimClock::starting_at(Timestamp(0));
        let slow = clock.behind(Duration::from_millis(100)).slow_by(200);
        clock.set_elapsed(Duration::from_secs(60));
        clock.advance(Duration::from_secs(8));
        assert_eq!(clock.now(), Timestamp(68_000));
        assert_eq!(slow.now(), Timestamp(68_000 - 100 - 12));
        assert_eq!(slow.lag_after(Duration::from_secs(60)), Duration::from_millis(112));
        assert_eq!(slow.lag_after(Duration::from_millis(1)), Duration::from_millis(101));
    }
}
