//! A clock whose timers are events shuttle schedules, so that a wait with a
//! timeout (the lock manager's, the only one the use cases take) really
//! times out in some schedules and not in others.
//!
//! [`ManualClock`]'s sleeps never end: under it a lock wait ends only by a
//! grant, and the timeout path of every use case goes unexplored. Under
//! [`TimerClock`] the first poll of a sleep spawns a detached shuttle task,
//! the timer: whenever the scheduler runs it, the timer fires — it moves the
//! clock to the sleep's deadline (a wait that timed out took that long) and
//! wakes the sleeper. The scheduler picks that moment among every other
//! step: before the holder releases, during the hand-off, never (the
//! execution ends first), or as the only runnable task when every request
//! is blocked (a holder that never lets go). A sleep dropped before its
//! timer fired (the lock was granted) cancels it: nothing fires, time does
//! not move. A zero-length sleep is over at once, as on every clock.
//!
//! The timer's state sits behind std's mutex, not shuttle's: shuttle runs
//! one task at a time, so it is never contended, and the only scheduling
//! point that matters is when the timer task runs.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tally_core::time::{Clock, ManualClock, Timestamp};

/// A manual clock (tests still `set` and `advance` it, through `Deref`)
/// whose sleeps end when shuttle runs their timer.
#[derive(Clone, Debug)]
pub struct TimerClock {
    time: ManualClock,
}

impl TimerClock {
    pub fn new(start: Timestamp) -> TimerClock {
        TimerClock { time: ManualClock::new(start) }
    }
}

impl Deref for TimerClock {
    type Target = ManualClock;

    fn deref(&self) -> &ManualClock {
        &self.time
    }
}

impl Clock for TimerClock {
    fn now(&self) -> Timestamp {
        self.time.now()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        Sleep {
            clock: self.time.clone(),
            deadline: self.time.now().plus(duration),
            zero: duration.is_zero(),
            timer: None,
        }
    }
}

#[derive(Default)]
struct Timer {
    fired: bool,
    cancelled: bool,
    sleeper: Option<Waker>,
}

struct Sleep {
    clock: ManualClock,
    deadline: Timestamp,
    zero: bool,
    /// Armed on the first poll: a sleep that is never awaited has no timer.
    timer: Option<Arc<Mutex<Timer>>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.zero {
            return Poll::Ready(());
        }
        let (clock, deadline) = (&this.clock, this.deadline);
        let timer = this.timer.get_or_insert_with(|| arm(clock.clone(), deadline));
        let mut timer = timer.lock().expect("timer");
        if timer.fired {
            return Poll::Ready(());
        }
        timer.sleeper = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.lock().expect("timer").cancelled = true;
        }
    }
}

/// Spawns the timer task, detached: the execution does not wait for it.
fn arm(clock: ManualClock, deadline: Timestamp) -> Arc<Mutex<Timer>> {
    let timer = Arc::new(Mutex::new(Timer::default()));
    let firing = timer.clone();
    drop(shuttle::future::spawn(async move {
        let sleeper = {
            let mut timer = firing.lock().expect("timer");
            if timer.cancelled {
                return;
            }
            timer.fired = true;
            // Time never goes back: another timer may have moved it further.
            if clock.now() < deadline {
                clock.set(deadline);
            }
            timer.sleeper.take()
        };
        if let Some(sleeper) = sleeper {
            sleeper.wake();
        }
    }));
    timer
}

/// How often each of a scenario's branches happened over all its
/// schedules: a scenario whose timer never fired (or always did) would
/// prove nothing about one of them, so the test asserts every branch was
/// reached.
pub struct Branches<const N: usize> {
    names: [&'static str; N],
    seen: [AtomicUsize; N],
}

impl<const N: usize> Branches<N> {
    pub const fn new(names: [&'static str; N]) -> Branches<N> {
        Branches { names, seen: [const { AtomicUsize::new(0) }; N] }
    }

    /// Records one schedule that took branch `index` (of `names`).
    pub fn saw(&self, index: usize) {
        self.seen[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Prints the counts and fails unless every branch was reached.
    pub fn assert_all(&self, test: &str) {
        let seen: Vec<usize> = self.seen.iter().map(|n| n.load(Ordering::Relaxed)).collect();
        let counts: Vec<String> = self.names.iter().zip(&seen).map(|(name, n)| format!("{name}: {n}")).collect();
        println!("shuttle {test}: schedules by branch: {}", counts.join(", "));
        assert!(seen.iter().all(|&n| n > 0), "{test}: a branch was never reached: {counts:?}");
    }
}
