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
//! `SHUTTLE_RANDOM_SEED`).
//!
//! This file holds the harness (`explore`, `race`) and the list of tests;
//! the scenarios live by domain in [`payments`], [`batch`] (group commit), [`gateway`] (the external
//! card gateway) and [`inventory`] (stock, seats, queues and expiry). Every
//! test is declared here, at the crate root, so its name is the one CI and
//! `.ci/mutants.sh` know.

#![cfg(shuttle)]

mod batch;
#[path = "../common/mod.rs"]
mod common;
mod gateway;
mod inventory;
mod payments;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Instant;

use batch::{batched_locked, batched_locked_pairs, batched_optimistic};
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
use tally_mem::{MemGateway, MemStore};

/// How many concurrent requests each scenario races (plus the main thread).
const THREADS: usize = 3;

fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

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
    println!("shuttle {name}: {n} random + {n} pct(3) schedules passed in {:.2}s", started.elapsed().as_secs_f64());
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

macro_rules! scenario {
    ($test:ident, $scenario:path, $backend:ident) => {
        #[test]
        fn $test() {
            explore(stringify!($test), || $scenario($backend()));
        }
    };
}

scenario!(locked_duplicate_confirms_charge_once, payments::duplicate_confirms, locked);
scenario!(locked_concurrent_top_ups_lose_nothing, payments::concurrent_top_ups, locked);
scenario!(locked_balance_for_k_pays_exactly_k, payments::k_of_n_payments, locked);
scenario!(locked_daily_limit_is_exact, payments::daily_limit, locked);
scenario!(locked_payment_vs_cancel_refunds_once, payments::payment_vs_cancel, locked);
scenario!(locked_idempotency_key_has_one_effect, payments::idempotent_top_ups, locked);
scenario!(optimistic_duplicate_confirms_charge_once, payments::duplicate_confirms, optimistic);
scenario!(optimistic_concurrent_top_ups_lose_nothing, payments::concurrent_top_ups, optimistic);
scenario!(optimistic_balance_for_k_pays_exactly_k, payments::k_of_n_payments, optimistic);
scenario!(optimistic_payment_vs_cancel_refunds_once, payments::payment_vs_cancel, optimistic);
scenario!(optimistic_idempotency_key_has_one_effect, payments::idempotent_top_ups, optimistic);
scenario!(locked_last_unit_sells_once, inventory::last_unit, locked);
scenario!(locked_k_units_sell_to_exactly_k_of_n, inventory::k_units_n_buyers, locked);
scenario!(locked_opposite_multi_product_orders_never_deadlock, inventory::opposite_orders, locked);
scenario!(locked_confirm_racing_expiry_ends_one_way, inventory::confirm_vs_sweeper, locked);
scenario!(locked_cancel_racing_confirm_gives_everything_back, inventory::cancel_vs_confirm, locked);
scenario!(locked_seat_booked_by_n_sells_once, inventory::seat_booked_by_n, locked);
scenario!(locked_queue_never_admits_above_its_limit, inventory::queue_admission, locked);
scenario!(optimistic_k_units_sell_to_exactly_k_of_n, inventory::k_units_n_buyers, optimistic);
scenario!(optimistic_confirm_racing_expiry_ends_one_way, inventory::confirm_vs_sweeper, optimistic);
scenario!(optimistic_seat_booked_by_n_sells_once, inventory::seat_booked_by_n, optimistic);
scenario!(optimistic_queue_never_admits_above_its_limit, inventory::queue_admission, optimistic);
scenario!(gateway_order_charge_racing_expiry_ends_one_way, gateway::gateway_confirm_vs_sweeper, with_gateway);
scenario!(gateway_concurrent_confirms_send_one_confirm, gateway::gateway_concurrent_confirms, with_gateway);
scenario!(gateway_same_key_confirms_run_once, gateway::gateway_same_key_confirms, with_gateway);
scenario!(gateway_lost_reply_is_looked_up_not_resent, gateway::gateway_lost_reply, with_gateway);
scenario!(gateway_retry_racing_the_completer_charges_once, gateway::gateway_retry_vs_completer, with_gateway);
scenario!(gateway_one_key_pays_one_payment, gateway::gateway_one_key_two_payments, with_gateway);
scenario!(
    gateway_cancel_racing_a_cashback_spend_ends_one_way,
    gateway::gateway_cancel_racing_cashback_spend,
    with_gateway
);
scenario!(
    gateway_payback_room_is_held_before_the_charge,
    gateway::gateway_confirm_racing_a_top_up_near_the_maximum,
    with_gateway
);
scenario!(locked_token_holds_at_most_its_seat_limit, inventory::token_orders_hold_at_most_the_seat_limit, locked);
scenario!(
    optimistic_token_holds_at_most_its_seat_limit,
    inventory::token_orders_hold_at_most_the_seat_limit,
    optimistic
);
scenario!(batch_duplicate_confirms_charge_once, batch::duplicate_confirms_batched, batched_locked);
scenario!(batch_same_key_confirms_have_one_effect, batch::same_key_confirms_batched, batched_locked);
scenario!(batch_overdraft_pays_exactly_one, batch::overdraft_batched, batched_locked);
scenario!(batch_optimistic_overdraft_pays_exactly_one, batch::overdraft_batched, batched_optimistic);
scenario!(batch_two_batches_on_one_wallet_are_exact, batch::two_batches_one_wallet, batched_locked_pairs);
scenario!(batch_racing_the_sweeper_ends_one_way, batch::batch_vs_sweeper, batched_locked);
scenario!(batch_optimistic_racing_the_sweeper_ends_one_way, batch::batch_vs_sweeper, batched_optimistic);
scenario!(batch_acknowledged_means_committed, batch::acknowledged_means_committed, batched_locked);
