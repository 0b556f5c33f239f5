//! End-to-end tests against real PostgreSQL (one test binary).
//!
//! `cargo test -p tally-tests` starts a throwaway PostgreSQL cluster from the
//! PostgreSQL installed on the machine (or uses `DATABASE_URL`, whose user must
//! be allowed to create databases), gives every test its own database, runs
//! the tests, and stops the cluster. Arguments work as with libtest: a filter
//! substring, `--exact`, `--test-threads N`, `--list`.

mod fences;
mod harness;
mod holes;
mod inventory;
mod one_step;
mod scenarios;

use std::future::Future;
use std::pin::Pin;

use libtest_mimic::{Arguments, Failed, Trial};
use tally_pg::Strategy;

type Scenario = fn(Strategy) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|s| Box::pin(scenarios::$name(s))) as Scenario)),*]
    };
}

fn run(scenario: Scenario, strategy: Strategy) -> Result<(), Failed> {
    // Each test gets its own runtime: two workers, like the CI machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    runtime.block_on(scenario(strategy));
    Ok(())
}

fn main() {
    let arguments = Arguments::from_args();
    // 1000 concurrent requests need ~2000 sockets in this one process.
    let _ = rlimit::increase_nofile_limit(8_192);
    let per_strategy = scenarios![
        concurrent_confirms_charge_once,
        fifty_concurrent_payments_exact_history,
        concurrent_top_ups_sum_exactly,
        balance_for_k_pays_exactly_k,
        daily_limit_exact_under_concurrency,
        one_key_one_effect,
        duplicates_answer_as_their_key,
        small_pool_sheds_load_safely,
        single_connection_pool,
        bad_input_changes_nothing,
        gateway_concurrent_confirms_send_one,
        gateway_lost_reply_is_looked_up,
        gateway_timeout_resolved_by_completer,
        gateway_cancel_settled_by_completer_answers_its_retry,
        gateway_cancel_happens_once,
        stock_one_two_buyers_one_order,
        hundred_buyers_ten_units,
        ten_bookings_one_seat,
        crossed_two_product_orders_never_deadlock,
        unpaid_order_expires_and_stock_returns,
        confirm_racing_expiry_ends_one_way,
        cancel_racing_expiry_gives_back_once,
        two_sweepers_expire_each_order_once,
        gateway_charge_in_flight_holds_off_expiry,
        a_payment_key_pays_one_payment,
        two_payments_racing_for_one_key_charge_once,
        a_charge_for_another_order_is_neither_adopted_nor_cancelled,
        a_spent_payback_refuses_the_cancel_before_the_refund,
        a_refund_at_the_ceiling_reverses_the_payback_first,
        a_payback_that_does_not_fit_refuses_the_confirm_before_the_charge,
        a_wrong_amount_charge_is_refunded_until_it_lands,
        a_charge_landing_after_the_give_up_is_refunded,
        a_token_holds_at_most_its_events_seats,
        no_balance_passes_the_cap,
        the_schema_refuses_a_balance_past_the_cap,
        an_orders_payback_is_the_merchants_policy,
        one_step_payments_spend_the_last_funds_exactly,
        one_step_payments_under_one_key_charge_once,
        tally_check_passes_a_sound_database_and_fails_a_tampered_one,
        record_keys_lock_at_begin,
        loaded_rows_lock_as_the_strategy_promises,
        crossed_writers_deadlock_and_exactly_one_is_told,
    ];
    // The redis strategy's own: tokens from Redis, leases run out.
    let redis_only: [(&str, Scenario); 3] = [
        ("a_holder_paused_before_its_transaction_is_fenced", |s| {
            Box::pin(fences::a_holder_paused_before_its_transaction_is_fenced(s))
        }),
        ("a_holder_paused_mid_transaction_makes_the_next_one_wait", |s| {
            Box::pin(fences::a_holder_paused_mid_transaction_makes_the_next_one_wait(s))
        }),
        ("redis_killed_mid_run_refuses_and_loses_nothing", |s| {
            Box::pin(fences::redis_killed_mid_run_refuses_and_loses_nothing(s))
        }),
    ];
    let mut trials = Vec::new();
    for strategy in Strategy::ALL.into_iter().chain([Strategy::Redis]) {
        let own: &[(&str, Scenario)] = if strategy == Strategy::Redis { &redis_only } else { &[] };
        for &(name, scenario) in per_strategy.iter().chain(own) {
            trials.push(Trial::test(format!("{}::{name}", strategy.as_str()), move || run(scenario, strategy)));
        }
        trials.push(Trial::test(format!("{}::store_conforms", strategy.as_str()), move || {
            run(|s| Box::pin(scenarios::store_conforms(s, harness::Pool::default().max_connections)), strategy)
        }));
    }
    let listing = arguments.list;
    let cluster = if listing {
        None
    } else {
        match harness::start_server() {
            Ok(cluster) => cluster,
            Err(error) => {
                eprintln!("cannot start PostgreSQL for the end-to-end tests: {error}");
                std::process::exit(101);
            }
        }
    };
    let redis = if listing {
        None
    } else {
        match harness::start_redis() {
            Ok(redis) => Some(redis),
            Err(error) => {
                eprintln!("cannot start redis-server for the redis strategy's tests: {error}");
                std::process::exit(101);
            }
        }
    };
    let conclusion = libtest_mimic::run(&arguments, trials);
    if let Some(redis) = redis {
        redis.stop();
    }
    if let Some(cluster) = cluster
        && let Err(error) = cluster.stop()
    {
        eprintln!("stopping the test cluster: {error}");
    }
    conclusion.exit();
}
