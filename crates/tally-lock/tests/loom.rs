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
use std::pin::pin;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use loom::sync::atomic::{AtomicU64, AtomicUsize};
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

    fn assert_exactly(&self, expected: &[&'static str]) {
        let seen: Vec<_> = self.0.lock().unwrap().iter().copied().collect();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(seen, expected, "outcomes reached across all executions");
    }
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
        let spawn = || {
            let table = table.clone();
            thread::spawn(move || table.acquire(["k"], None).map(drop))
        };
        let (first, second) = (spawn(), spawn());
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
    let seen = std::sync::Arc::new(Seen::default());
    model("timeout_racing_release_loses_no_grant", {
        let seen = seen.clone();
        move || {
            let table = new_table();
            let holder = table.acquire(["k"], None).unwrap();
            let impatient = {
                let table = table.clone();
                thread::spawn(move || table.acquire(["k"], TIMEOUT).map(drop))
            };
            let patient = {
                let table = table.clone();
                thread::spawn(move || table.acquire(["k"], None).map(drop))
            };
            drop(holder);
            match impatient.join().unwrap() {
                Ok(()) => seen.note("impatient granted"),
                Err(LockError::Timeout) => seen.note("impatient timed out"),
                Err(other) => panic!("unexpected {other:?}"),
            }
            // Whatever the impatient waiter did, the patient one is served.
            patient.join().unwrap().unwrap();
            assert!(table.is_idle());
        }
    });
    seen.assert_exactly(&["impatient granted", "impatient timed out"]);
}

#[test]
fn dropped_async_wait_racing_release_loses_no_grant() {
    let seen = std::sync::Arc::new(Seen::default());
    model("dropped_async_wait_racing_release_loses_no_grant", {
        let seen = seen.clone();
        move || {
            let table = new_table();
            let holder = table.acquire(["k"], None).unwrap();
            let dropper = {
                let table = table.clone();
                thread::spawn(move || {
                    let mut future = pin!(table.acquire_async(["k"], std::future::pending()));
                    let mut cx = Context::from_waker(Waker::noop());
                    // Polled once, then dropped: if it queued, the drop
                    // withdraws it, passing on a grant that arrived meanwhile.
                    match future.as_mut().poll(&mut cx) {
                        Poll::Ready(guard) => drop(guard.unwrap()),
                        Poll::Pending => {}
                    }
                    table.waiters(&"k") // observed before the drop
                })
            };
            let patient = {
                let table = table.clone();
                thread::spawn(move || table.acquire(["k"], None).map(drop))
            };
            drop(holder);
            let _ = dropper.join().unwrap();
            patient.join().unwrap().unwrap();
            assert!(table.is_idle());
            seen.note("done");
        }
    });
    seen.assert_exactly(&["done"]);
}

#[test]
fn async_give_up_racing_release_loses_no_grant() {
    let seen = std::sync::Arc::new(Seen::default());
    model("async_give_up_racing_release_loses_no_grant", {
        let seen = seen.clone();
        move || {
            let table = new_table();
            let holder = table.acquire(["k"], None).unwrap();
            let quitter = {
                let table = table.clone();
                thread::spawn(move || {
                    // The give-up signal is already due: the wait queues (if
                    // the key is busy) and withdraws within the same poll.
                    let mut future = pin!(table.acquire_async(["k"], std::future::ready(())));
                    let mut cx = Context::from_waker(Waker::noop());
                    match future.as_mut().poll(&mut cx) {
                        Poll::Ready(result) => result.map(drop),
                        Poll::Pending => panic!("a due give-up signal ends the wait"),
                    }
                })
            };
            let patient = {
                let table = table.clone();
                thread::spawn(move || table.acquire(["k"], None).map(drop))
            };
            drop(holder);
            match quitter.join().unwrap() {
                Ok(()) => seen.note("quitter granted"),
                Err(LockError::Timeout) => seen.note("quitter gave up"),
                Err(other) => panic!("unexpected {other:?}"),
            }
            patient.join().unwrap().unwrap();
            assert!(table.is_idle());
        }
    });
    seen.assert_exactly(&["quitter gave up", "quitter granted"]);
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
    let seen = std::sync::Arc::new(Seen::default());
    model("timeout_while_holding_a_prefix_releases_it", {
        let seen = seen.clone();
        move || {
            let table = new_table();
            // Two nested acquisitions, "b" then "a": against the global order
            // on purpose, to build a cycle that only the other side's timeout
            // can break.
            let nested = {
                let table = table.clone();
                thread::spawn(move || {
                    let b = table.acquire(["b"], None).unwrap();
                    let a = table.acquire(["a"], None).unwrap();
                    drop((a, b));
                })
            };
            // Takes "a", may then wait for "b" and time out: it must release
            // "a" on the way out, or `nested` waits forever (loom: deadlock).
            let result = table.acquire(["a", "b"], TIMEOUT).map(drop);
            nested.join().unwrap();
            match result {
                Ok(()) => seen.note("granted"),
                Err(LockError::Timeout) => seen.note("timed out"),
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert!(table.is_idle());
        }
    });
    seen.assert_exactly(&["granted", "timed out"]);
}
