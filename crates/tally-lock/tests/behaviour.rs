//! Exact behaviour of the lock table on real threads and a hand-written
//! executor: exclusion, FIFO, queue bound, timeouts, fences, multi-key order,
//! and clean cancellation of async waits.
#![cfg(not(any(loom, shuttle)))]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tally_lock::{Config, DEFAULT_MAX_WAITERS_PER_KEY, Guard, LockError, LockTable};

/// How long a test waits for another thread to reach a state before it
/// declares the test hung.
const PATIENCE: Duration = Duration::from_secs(20);

fn table<K: Ord + Clone + std::fmt::Debug + Send + Sync + 'static>() -> LockTable<K> {
    LockTable::new(Config::default())
}

/// A fresh table in which `keys` are held by the guard returned with it.
fn held<K: Ord + Clone + std::fmt::Debug + Send + Sync + 'static, const N: usize>(
    keys: [K; N],
) -> (LockTable<K>, Guard<K>) {
    let table = table();
    let holder = table.acquire(keys, None).unwrap();
    (table, holder)
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `take(table)` on a thread of its own, returning once it waits on
/// `key` as the key's `nth` waiter.
fn spawn_waiter<K, T>(
    table: &LockTable<K>,
    key: K,
    nth: usize,
    take: impl FnOnce(LockTable<K>) -> T + Send + 'static,
) -> JoinHandle<T>
where
    K: Ord + Clone + std::fmt::Debug + Send + Sync + 'static,
    T: Send + 'static,
{
    let table2 = table.clone();
    let handle = thread::spawn(move || take(table2));
    wait_until(&format!("waiter {nth} is queued"), || table.waiters(&key) == nth);
    handle
}

/// Runs `body(index)` on `threads` threads at once; returns when all are
/// done (a panic in one fails the test).
fn on_threads(threads: usize, body: impl Fn(usize) + Sync) {
    thread::scope(|scope| {
        for index in 0..threads {
            let body = &body;
            scope.spawn(move || body(index));
        }
    });
}

/// `counter += 1` as two steps with a yield between them: two holders that
/// overlap lose an update.
fn racy_increment(counter: &AtomicUsize) {
    let seen = counter.load(Ordering::Relaxed);
    thread::yield_now();
    counter.store(seen + 1, Ordering::Relaxed);
}

/// Asserts that whoever calls it is alone between `enter` and `leave`.
#[derive(Default)]
struct Exclusive(AtomicUsize);

impl Exclusive {
    fn enter(&self) {
        assert_eq!(self.0.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
    }

    fn leave(&self) {
        assert_eq!(self.0.fetch_sub(1, Ordering::SeqCst), 1);
    }
}

// ---------------------------------------------------------------------------
// A tiny executor: enough to drive `acquire_async` without a runtime.

/// Wakes a parked thread.
struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// Counts how often it was woken.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn poll_once<F: Future>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

/// Polls a lock wait once, which must then be queued, and keeps it for
/// later polls.
fn queued<F: Future>(wait: F, waker: &Waker) -> Pin<Box<F>> {
    let mut wait = Box::pin(wait);
    assert!(poll_once(wait.as_mut(), waker).is_pending(), "the wait is queued");
    wait
}

/// Polls a lock wait that must have been handed its keys: `why` says why.
fn granted<K, F>(wait: Pin<&mut F>, waker: &Waker, why: &str) -> Guard<K>
where
    K: Ord + Clone + std::fmt::Debug + Send + Sync + 'static,
    F: Future<Output = Result<Guard<K>, LockError>>,
{
    match poll_once(wait, waker) {
        Poll::Ready(Ok(guard)) => guard,
        other => panic!("{why}: {:?}", other.map(|result| result.map(drop))),
    }
}

/// A give-up signal the test fires by hand (a stand-in for a timer).
#[derive(Clone, Default)]
struct Trigger(Arc<Mutex<(bool, Option<Waker>)>>);

impl Trigger {
    fn fire(&self) {
        let waker = {
            let mut inner = self.0.lock().unwrap();
            inner.0 = true;
            inner.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    async fn fired(self) {
        std::future::poll_fn(|cx| {
            let mut inner = self.0.lock().unwrap();
            if inner.0 {
                Poll::Ready(())
            } else {
                inner.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// Mutual exclusion.

#[test]
fn threads_never_hold_a_key_together() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 1000;
    let table = table::<&'static str>();
    let (counter, inside) = (AtomicUsize::new(0), Exclusive::default());
    on_threads(THREADS, |_| {
        for _ in 0..ROUNDS {
            let _guard = table.acquire(["payment"], None).unwrap();
            inside.enter();
            racy_increment(&counter);
            inside.leave();
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), THREADS * ROUNDS);
    assert!(table.is_idle());
}

#[test]
fn mixed_sync_and_async_takers_are_exclusive() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 500;
    let table = table::<u32>();
    let counter = AtomicUsize::new(0);
    on_threads(THREADS, |index| {
        for _ in 0..ROUNDS {
            let _guard = if index % 2 == 0 {
                table.acquire([7], None).unwrap()
            } else {
                block_on(table.acquire_async([7], std::future::pending())).unwrap()
            };
            racy_increment(&counter);
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), THREADS * ROUNDS);
    assert!(table.is_idle());
}

// ---------------------------------------------------------------------------
// FIFO and hand-off.

#[test]
fn waiters_are_granted_in_arrival_order() {
    const WAITERS: usize = 6;
    let table = table::<&'static str>();
    let order = Arc::new(Mutex::new(Vec::new()));
    let holder = table.acquire(["k"], None).unwrap();
    // Force the arrival order: the next waiter starts only once this one is
    // queued.
    let handles: Vec<_> = (0..WAITERS)
        .map(|index| {
            let order = order.clone();
            spawn_waiter(&table, "k", index + 1, move |table| {
                let _guard = table.acquire(["k"], None).unwrap();
                order.lock().unwrap().push(index);
            })
        })
        .collect();
    drop(holder);
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..WAITERS).collect::<Vec<_>>());
    assert!(table.is_idle());
}

#[test]
fn release_hands_the_key_to_the_head_waiter_before_it_runs() {
    let (table, holder) = held([1]);
    let counting = Arc::new(CountingWaker::default());
    let waker = Waker::from(counting.clone());
    let mut waiting = queued(table.acquire_async([1], std::future::pending()), &waker);
    let first_fence = holder.fence(&1).unwrap();
    drop(holder);
    // Granted under the mutex at release time: the key is already held by the
    // waiter, with a larger fence, and nobody else can take it meanwhile.
    assert_eq!(counting.count(), 1);
    let handed = table.holder_fence(&1).unwrap();
    assert!(handed > first_fence);
    assert_eq!(table.try_acquire([1]).unwrap_err(), LockError::Timeout);
    let guard = granted(waiting.as_mut(), &waker, "the waiter was handed the key");
    assert_eq!(guard.fence(&1), Some(handed));
    drop(guard);
    assert!(table.is_idle());
}

#[test]
fn async_wait_uses_the_latest_waker() {
    let (table, holder) = held([1]);
    let (old, new) = (Arc::new(CountingWaker::default()), Arc::new(CountingWaker::default()));
    let mut waiting = queued(table.acquire_async([1], std::future::pending()), &Waker::from(old.clone()));
    assert!(poll_once(waiting.as_mut(), &Waker::from(new.clone())).is_pending());
    drop(holder);
    assert_eq!((old.count(), new.count()), (0, 1));
    assert!(poll_once(waiting.as_mut(), &Waker::from(new)).is_ready());
}

// ---------------------------------------------------------------------------
// Queue bound.

#[test]
fn queue_full_at_the_bound_fails_at_once() {
    const BOUND: usize = 2;
    let table = LockTable::new(Config { max_waiters_per_key: BOUND });
    let holder = table.acquire(["k"], None).unwrap();
    let handles: Vec<_> = (0..BOUND)
        .map(|index| spawn_waiter(&table, "k", index + 1, |table| table.acquire(["k"], None).map(drop)))
        .collect();

    let start = Instant::now();
    assert_eq!(table.acquire(["k"], None).unwrap_err(), LockError::QueueFull);
    assert_eq!(table.acquire(["k"], Some(Duration::from_secs(60))).unwrap_err(), LockError::QueueFull);
    assert_eq!(block_on(table.acquire_async(["k"], std::future::pending())).unwrap_err(), LockError::QueueFull);
    assert!(start.elapsed() < Duration::from_secs(10), "QueueFull must not wait");
    assert_eq!(table.waiters(&"k"), BOUND);

    // A multi-key acquisition that hits a full queue releases what it took.
    assert_eq!(table.acquire(["a", "k"], None).unwrap_err(), LockError::QueueFull);
    assert_eq!(table.holder_fence(&"a"), None);

    drop(holder);
    for handle in handles {
        handle.join().unwrap().unwrap();
    }
    assert!(table.is_idle());
}

#[test]
fn zero_waiters_means_contention_fails() {
    let table = LockTable::new(Config { max_waiters_per_key: 0 });
    let holder = table.acquire([1u64], None).unwrap();
    assert_eq!(table.acquire([1], None).unwrap_err(), LockError::QueueFull);
    assert!(table.acquire([2], None).is_ok());
    drop(holder);
    assert!(table.acquire([1], None).is_ok());
    assert!(table.is_idle());
}

#[test]
fn default_config_bound() {
    assert_eq!(Config::default().max_waiters_per_key, DEFAULT_MAX_WAITERS_PER_KEY);
    assert_eq!(DEFAULT_MAX_WAITERS_PER_KEY, 1024);
}

// ---------------------------------------------------------------------------
// Timeouts and giving up.

#[test]
fn timeout_returns_timeout_and_leaves_no_trace() {
    const TIMEOUT: Duration = Duration::from_millis(50);
    let (table, holder) = held(["k"]);
    let fence = holder.fence(&"k");
    let start = Instant::now();
    assert_eq!(table.acquire(["k"], Some(TIMEOUT)).unwrap_err(), LockError::Timeout);
    assert!(start.elapsed() >= TIMEOUT);
    assert_eq!(table.waiters(&"k"), 0);
    assert_eq!(table.holder_fence(&"k"), fence);
    drop(holder);
    assert!(table.is_idle());
}

#[test]
fn timeout_of_a_multi_key_acquisition_releases_the_keys_it_took() {
    let (table, holder) = held(["b"]);
    let err = table.acquire(["c", "a", "b"], Some(Duration::from_millis(20)));
    assert_eq!(err.unwrap_err(), LockError::Timeout);
    assert_eq!(table.holder_fence(&"a"), None);
    assert_eq!(table.holder_fence(&"c"), None);
    assert_eq!(table.waiters(&"b"), 0);
    drop(holder);
    assert!(table.is_idle());
}

#[test]
fn zero_timeout_still_takes_a_free_key() {
    let table = table::<u8>();
    let guard = table.acquire([1], Some(Duration::ZERO)).unwrap();
    assert_eq!(table.acquire([1], Some(Duration::ZERO)).unwrap_err(), LockError::Timeout);
    drop(guard);
    assert!(table.is_idle());
}

#[test]
fn huge_timeout_waits_like_none() {
    let (table, holder) = held([1]);
    let handle = spawn_waiter(&table, 1, 1, |table| table.acquire([1], Some(Duration::MAX)).map(drop));
    drop(holder);
    handle.join().unwrap().unwrap();
    assert!(table.is_idle());
}

#[test]
fn a_timed_out_waiter_does_not_block_those_behind_it() {
    let (table, holder) = held([1]);
    let impatient = spawn_waiter(&table, 1, 1, |table| table.acquire([1], Some(Duration::from_millis(30))));
    let patient = spawn_waiter(&table, 1, 2, |table| table.acquire([1], None).map(|guard| guard.fence(&1)));
    assert_eq!(impatient.join().unwrap().unwrap_err(), LockError::Timeout);
    assert_eq!(table.waiters(&1), 1);
    drop(holder);
    assert!(patient.join().unwrap().unwrap().is_some());
    assert!(table.is_idle());
}

#[test]
fn give_up_future_cancels_the_wait() {
    let (table, holder) = held([1, 2]);
    let trigger = Trigger::default();
    let counting = Arc::new(CountingWaker::default());
    let waker = Waker::from(counting.clone());
    let mut waiting = queued(table.acquire_async([0, 1, 2], trigger.clone().fired()), &waker);
    // It took key 0 and queued for key 1.
    assert!(table.holder_fence(&0).is_some());
    assert_eq!(table.waiters(&1), 1);

    trigger.fire();
    assert_eq!(counting.count(), 1, "the give-up signal woke the task");
    assert!(matches!(poll_once(waiting.as_mut(), &waker), Poll::Ready(Err(LockError::Timeout))));
    assert_eq!(table.holder_fence(&0), None);
    assert_eq!(table.waiters(&1), 0);
    drop(holder);
    assert!(table.is_idle());
}

#[test]
fn a_grant_seen_before_the_give_up_signal_is_kept() {
    let (table, holder) = held([1]);
    let trigger = Trigger::default();
    let mut waiting = queued(table.acquire_async([1], trigger.clone().fired()), Waker::noop());
    drop(holder);
    trigger.fire();
    // The wait looks at the grant before the give-up signal.
    let guard = granted(waiting.as_mut(), Waker::noop(), "a grant that raced the give-up is kept");
    drop(guard);
    assert!(table.is_idle());
}

#[test]
fn give_up_after_a_hand_off_passes_the_key_on() {
    let table = table::<u8>();
    let holder = Arc::new(Mutex::new(Some(table.acquire([1], None).unwrap())));
    // A give-up signal that stays pending on its first poll; on its second it
    // releases the holder and fires. So the key is handed to the waiter in the
    // window after it last looked for a grant and before it gives up.
    let release_then_fire = {
        let holder = holder.clone();
        let mut polls = 0;
        std::future::poll_fn(move |_| {
            polls += 1;
            if polls == 1 {
                return Poll::Pending;
            }
            drop(holder.lock().unwrap().take());
            Poll::Ready(())
        })
    };
    let mut first = queued(table.acquire_async([1], release_then_fire), Waker::noop());
    let counting = Arc::new(CountingWaker::default());
    let mut second = queued(table.acquire_async([1], std::future::pending()), &Waker::from(counting.clone()));
    assert_eq!(table.waiters(&1), 2);

    let Poll::Ready(Err(LockError::Timeout)) = poll_once(first.as_mut(), Waker::noop()) else {
        panic!("the first waiter gave up");
    };
    assert!(holder.lock().unwrap().is_none(), "the holder released");
    // The grant `first` received while giving up went on to `second`.
    assert_eq!(counting.count(), 1);
    assert_eq!(table.waiters(&1), 0);
    let guard = granted(second.as_mut(), Waker::noop(), "the second waiter was handed the key");
    drop(guard);
    assert!(table.is_idle());
}

#[test]
fn dropping_an_async_wait_leaves_no_waiter() {
    let (table, holder) = held(["k"]);
    {
        let _waiting = queued(table.acquire_async(["a", "k"], std::future::pending()), Waker::noop());
        assert_eq!(table.waiters(&"k"), 1);
        assert!(table.holder_fence(&"a").is_some());
    } // dropped mid-wait
    assert_eq!(table.waiters(&"k"), 0);
    assert_eq!(table.holder_fence(&"a"), None);
    drop(holder);
    assert!(table.is_idle());
    // A later acquirer still gets the key, blocking or async.
    drop(table.acquire(["k"], Some(Duration::ZERO)).unwrap());
    drop(block_on(table.acquire_async(["k"], std::future::pending())).unwrap());
    assert!(table.is_idle());
}

#[test]
fn dropping_an_async_wait_after_its_hand_off_passes_the_key_on() {
    let (table, holder) = held(["k"]);
    let dropped = queued(table.acquire_async(["k"], std::future::pending()), Waker::noop());
    let behind = spawn_waiter(&table, "k", 2, |table| table.acquire(["k"], None).map(|guard| guard.fence(&"k")));

    drop(holder); // hands "k" to the future, which never looks again
    assert_eq!(table.waiters(&"k"), 1);
    drop(dropped); // must pass "k" on to the thread
    assert!(behind.join().unwrap().unwrap().is_some());
    assert!(table.is_idle());
}

#[test]
fn async_waiter_is_woken_by_a_release_on_another_thread() {
    let (table, holder) = held([1]);
    let waiter = spawn_waiter(&table, 1, 1, |table| {
        block_on(table.acquire_async([1], std::future::pending())).map(|guard| guard.fence(&1))
    });
    drop(holder);
    assert!(waiter.join().unwrap().unwrap().is_some());
    assert!(table.is_idle());
}

// ---------------------------------------------------------------------------
// Fencing tokens.

#[test]
fn fences_strictly_increase_per_key_across_idle_periods() {
    let table = table::<&'static str>();
    let mut last = 0;
    for round in 0..50 {
        let guard = table.acquire(["k"], None).unwrap();
        let fence = guard.fence(&"k").unwrap();
        assert!(fence > last, "round {round}: fence {fence} after {last}");
        assert_eq!(table.holder_fence(&"k"), Some(fence));
        assert_eq!(guard.fence(&"other"), None);
        last = fence;
        drop(guard);
        assert!(table.is_idle());
        // Other keys' grants in between do not disturb the order.
        drop(table.try_acquire(["other"]).unwrap());
    }
}

#[test]
fn fences_strictly_increase_in_grant_order_under_contention() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 200;
    let table = table::<u8>();
    let grants = Mutex::new(Vec::new());
    on_threads(THREADS, |_| {
        for _ in 0..ROUNDS {
            let guard = table.acquire([9], None).unwrap();
            // Recorded while holding: the vector is in grant order.
            grants.lock().unwrap().push(guard.fence(&9).unwrap());
        }
    });
    let grants = grants.lock().unwrap();
    assert_eq!(grants.len(), THREADS * ROUNDS);
    assert!(grants.windows(2).all(|pair| pair[0] < pair[1]));
}

// ---------------------------------------------------------------------------
// Multi-key acquisition.

#[test]
fn keys_are_sorted_and_deduplicated() {
    let table = table::<u32>();
    let guard = table.acquire([3, 1, 3, 2, 1], None).unwrap();
    assert_eq!(guard.keys(), &[1, 2, 3]);
    let fences: Vec<u64> = guard.keys().iter().map(|key| guard.fence(key).unwrap()).collect();
    assert!(fences.windows(2).all(|pair| pair[0] < pair[1]));
    drop(guard);
    assert!(table.is_idle());

    let empty = table.acquire([], None).unwrap();
    assert!(empty.keys().is_empty());
    drop(empty);
    assert!(table.is_idle());
}

#[test]
fn opposite_order_takers_never_deadlock() {
    const ROUNDS: usize = 2000;
    let table = table::<&'static str>();
    let inside = Exclusive::default();
    let takers = [["a", "b"], ["b", "a"], ["b", "a"]];
    on_threads(takers.len(), |index| {
        for _ in 0..ROUNDS {
            let guard = if index == 2 {
                block_on(table.acquire_async(takers[index], std::future::pending())).unwrap()
            } else {
                table.acquire(takers[index], None).unwrap()
            };
            assert_eq!(guard.keys(), &["a", "b"]);
            inside.enter();
            thread::yield_now();
            inside.leave();
        }
    });
    assert!(table.is_idle());
}

#[test]
fn overlapping_key_sets_exclude_each_other_only_where_they_overlap() {
    let table = table::<u8>();
    let first = table.acquire([1, 2], None).unwrap();
    let disjoint = table.try_acquire([3, 4]).unwrap();
    assert_eq!(table.try_acquire([2, 3]).unwrap_err(), LockError::Timeout);
    // All or nothing: the failed attempt took neither key.
    drop(disjoint);
    assert_eq!(table.holder_fence(&3), None);
    drop(first);
    assert!(table.is_idle());
}

// ---------------------------------------------------------------------------
// try_acquire.

#[test]
fn try_acquire_never_jumps_a_queue() {
    let (table, holder) = held([1]);
    let mut waiting = queued(table.acquire_async([1], std::future::pending()), Waker::noop());
    assert_eq!(table.try_acquire([1]).unwrap_err(), LockError::Timeout);
    drop(holder);
    // Handed to the queued waiter, not free for the newcomer.
    assert_eq!(table.try_acquire([1]).unwrap_err(), LockError::Timeout);
    assert!(poll_once(waiting.as_mut(), Waker::noop()).is_ready());
}

// ---------------------------------------------------------------------------
// Types.

#[test]
fn handles_and_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync_clone<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync_clone::<LockTable<String>>();
    let table = table::<String>();
    let future = table.acquire_async(["k".to_owned()], std::future::pending());
    assert_send(&future);
    let guard: Guard<String> = table.acquire(["k".to_owned()], None).unwrap();
    assert_send(&guard);
    assert!(format!("{guard:?}").contains("\"k\""));
    assert!(format!("{table:?}").contains("max_waiters_per_key"));
    drop(future);
}

#[test]
fn errors_display() {
    assert_eq!(LockError::Timeout.to_string(), "lock wait timed out");
    assert_eq!(LockError::QueueFull.to_string(), "too many waiters for one key");
}
