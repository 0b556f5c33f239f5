//! Exhaustive loom models of the lock table's synchronous grant and hand-off
//! core (the async adapter's cancellation path is modelled too, by polling a
//! future by hand).
//!
//! Every model runs with no preemption bound, whatever `LOOM_MAX_PREEMPTIONS`
//! and friends say, so each passing model is a proof for its harness: for these
//! threads, these keys and these operations, no interleaving breaks the
//! assertions. Each model has at most three threads including the main one,
//! and prints how many executions loom explored.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! tally-lock --release --test loom -- --nocapture --test-threads=1`, or
//! `.ci/loom.sh`, which also checks that the mutants are caught.
#![cfg(loom)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use loom::sync::{Arc, Mutex};
use loom::thread;
use tally_lock::{Config, LockError, LockTable};

/// Stands for "some finite timeout": under loom a timed wait gives up after
/// one unlocked gap, whatever its length (see `LockTable::acquire`).
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(1));

fn new_table() -> LockTable<&'static str> {
    LockTable::new(Config::default())
}

/// Explores every interleaving of `body` and prints how many there were.
fn model(name: &str, body: impl Fn() + Sync + Send + 'static) {
    // A std counter: loom neither sees nor resets it between executions.
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut builder = loom::model::Builder::new();
    // Exhaustive, whatever the environment asks for.
    builder.preemption_bound = None;
    builder.max_permutations = None;
    builder.max_duration = None;
    builder.checkpoint_file = None;
    let start = Instant::now();
    builder.check({
        let executions = executions.clone();
        move || {
            executions.fetch_add(1, SeqCst);
            body();
        }
    });
    println!(
        "loom model {name}: {} iterations (exhaustive) in {:.2} s",
        executions.load(SeqCst),
        start.elapsed().as_secs_f64()
    );
}

/// Outcomes seen across all executions of a model, to assert that the model
/// really reached each branch it claims to cover.
#[derive(Default)]
struct Seen(std::sync::Mutex<std::collections::BTreeSet<&'static str>>);

impl Seen {
    fn note(&self, outcome: &'static str) {
        self.0.lock().unwrap().insert(outcome);
    }

    /// Notes whether an acquisition that may give up was `granted` or
    /// `timed_out`; any other end fails the model.
    fn note_wait(&self, result: Result<(), LockError>, granted: &'static str, timed_out: &'static str) {
        match result {
            Ok(()) => self.note(granted),
            Err(LockError::Timeout) => self.note(timed_out),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    fn assert_exactly(&self, expected: &[&'static str]) {
        let seen: Vec<_> = self.0.lock().unwrap().iter().copied().collect();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(seen, expected, "outcomes reached across all executions");
    }
}

/// [`model`], noting outcomes in a [`Seen`]: across all executions, exactly
/// the `expected` ones must be reached.
fn model_reaching(name: &str, expected: &[&'static str], body: impl Fn(&Seen) + Sync + Send + 'static) {
    let seen = std::sync::Arc::new(Seen::default());
    model(name, {
        let seen = seen.clone();
        move || body(&seen)
    });
    seen.assert_exactly(expected);
}

/// Runs `take` on a new thread with its own handle on `table`.
fn spawn_with<T: Send + 'static>(
    table: &LockTable<&'static str>,
    take: impl FnOnce(LockTable<&'static str>) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let table = table.clone();
    thread::spawn(move || take(table))
}

/// A thread that waits for "k" as long as it takes, then releases it.
fn spawn_patient(table: &LockTable<&'static str>) -> thread::JoinHandle<Result<(), LockError>> {
    spawn_with(table, |table| table.acquire(["k"], None).map(drop))
}

/// The race the give-up models share: with "k" held, `rival` and then a
/// patient waiter start on threads of their own, and "k" is released at every
/// point relative to them. Whatever the rival does, the patient waiter is
/// served and the table ends idle. Returns what the rival returned.
fn race_a_release<T: Send + 'static>(rival: impl FnOnce(LockTable<&'static str>) -> T + Send + 'static) -> T {
    let table = new_table();
    let holder = table.acquire(["k"], None).unwrap();
    let rival = spawn_with(&table, rival);
    let patient = spawn_patient(&table);
    drop(holder);
    let rival = rival.join().unwrap();
    patient.join().unwrap().unwrap();
    assert!(table.is_idle());
    rival
}

/// Polls `future` once, with a waker that does nothing.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// A waker that records that it was called.
struct Flag(Arc<AtomicBool>);

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, SeqCst);
    }
}

/// A future that counts how often it was polled: more than once means it was
/// pending and someone woke it.
struct Polls<F> {
    inner: F,
    count: usize,
}

impl<F: Future + Unpin> Future for Polls<F> {
    type Output = (F::Output, usize);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.count += 1;
        let count = self.count;
        Pin::new(&mut self.inner).poll(cx).map(|output| (output, count))
    }
}

/// Waits for "k" on an async executor whose parking loom models (so a wait
/// that is never woken is a deadlock), then releases it. Returns the grant's
/// token and how many polls it took.
fn block_on_async_take(table: &LockTable<&'static str>) -> (u64, usize) {
    let acquire = Box::pin(table.acquire_async(["k"], std::future::pending()));
    let (guard, polls) = loom::future::block_on(Polls { inner: acquire, count: 0 });
    let guard = guard.unwrap();
    (guard.fence(&"k").unwrap(), polls)
}

/// Takes `keys` and checks, with an atomic "inside" count, that nobody else
/// holds any of them meanwhile.
fn take_exclusively(table: &LockTable<&'static str>, keys: &[&'static str], inside: &AtomicUsize) {
    let guard = table.acquire(keys.iter().copied(), None).unwrap();
    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
    assert_eq!(inside.fetch_sub(1, SeqCst), 1, "two holders at once");
    drop(guard);
}

#[test]
fn mutual_exclusion() {
    model("mutual_exclusion", || {
        let table = new_table();
        let inside = Arc::new(AtomicUsize::new(0));
        let spawn = || {
            let (table, inside) = (table.clone(), inside.clone());
            thread::spawn(move || take_exclusively(&table, &["k"], &inside))
        };
        let (first, second) = (spawn(), spawn());
        take_exclusively(&table, &["k"], &inside);
        first.join().unwrap();
        second.join().unwrap();
        assert!(table.is_idle());
    });
}

#[test]
fn fifo_grant_order() {
    model("fifo_grant_order", || {
        let table = new_table();
        let order = Arc::new(Mutex::new(Vec::new()));
        let holder = table.acquire(["k"], None).unwrap();
        let spawn = |name: &'static str| {
            let (table, order) = (table.clone(), order.clone());
            thread::spawn(move || {
                let _guard = table.acquire(["k"], None).unwrap();
                order.lock().unwrap().push(name);
            })
        };
        // Force the arrival order: "second" starts only once "first" queued.
        let first = spawn("first");
        while table.waiters(&"k") < 1 {
            thread::yield_now();
        }
        let second = spawn("second");
        while table.waiters(&"k") < 2 {
            thread::yield_now();
        }
        drop(holder);
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"], "FIFO violated");
        assert!(table.is_idle());
    });
}

#[test]
fn no_lost_wakeup_on_release() {
    model("no_lost_wakeup_on_release", || {
        let table = new_table();
        let holder = table.acquire(["k"], None).unwrap();
        let (first, second) = (spawn_patient(&table), spawn_patient(&table));
        // Released at every possible point relative to the waiters queueing;
        // the second grant is a hand-off from one waiter to the other.
        drop(holder);
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        assert!(table.is_idle());
    });
}

#[test]
fn timeout_racing_release_loses_no_grant() {
    let outcomes = ["impatient granted", "impatient timed out"];
    model_reaching("timeout_racing_release_loses_no_grant", &outcomes, move |seen| {
        // Whatever the impatient waiter does, the patient one is served.
        let impatient = race_a_release(|table| table.acquire(["k"], TIMEOUT).map(drop));
        seen.note_wait(impatient, outcomes[0], outcomes[1]);
    });
}

#[test]
fn dropped_async_wait_racing_release_loses_no_grant() {
    let outcomes =
        ["granted at its first poll", "withdrawn before any grant", "handed the key while queued, passed it on"];
    model_reaching("dropped_async_wait_racing_release_loses_no_grant", &outcomes, move |seen| {
        let woken = Arc::new(AtomicBool::new(false));
        let waker = Waker::from(std::sync::Arc::new(Flag(woken.clone())));
        let queued = race_a_release(move |table| {
            let mut future = pin!(table.acquire_async(["k"], std::future::pending()));
            // Polled once, then dropped: if it queued, the drop withdraws
            // it, passing on a grant that arrived meanwhile.
            match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(guard) => {
                    drop(guard.unwrap());
                    false
                }
                Poll::Pending => true,
            }
        });
        // Only a hand-off wakes a queued wait, and every waker call is over
        // once `race_a_release` has joined the releaser's work: a set flag
        // says the key reached this wait, which was then dropped with it —
        // the path the model exists for.
        match (queued, woken.load(SeqCst)) {
            (false, _) => seen.note(outcomes[0]),
            (true, false) => seen.note(outcomes[1]),
            (true, true) => seen.note(outcomes[2]),
        }
    });
}

#[test]
fn async_give_up_racing_release_loses_no_grant() {
    let outcomes = ["quitter granted", "quitter gave up"];
    model_reaching("async_give_up_racing_release_loses_no_grant", &outcomes, move |seen| {
        let quitter = race_a_release(|table| {
            // The give-up signal is already due: the wait queues (if the key
            // is busy) and withdraws within the same poll.
            match poll_once(pin!(table.acquire_async(["k"], std::future::ready(())))) {
                Poll::Ready(result) => result.map(drop),
                Poll::Pending => panic!("a due give-up signal ends the wait"),
            }
        });
        seen.note_wait(quitter, outcomes[0], outcomes[1]);
    });
}

#[test]
fn fences_strictly_increase() {
    model("fences_strictly_increase", || {
        let table = new_table();
        // The latest fence seen by a holder. Holders are mutually exclusive,
        // so the swaps happen in grant order.
        let last = Arc::new(AtomicU64::new(0));
        let take = {
            let (table, last) = (table.clone(), last.clone());
            move || {
                let guard = table.acquire(["k"], None).unwrap();
                let fence = guard.fence(&"k").unwrap();
                let previous = last.swap(fence, SeqCst);
                assert!(previous < fence, "fence {fence} granted after {previous}");
            }
        };
        let first = thread::spawn(take.clone());
        let second = thread::spawn(take.clone());
        take();
        first.join().unwrap();
        second.join().unwrap();
        assert!(table.is_idle());
        // A grant after the key went idle still gets a larger token, and the
        // table reports the holder's token.
        let guard = table.acquire(["k"], None).unwrap();
        let fence = guard.fence(&"k").unwrap();
        assert!(fence > last.load(SeqCst));
        assert_eq!(table.holder_fence(&"k"), Some(fence));
        // Exactly four grants were issued, so the tokens are 1 to 4.
        assert_eq!(fence, 4);
    });
}

#[test]
fn opposite_order_takers_never_deadlock() {
    model("opposite_order_takers_never_deadlock", || {
        let table = new_table();
        let inside = Arc::new(AtomicUsize::new(0));
        let spawn = |keys: [&'static str; 2]| {
            let (table, inside) = (table.clone(), inside.clone());
            thread::spawn(move || take_exclusively(&table, &keys, &inside))
        };
        let (forward, backward) = (spawn(["a", "b"]), spawn(["b", "a"]));
        forward.join().unwrap();
        backward.join().unwrap();
        assert!(table.is_idle());
    });
}

#[test]
fn timeout_while_holding_a_prefix_releases_it() {
    let outcomes = ["granted", "timed out"];
    model_reaching("timeout_while_holding_a_prefix_releases_it", &outcomes, move |seen| {
        let table = new_table();
        // Two nested acquisitions, "b" then "a": against the global order on
        // purpose, to build a cycle that only the other side's timeout can
        // break.
        let nested = spawn_with(&table, |table| {
            let b = table.acquire(["b"], None).unwrap();
            let a = table.acquire(["a"], None).unwrap();
            drop((a, b));
        });
        // Takes "a", may then wait for "b" and time out: it must release "a"
        // on the way out, or `nested` waits forever (loom: deadlock).
        let result = table.acquire(["a", "b"], TIMEOUT).map(drop);
        nested.join().unwrap();
        seen.note_wait(result, outcomes[0], outcomes[1]);
        assert!(table.is_idle());
    });
}

#[test]
fn async_waiter_is_woken_by_the_hand_off() {
    let outcomes = ["granted at its first poll", "woken by the hand-off"];
    model_reaching("async_waiter_is_woken_by_the_hand_off", &outcomes, move |seen| {
        let table = new_table();
        let holder = table.acquire(["k"], None).unwrap();
        let waiter = spawn_with(&table, |table| block_on_async_take(&table).1);
        // Released at every point relative to the waiter's polls. A hand-off
        // that forgot to wake the task leaves `block_on` parked: a deadlock.
        drop(holder);
        let polls = waiter.join().unwrap();
        seen.note(if polls == 1 { outcomes[0] } else { outcomes[1] });
        assert!(table.is_idle());
    });
}

#[test]
fn three_waiter_hand_off_chain() {
    model("three_waiter_hand_off_chain", || {
        let table = new_table();
        let holder = table.acquire(["k"], None).unwrap();
        let first = holder.fence(&"k").unwrap();
        // Three async waiters on one task, so a chain of hand-offs from one
        // waiter to the next must wake the task each time; the holder lets
        // go at every point relative to them. (One executor thread keeps the
        // exhaustive search small: three threads of waiters do not finish.)
        let chain = spawn_with(&table, |table| {
            let take = || {
                let table = table.clone();
                Box::pin(async move {
                    let guard = table.acquire_async(["k"], std::future::pending()).await.unwrap();
                    guard.fence(&"k").unwrap()
                })
            };
            let mut waiters = [Some(take()), Some(take()), Some(take())];
            let mut granted = Vec::new();
            loom::future::block_on(std::future::poll_fn(|cx| {
                for waiter in &mut waiters {
                    if let Some(future) = waiter
                        && let Poll::Ready(fence) = future.as_mut().poll(cx)
                    {
                        granted.push(fence);
                        *waiter = None;
                    }
                }
                if granted.len() == 3 { Poll::Ready(()) } else { Poll::Pending }
            }));
            granted
        });
        drop(holder);
        let granted = chain.join().unwrap();
        assert!(granted[0] > first, "a waiter's token is not above the holder's");
        assert!(granted.windows(2).all(|pair| pair[0] < pair[1]), "tokens out of grant order: {granted:?}");
        assert!(table.is_idle());
    });
}
