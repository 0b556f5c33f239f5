//! The simulated clock every server, lock manager and gateway reads.
//!
//! `now()` is the simulation's epoch plus turmoil's elapsed time (set by the
//! driver before every step) plus a shared *offset* that the clock-advance
//! fault moves forward, so idempotency leases and keys can expire in the
//! middle of a flow while no simulated time passes on the network. `sleep`
//! is the host runtime's tokio sleep, which turmoil drives in simulated
//! time. Nothing here reads a wall clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tally_core::time::{Clock, Timestamp};

/// 2026-11-23T00:00:00Z: every run starts here.
pub const EPOCH: Timestamp = Timestamp(1_795_392_000_000);

#[derive(Debug)]
struct State {
    elapsed_ms: AtomicI64,
    offset_ms: AtomicI64,
}

/// Cloning shares the same time.
#[derive(Clone, Debug)]
pub struct SimClock {
    state: Arc<State>,
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
    pub fn new() -> SimClock {
        SimClock { state: Arc::new(State { elapsed_ms: AtomicI64::new(0), offset_ms: AtomicI64::new(0) }) }
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
        Timestamp(EPOCH.0 + state.elapsed_ms.load(Ordering::Relaxed) + state.offset_ms.load(Ordering::Relaxed))
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
