//! Shuttle explores thread schedules of the real use cases on the in-memory
//! backend (seed posts 000–002). Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
//!     cargo test -p tally-mem --release --test shuttle -- --nocapture
//! ```
//!
//! Every scenario runs under shuttle's random scheduler and under PCT
//! (depth 3), `SHUTTLE_ITERATIONS` schedules each (default 10,000), asserts
//! exact outcomes inside every schedule, and runs the invariant checker on the
//! final state. A failing schedule is printed by shuttle with the string to
//! pass to `shuttle::replay` (and, for the random scheduler, the seed for
//! `SHUTTLE_RANDOM_SEED`). The smallest scenarios also run under the
//! depth-first scheduler (`explore_dfs`); each line printed carries the
//! running total of schedules.
//!
//! This file holds the harness (`explore`, `explore_dfs`, `race`) and the
//! list of tests; the scenarios live by domain in [`payments`], [`batch`]
//! (group commit), [`gateway`] (the external card gateway), [`inventory`]
//! (stock, seats, queues and expiry), [`faults`] (failing commits) and
//! [`timeouts`] (lock waits that time out on [`timer`]'s clock). Every test
//! is declared here, at the crate root, so its name is the one CI and
//! `.ci/mutants.sh` know.

#![cfg(shuttle)]

mod batch;
#[path = "../common/mod.rs"]
mod common;
mod faults;
mod gateway;
mod inventory;
mod payments;
mod timeouts;
mod timer;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use batch::{
    batched_locked, batched_locked_overlapping, batched_locked_pairs, batched_optimistic,
    batched_optimistic_overlapping,
};
use common::*;
use shuttle::future::block_on;
use shuttle::thread;
use tally_core::app::{Command, Executed, Outcome};
use tally_core::catalog::StockError;
use tally_core::check::assert_holds;
use tally_core::gateway::Gateway;
use tally_core::ids::{PaymentId, UserId};
use tally_core::ledger::TransferKind;
use tally_core::money::Money;
use tally_core::order::{OrderError, OrderStatus};
use tally_core::payment::{InvalidTransition, Method, PaymentEvent, PaymentStatus};
use tally_core::queue::TokenStatus;
use tally_core::store::LockManager;
use tally_core::time::{ManualClock, Timestamp};
use tally_core::wallet::{LimitKind, Limits, WalletError};
use tally_core::{Error, Tally};
use tally_mem::{Concurrency, MemGateway, MemStore};
use timer::Branches;

/// How many concurrent requests each scenario races (plus the main thread).
const THREADS: usize = 3;

fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

/// Schedules run so far by this process, over every test: the last line a
/// run prints carries the total.
static SCHEDULES: AtomicUsize = AtomicUsize::new(0);

/// Runs `body` under the random and the PCT schedulers, printing the counts.
fn explore(name: &str, body: impl Fn() + Send + Sync + 'static) {
    let body = Arc::new(body);
    let n = iterations();
    let started = Instant::now();
    for (scheduler, run) in [
        ("random", Box::new(|b: Arc<dyn Fn() + Send + Sync>| shuttle::check_random(move || b(), n)) as Box<dyn Fn(_)>),
        ("pct(3)", Box::new(|b: Arc<dyn Fn() + Send + Sync>| shuttle::check_pct(move || b(), n, 3))),
    ] {
        let body: Arc<dyn Fn() + Send + Sync> = body.clone();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(body))) {
            eprintln!(
                "shuttle {name}: FAILED under the {scheduler} scheduler. Replay: pass the `failing schedule` \
                 printed above to shuttle::replay (or set SHUTTLE_RANDOM_SEED to the printed seed)."
            );
            resume_unwind(panic);
        }
    }
    let total = SCHEDULES.fetch_add(2 * n, Ordering::Relaxed) + 2 * n;
    println!(
        "shuttle {name}: {n} random + {n} pct(3) schedules passed in {:.2}s ({total} schedules in this run so far)",
        started.elapsed().as_secs_f64()
    );
}

/// Runs `body` under shuttle's depth-first scheduler, which enumerates
/// schedules systematically, at most `bound` of them. Returns whether it
/// ran out of schedules first (the exploration was exhaustive).
fn explore_dfs(name: &str, bound: usize, body: impl Fn() + Send + Sync + 'static) -> bool {
    let started = Instant::now();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let counted = move || {
        counter.fetch_add(1, Ordering::Relaxed);
        body()
    };
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| shuttle::check_dfs(counted, Some(bound)))) {
        eprintln!("shuttle {name}: FAILED under the dfs scheduler; replay the `failing schedule` printed above.");
        resume_unwind(panic);
    }
    let ran = runs.load(Ordering::Relaxed);
    let exhaustive = ran < bound;
    let total = SCHEDULES.fetch_add(ran, Ordering::Relaxed) + ran;
    let how = if exhaustive { "every schedule" } else { "bounded" };
    println!(
        "shuttle {name}: {ran} dfs schedules ({how}) passed in {:.2}s ({total} schedules in this run so far)",
        started.elapsed().as_secs_f64()
    );
    exhaustive
}

/// Spawns one shuttle thread per request and returns their results in spawn order.
fn race<A, T, F>(app: &Arc<A>, requests: Vec<F>) -> Vec<T>
where
    A: Send + Sync + 'static,
    T: Send + 'static,
    F: FnOnce(Arc<A>) -> T + Send + 'static,
{
    let handles: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let app = app.clone();
            thread::spawn(move || request(app))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("request thread")).collect()
}

fn is_done(result: &Result<Executed, Error>) -> bool {
    matches!(result, Ok(Executed::Fresh(Outcome::Payment(p))) if p.status == PaymentStatus::Done)
}

fn confirm(payment: PaymentId) -> Command {
    Command::ConfirmPayment { payment, payment_key: None }
}

/// Races `confirm` against the expiry sweeper while the clock crosses the
/// order's TTL (`ttl_end`); returns the confirm's answer and how many
/// orders the sweep expired.
fn confirm_racing_sweep<L: LockManager, G: Gateway>(
    app: &Arc<Tally<MemStore, L, ManualClock, G>>,
    user: UserId,
    confirm: Command,
    ttl_end: Timestamp,
) -> (Result<Executed, Error>, usize) {
    let confirming = {
        let app = app.clone();
        thread::spawn(move || block_on(app.execute(user, confirm, None)))
    };
    let sweeping = {
        let app = app.clone();
        thread::spawn(move || {
            app.clock().set(ttl_end);
            block_on(app.expire_orders(16))
        })
    };
    (confirming.join().unwrap(), sweeping.join().unwrap().expect("sweep"))
}

/// The scenario table: each row is a `#[test]` named `test` that explores
/// `scenario` on the backend `backend()` builds.
macro_rules! scenarios {
    ($($test:ident: $scenario:path, $backend:ident;)*) => {
        $(
            #[test]
            fn $test() {
                explore(stringify!($test), || $scenario($backend()));
            }
        )*
    };
}

scenarios! {
    locked_duplicate_confirms_charge_once: payments::duplicate_confirms, locked;
    locked_concurrent_top_ups_lose_nothing: payments::concurrent_top_ups, locked;
    locked_balance_for_k_pays_exactly_k: payments::k_of_n_payments, locked;
    locked_daily_limit_is_exact: payments::daily_limit, locked;
    locked_payment_vs_cancel_refunds_once: payments::payment_vs_cancel, locked;
    locked_idempotency_key_has_one_effect: payments::idempotent_top_ups, locked;
    optimistic_duplicate_confirms_charge_once: payments::duplicate_confirms, optimistic;
    optimistic_concurrent_top_ups_lose_nothing: payments::concurrent_top_ups, optimistic;
    optimistic_balance_for_k_pays_exactly_k: payments::k_of_n_payments, optimistic;
    optimistic_payment_vs_cancel_refunds_once: payments::payment_vs_cancel, optimistic;
    optimistic_idempotency_key_has_one_effect: payments::idempotent_top_ups, optimistic;
    locked_last_unit_sells_once: inventory::last_unit, locked;
    locked_k_units_sell_to_exactly_k_of_n: inventory::k_units_n_buyers, locked;
    locked_opposite_multi_product_orders_never_deadlock: inventory::opposite_orders, locked;
    locked_confirm_racing_expiry_ends_one_way: inventory::confirm_vs_sweeper, locked;
    locked_cancel_racing_confirm_gives_everything_back: inventory::cancel_vs_confirm, locked;
    locked_seat_booked_by_n_sells_once: inventory::seat_booked_by_n, locked;
    locked_queue_never_admits_above_its_limit: inventory::queue_admission, locked;
    optimistic_k_units_sell_to_exactly_k_of_n: inventory::k_units_n_buyers, optimistic;
    optimistic_confirm_racing_expiry_ends_one_way: inventory::confirm_vs_sweeper, optimistic;
    optimistic_seat_booked_by_n_sells_once: inventory::seat_booked_by_n, optimistic;
    optimistic_queue_never_admits_above_its_limit: inventory::queue_admission, optimistic;
    gateway_order_charge_racing_expiry_ends_one_way: gateway::gateway_confirm_vs_sweeper, with_gateway;
    gateway_concurrent_confirms_send_one_confirm: gateway::gateway_concurrent_confirms, with_gateway;
    gateway_same_key_confirms_run_once: gateway::gateway_same_key_confirms, with_gateway;
    gateway_lost_reply_is_looked_up_not_resent: gateway::gateway_lost_reply, with_gateway;
    gateway_retry_racing_the_completer_charges_once: gateway::gateway_retry_vs_completer, with_gateway;
    gateway_one_key_pays_one_payment: gateway::gateway_one_key_two_payments, with_gateway;
    gateway_cancel_racing_a_cashback_spend_ends_one_way: gateway::gateway_cancel_racing_cashback_spend, with_gateway;
    gateway_payback_room_is_held_before_the_charge: gateway::gateway_confirm_racing_a_top_up_near_the_maximum, with_gateway;
    locked_token_holds_at_most_its_seat_limit: inventory::token_orders_hold_at_most_the_seat_limit, locked;
    optimistic_token_holds_at_most_its_seat_limit: inventory::token_orders_hold_at_most_the_seat_limit, optimistic;
    batch_duplicate_confirms_charge_once: batch::duplicate_confirms_batched, batched_locked;
    batch_same_key_confirms_have_one_effect: batch::same_key_confirms_batched, batched_locked;
    batch_overdraft_pays_exactly_one: batch::overdraft_batched, batched_locked;
    batch_optimistic_overdraft_pays_exactly_one: batch::overdraft_batched, batched_optimistic;
    batch_two_batches_on_one_wallet_are_exact: batch::two_batches_one_wallet, batched_locked_pairs;
    batch_racing_the_sweeper_ends_one_way: batch::batch_vs_sweeper, batched_locked;
    batch_optimistic_racing_the_sweeper_ends_one_way: batch::batch_vs_sweeper, batched_optimistic;
    batch_acknowledged_means_committed: batch::acknowledged_means_committed, batched_locked;
    batch_overlapping_two_wallets_are_exact: batch::overlapping_batches_two_wallets, batched_locked_overlapping;
    batch_optimistic_overlapping_two_wallets_are_exact: batch::overlapping_batches_two_wallets, batched_optimistic_overlapping;
    batch_overlapping_on_one_wallet_are_exact: batch::two_batches_one_wallet, batched_locked_overlapping;
    batch_overlapping_overdraft_pays_exactly_one: batch::overdraft_batched, batched_optimistic_overlapping;
    batch_overlapping_acknowledged_means_committed: batch::acknowledged_means_committed, batched_locked_overlapping;
    batch_overlapping_and_alone_on_one_wallet_are_exact: batch::batch_and_alone_one_wallet, batched_locked_overlapping;

    // Issue 14, item 4: the combinations that had no scenario.
    optimistic_daily_limit_is_exact: payments::daily_limit, optimistic;
    optimistic_last_unit_sells_once: inventory::last_unit, optimistic;
    optimistic_opposite_multi_product_orders_never_deadlock: inventory::opposite_orders, optimistic;
    optimistic_cancel_racing_confirm_gives_everything_back: inventory::cancel_vs_confirm, optimistic;
    gateway_confirm_racing_a_cancel_ends_one_way: gateway::gateway_confirm_racing_a_cancel, with_gateway;
    gateway_cancel_retry_racing_the_completer_refunds_once: gateway::gateway_cancel_retry_racing_the_completer, with_gateway;
    optimistic_gateway_concurrent_confirms_send_one_confirm: gateway::gateway_concurrent_confirms, optimistic_with_gateway;
    optimistic_gateway_one_key_pays_one_payment: gateway::gateway_one_key_two_payments, optimistic_with_gateway;
    optimistic_gateway_confirm_racing_a_cancel_ends_one_way: gateway::gateway_confirm_racing_a_cancel, optimistic_with_gateway;
    optimistic_gateway_cancel_racing_a_cashback_spend_ends_one_way: gateway::gateway_cancel_racing_cashback_spend, optimistic_with_gateway;
    optimistic_gateway_lost_reply_is_looked_up_not_resent: gateway::gateway_lost_reply, optimistic_with_gateway;
    optimistic_gateway_payback_room_is_held_before_the_charge: gateway::gateway_confirm_racing_a_top_up_near_the_maximum, optimistic_with_gateway;
    optimistic_gateway_order_charge_racing_expiry_ends_one_way: gateway::gateway_confirm_vs_sweeper, optimistic_with_gateway;
    gateway_racing_cancels_refund_once_and_refuse_the_rest: gateway::gateway_racing_cancels_refund_once, with_gateway;
    optimistic_gateway_racing_cancels_refund_once_and_refuse_the_rest: gateway::optimistic_gateway_racing_cancels_refund_once, optimistic_with_gateway;
    locked_failed_commits_take_effect_once: faults::top_ups_through_failed_commits, locked;
    optimistic_failed_commits_take_effect_once: faults::top_ups_through_failed_commits, optimistic;
    locked_failed_commits_never_charge_twice: faults::confirms_through_failed_commits, locked;
    optimistic_failed_commits_never_charge_twice: faults::confirms_through_failed_commits, optimistic;
}

/// The optimistic strategy with the in-memory card gateway.
fn optimistic_with_gateway() -> (Arc<Tally<MemStore, tally_core::store::NoLocks, ManualClock, MemGateway>>, MemGateway)
{
    let gateway = MemGateway::new();
    let config = tally_core::app::Config { attempts_max: 16, ..config() };
    let store = MemStore::new(Concurrency::Optimistic);
    let ids = Arc::new(tally_core::ids::SeqIds::new(1));
    let app = Tally::new(store, tally_core::store::NoLocks, ManualClock::new(START), ids, config)
        .with_gateway(gateway.clone());
    (Arc::new(app), gateway)
}

/// A scenario whose lock waits time out on shuttle's timers; both of its
/// branches (`first`, `second`) must be reached over its schedules.
macro_rules! timed_scenario {
    ($test:ident, $scenario:path, $backend:ident, $branches:expr) => {
        #[test]
        fn $test() {
            static SEEN: Branches<{ $branches.len() }> = Branches::new($branches);
            explore(stringify!($test), || $scenario($backend(), &SEEN));
            SEEN.assert_all(stringify!($test));
        }
    };
}

timed_scenario!(
    timeout_top_ups_land_or_time_out_exactly,
    timeouts::top_ups_land_or_time_out,
    timed,
    ["none timed out", "one or more timed out"]
);
timed_scenario!(
    timeout_a_stuck_holder_times_requests_out,
    timeouts::a_stuck_holder_times_requests_out,
    timed,
    ["the second request landed", "both timed out"]
);
timed_scenario!(
    timeout_gateway_confirm_times_out_recoverably,
    timeouts::gateway_confirm_times_out_recoverably,
    timed_with_gateway,
    [
        "none timed out",
        "the confirm timed out before the charge",
        "the confirm timed out after it",
        "the top-up timed out"
    ]
);
timed_scenario!(
    timeout_zombie_top_ups_land_once,
    timeouts::zombie_top_ups_land_once,
    timed_with_lease,
    ["no lease ran out", "the clock reached a lease's end"]
);
use timeouts::{timed, timed_with_gateway, timed_with_lease};

/// The timer itself, exhaustively: a waiter behind a holder that lets go
/// at any point, while the waiter's timer fires at any point (or never).
/// The waiter is granted the lock or times out, never both, and nothing
/// is left held or queued (no grant stranded by a timeout racing the
/// hand-off).
#[test]
fn dfs_lock_wait_timer_every_schedule() {
    use tally_core::store::{LockKey, LockSet};
    use tally_core::time::Clock as _;
    static SEEN: Branches<2> = Branches::new(["granted", "timed out"]);
    let exhaustive = explore_dfs("dfs_lock_wait_timer_every_schedule", 100_000, || {
        let clock = timer::TimerClock::new(START);
        let locks = tally_mem::MemLocks::new(clock.clone(), tally_lock::Config::default());
        let key = LockSet::new([LockKey::Wallet(UserId(7))]);
        let held = block_on(locks.acquire(&key, Duration::ZERO)).expect("free");
        let waiter = {
            let (locks, key) = (locks.clone(), key.clone());
            thread::spawn(move || block_on(locks.acquire(&key, Duration::from_secs(5))).map(drop))
        };
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(matches!(waited, Ok(()) | Err(tally_core::store::LockError::Timeout)), "{waited:?}");
        SEEN.saw(usize::from(waited.is_err()));
        assert!(locks.table().is_idle(), "nothing held or queued after: {waited:?}");
        // Time moved only if the timer fired, and then to its deadline.
        let moved = clock.now().0 - START.0;
        assert!(moved == 0 || moved == 5_000, "{moved}");
    });
    assert!(exhaustive, "the timer's schedules fit the bound");
    SEEN.assert_all("dfs_lock_wait_timer_every_schedule");
}

/// The smallest use-case scenarios under the depth-first scheduler, bounded
/// (their schedules are far too many to enumerate): it varies the last
/// decisions of a schedule systematically where the random schedulers
/// sample.
#[test]
fn dfs_last_unit_sells_once_bounded() {
    explore_dfs("dfs_last_unit_sells_once_bounded", dfs_bound(), || inventory::last_unit(locked()));
}

#[test]
fn dfs_gateway_same_key_confirms_run_once_bounded() {
    explore_dfs("dfs_gateway_same_key_confirms_run_once_bounded", dfs_bound(), || {
        gateway::gateway_same_key_confirms(with_gateway())
    });
}

/// Four times a random scheduler's count: a depth-first schedule costs
/// about a third of a random one here (it replays the shared prefix).
fn dfs_bound() -> usize {
    4 * iterations()
}
