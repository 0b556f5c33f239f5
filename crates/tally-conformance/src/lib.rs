//! The store conformance suite.
//!
//! Every case runs through the core's traits only, so it runs unchanged on
//! `tally-mem` (both modes) and on `tally-pg` (every strategy). Together the
//! cases pin down what the use cases rely on a store for: all-or-nothing
//! commits, reading one's own writes, exact round trips of every record,
//! constraints, version checks where the backend has them, paging, reaping.
//!
//! Cases share one store: each makes its own users, so they never see each
//! other's records, and the invariant checker runs over everything at the end.
//!
//! [`fences`] is the part a store that checks lock fencing tokens must pass
//! on top ([`fences::run_all`]): the in-memory store and PostgreSQL (every
//! strategy) run it.

/// Runs `$command` for `$user`, unkeyed: the record of the
/// `Outcome::$variant` it must answer, or the error it answered (`$what`
/// names the command if it answers anything else).
macro_rules! execute {
    ($app:expr, $user:expr, $command:expr => $variant:ident, $what:literal) => {
        match $app.execute($user, $command, None).await {
            Ok(tally_core::app::Executed::Fresh(tally_core::app::Outcome::$variant(record))) => Ok(record),
            Err(error) => Err(error),
            Ok(other) => panic!("{} answered {other:?}", $what),
        }
    };
}

pub mod fences;
mod guards;
mod inventory;

use std::time::Duration;

use guards::{
    a_given_up_payment_is_watched_until_its_watch_ends, a_payment_key_is_claimed_once,
    spending_windows_never_move_backwards, the_ceiling_counts_held_paybacks_and_caps_every_balance,
};
use inventory::{
    a_paid_order_cannot_be_paid_again, a_payment_after_the_ttl_is_refused, a_seat_is_held_then_sold_on_pay,
    an_order_reserves_everything_or_nothing, cancelling_an_order_gives_everything_back, inventory_records_round_trip,
    restock_adds_stock, stale_inventory_writes, the_queue_admits_k_and_promotes_in_order,
    the_sweeper_lists_unpaid_orders_past_their_ttl, unpaid_orders_expire_and_give_back,
};

use tally_core::app::{Command, Executed, Keyed, Outcome, Tally};
use tally_core::check::assert_holds;
use tally_core::idempotency::{
    Admission, Fingerprint, IdemConfig, IdemKey, IdemScope, LeaseToken, StoredResponse, admit,
};
use tally_core::ids::{OpId, PaymentId, TransferId, UserId};
use tally_core::ledger::Booking;
use tally_core::money::{Amount, Money};
use tally_core::payment::{Method, PaymentStatus};
use tally_core::store::{LockManager, Store, StoreError, Tx};
use tally_core::time::{Clock, ManualClock};
use tally_core::wallet::{Limits, Movement};
use tally_core::{Error, Render};

/// What differs, legitimately, between backends: what a write decided on a
/// stale read does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleWrite {
    /// It fails with `Conflict` (optimistic versions; PostgreSQL pessimistic,
    /// whose version guard backs up its row locks).
    Conflicts,
    /// Its change is applied to the current row as a delta, under the
    /// decision's guards, and its ledger lines are re-based (PostgreSQL atomic).
    Rebases,
    /// It is written blindly: the locked in-memory store relies on its lock
    /// manager, so this case has nothing to check there.
    Unchecked,
}

#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub stale_write: StaleWrite,
    /// Whether the backend loads without locks, so `Tx::reads_unchanged`
    /// has reads to check — and the suite may commit a change from a
    /// second transaction while one is open (false on a single pooled
    /// connection, where it cannot).
    pub checks_reads: bool,
}

fn amount(n: i64) -> Amount {
    Amount::new(n).expect("valid test amount")
}

fn render(result: &Result<Outcome, Error>) -> Option<StoredResponse> {
    let (status, body) = match result {
        Ok(outcome) => (201, format!("{outcome:?}")),
        Err(error) if error.is_refusal() => (409, format!("{error:?}")),
        Err(_) => return None,
    };
    Some(StoredResponse { status, content_type: "text/plain".into(), body: body.into_bytes() })
}

static RENDER: &Render = &render;

fn keyed(key: &str, seed: u8) -> Keyed<'static> {
    Keyed { key: IdemKey::new(key).expect("valid key"), fingerprint: Fingerprint([seed; 32]), render: RENDER }
}

async fn user<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, limits: Limits, balance: i64) -> UserId {
    // Unique per call across runs sharing a database: derive the key hash
    // from a fresh id the app generates.
    let probe = app.create_user("conformance", limits, fresh_hash()).await.expect("create user");
    if balance > 0 {
        app.execute(probe.id, Command::TopUp { amount: amount(balance) }, None).await.expect("top up");
    }
    probe.id
}

fn fresh_id() -> u128 {
    u128::from_le_bytes(fresh_hash()[..16].try_into().expect("16 bytes")) ^ 0x5eed << 64
}

fn fresh_hash() -> [u8; 32] {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Unique within a run (the counter) and across runs sharing a database
    // (the clock): a conformance run never collides with an earlier one.
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hash[8..24].copy_from_slice(&nanos.to_le_bytes());
    hash
}

async fn balance<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, user: UserId) -> Money {
    app.wallet(user).await.expect("wallet").wallet.balance
}

/// Runs every case; panics with the case's name on the first failure.
/// Returns the names of the cases run.
/// The merchant's default payback the suite's app must be configured with,
/// so that every payment case also moves a payback.
pub const PAYBACK_BPS: u32 = 1_000;

pub async fn run_all<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, profile: Profile) -> Vec<&'static str> {
    assert_eq!(app.config().payback_bps, PAYBACK_BPS, "the suite runs with a 10 % default payback");
    let mut ran = Vec::new();
    macro_rules! case {
        ($name:ident) => {
            $name(app, profile).await;
            ran.push(stringify!($name));
        };
    }
    case!(users_round_trip_and_authenticate);
    case!(rollback_writes_nothing);
    case!(a_transaction_reads_its_own_writes);
    case!(payment_lifecycle_round_trips_every_field);
    case!(ledger_pages_in_wallet_order);
    case!(idempotency_records_round_trip);
    case!(refused_commits_write_nothing);
    case!(stale_versions_conflict_where_checked);
    case!(a_refusals_reads_are_checked_where_loads_take_no_locks);
    case!(a_second_charge_of_a_payment_cannot_be_written);
    case!(a_wallet_position_is_booked_once);
    case!(expired_keys_are_reaped_live_ones_kept);
    // Inventory: products, events, seats, the queue, orders.
    case!(inventory_records_round_trip);
    case!(an_order_reserves_everything_or_nothing);
    case!(restock_adds_stock);
    case!(a_seat_is_held_then_sold_on_pay);
    case!(cancelling_an_order_gives_everything_back);
    case!(unpaid_orders_expire_and_give_back);
    case!(the_sweeper_lists_unpaid_orders_past_their_ttl);
    case!(the_queue_admits_k_and_promotes_in_order);
    case!(a_paid_order_cannot_be_paid_again);
    case!(a_payment_after_the_ttl_is_refused);
    case!(stale_inventory_writes);
    // Issue 10's rules where a store restates them (the atomic strategy's
    // guards): last, as the window case moves the clock weeks ahead.
    case!(a_payment_key_is_claimed_once);
    case!(a_given_up_payment_is_watched_until_its_watch_ends);
    case!(the_ceiling_counts_held_paybacks_and_caps_every_balance);
    case!(spending_windows_never_move_backwards);
    assert_holds(&app.snapshot().await.expect("snapshot"));
    ran
}

async fn users_round_trip_and_authenticate<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let limits = Limits {
        max_balance: Some(Money::new(9_000)),
        per_payment: Some(Money::new(800)),
        daily: Some(Money::new(2_000)),
        monthly: Some(Money::new(0)),
    };
    let hash = fresh_hash();
    let created = app.create_user("Kim Tally", limits, hash).await.expect("create");
    assert_eq!(app.authenticate(hash).await.expect("authenticate"), Some(created.clone()));
    assert_eq!(app.authenticate(fresh_hash()).await.expect("authenticate"), None);
    let view = app.wallet(created.id).await.expect("wallet");
    assert_eq!((view.wallet.balance, view.wallet.limits), (Money::ZERO, limits));
    // Two users cannot share a key hash.
    assert!(matches!(
        app.create_user("twin", Limits::default(), hash).await,
        Err(Error::Store(StoreError::Integrity(_)))
    ));
}

async fn rollback_writes_nothing<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let id = user(app, Limits::default(), 100).await;
    let before = app.snapshot().await.expect("snapshot");
    let mut tx = app.store().begin().await.expect("begin");
    let wallet = tx.wallet(id).await.expect("load").expect("wallet");
    let next = wallet.apply(Movement::TopUp(amount(5)), app.now()).expect("apply");
    tx.put_wallet(Some(&wallet), &next).await.expect("put");
    tx.rollback().await;
    // Dropping an uncommitted transaction rolls it back too.
    let mut tx = app.store().begin().await.expect("begin");
    let wallet = tx.wallet(id).await.expect("load").expect("wallet");
    tx.put_wallet(Some(&wallet), &next).await.expect("put");
    drop(tx);
    assert_eq!(app.snapshot().await.expect("snapshot"), before);
}

async fn a_transaction_reads_its_own_writes<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let id = user(app, Limits::default(), 10).await;
    let mut tx = app.store().begin().await.expect("begin");
    let wallet = tx.wallet(id).await.expect("load").expect("wallet");
    let booking = Booking { op: OpId(fresh_id()), origin: None, at: app.now() };
    let (next, transfer) =
        tally_core::decide::top_up(&wallet, amount(7), &booking, &mut || TransferId(fresh_id())).expect("decide");
    tx.put_wallet(Some(&wallet), &next).await.expect("put");
    tx.append_transfers(&[transfer]).await.expect("append");
    assert_eq!(tx.wallet(id).await.expect("reload"), Some(next));
    tx.commit().await.expect("commit");
    assert_eq!(balance(app, id).await, Money::new(17));
}

async fn payment_lifecycle_round_trips_every_field<S: Store, L: LockManager>(
    app: &Tally<S, L, ManualClock>,
    _: Profile,
) {
    let id = user(app, Limits::default(), 1_000).await;
    // The merchant's 10 % payback: 40.
    let create = Command::CreatePayment { amount: amount(400), method: Method::Wallet, confirm: false };
    let Ok(Executed::Fresh(Outcome::Payment(created))) = app.execute(id, create, None).await else {
        panic!("create payment")
    };
    assert_eq!(app.payment(id, created.id).await.expect("read"), created, "a payment round-trips exactly");
    let Ok(Executed::Fresh(Outcome::Payment(done))) =
        app.execute(id, Command::ConfirmPayment { payment: created.id, payment_key: None }, None).await
    else {
        panic!("confirm")
    };
    assert_eq!(done.status, PaymentStatus::Done);
    assert_eq!(app.payment(id, created.id).await.expect("read"), done);
    assert_eq!(balance(app, id).await, Money::new(640));
    app.execute(id, Command::CancelPayment { payment: created.id }, None).await.expect("cancel");
    assert_eq!(balance(app, id).await, Money::new(1_000));
    // Ledger lines come back exactly as booked, in wallet order.
    let page = app.ledger(id, 0, 100).await.expect("ledger");
    let seqs: Vec<u64> = page.entries.iter().map(|t| t.wallet.expect("wallet side").seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let afters: Vec<i64> = page.entries.iter().map(|t| t.wallet.expect("side").balance_after.minor_units()).collect();
    assert_eq!(afters, [1_000, 600, 640, 600, 1_000], "the reversal before the refund (hole 14)");
    assert!(page.entries[1..].iter().all(|t| t.payment == Some(created.id)));
    let other = user(app, Limits::default(), 0).await;
    assert_eq!(app.payment(other, created.id).await, Err(Error::NotFound));
}

async fn ledger_pages_in_wallet_order<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let id = user(app, Limits::default(), 0).await;
    for n in 1..=7 {
        app.execute(id, Command::TopUp { amount: amount(n) }, None).await.expect("top up");
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = app.ledger(id, after, 3).await.expect("page");
        seen.extend(page.entries.iter().map(|t| t.amount.minor_units()));
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
}

async fn idempotency_records_round_trip<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let id = user(app, Limits::default(), 0).await;
    let command = Command::TopUp { amount: amount(33) };
    let Ok(Executed::Fresh(outcome)) = app.execute(id, command.clone(), Some(keyed("conf-key", 1))).await else {
        panic!("first")
    };
    let replay = app.execute(id, command.clone(), Some(keyed("conf-key", 1))).await.expect("replay");
    assert_eq!(replay, Executed::Replayed(render(&Ok(outcome)).expect("stored")));
    assert_eq!(app.execute(id, command, Some(keyed("conf-key", 2))).await, Err(Error::IdempotencyKeyReused));
    // An in-flight record round-trips with its lease.
    let scope = IdemScope { user: id, key: IdemKey::new("conf-inflight").expect("key") };
    let config = IdemConfig { ttl: Duration::from_secs(600), lease: Duration::from_secs(60) };
    let Admission::Start(record) = admit(None, &scope, Fingerprint([9; 32]), LeaseToken(77), config, app.now()) else {
        panic!("admit")
    };
    let mut tx = app.store().begin().await.expect("begin");
    tx.put_idempotency(None, &record).await.expect("insert");
    tx.commit().await.expect("commit");
    let mut tx = app.store().begin().await.expect("begin");
    assert_eq!(tx.idempotency(&scope).await.expect("load"), Some(record.clone()));
    let done = record.complete(LeaseToken(77), render(&Err(Error::NotFound)).expect("refusal"), None).expect("ours");
    tx.put_idempotency(Some(&record), &done).await.expect("complete");
    tx.commit().await.expect("commit");
    let mut tx = app.store().begin().await.expect("begin");
    assert_eq!(tx.idempotency(&scope).await.expect("load"), Some(done));
    tx.rollback().await;
}

async fn refused_commits_write_nothing<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let id = user(app, Limits::default(), 50).await;
    let before = app.snapshot().await.expect("snapshot");
    // A negative balance is refused by the store itself (CHECK balance >= 0),
    // together with everything else the transaction wrote.
    let mut tx = app.store().begin().await.expect("begin");
    let wallet = tx.wallet(id).await.expect("load").expect("wallet");
    let mut broken = wallet.clone();
    broken.balance = Money::new(-1);
    broken.version += 1;
    let payment = tally_core::payment::Payment::new(
        PaymentId(u128::from(u64::MAX) << 3 | 5),
        id,
        amount(1),
        None,
        Method::Wallet,
        app.now(),
    )
    .expect("payment");
    tx.put_payment(None, &payment).await.expect("buffer payment");
    let result = match tx.put_wallet(Some(&wallet), &broken).await {
        Ok(()) => tx.commit().await,
        Err(error) => {
            tx.rollback().await;
            Err(error)
        }
    };
    // The schema refuses it (Integrity), or a guarded update finds its guard
    // false (Conflict, atomic strategy); either way nothing is written.
    assert!(matches!(result, Err(StoreError::Integrity(_) | StoreError::Conflict)), "{result:?}");
    assert_eq!(app.snapshot().await.expect("snapshot"), before);
}

async fn stale_versions_conflict_where_checked<S: Store, L: LockManager>(
    app: &Tally<S, L, ManualClock>,
    profile: Profile,
) {
    if profile.stale_write == StaleWrite::Unchecked {
        return;
    }
    let id = user(app, Limits::default(), 100).await;
    let store = app.store();
    let mut first = store.begin().await.expect("begin");
    let loaded = first.wallet(id).await.expect("load").expect("wallet");
    first.rollback().await;
    // Someone else commits a change after our read.
    app.execute(id, Command::TopUp { amount: amount(1) }, None).await.expect("top up");
    // Our decision, on the stale read: a top-up of 2 and its ledger line.
    let booking = Booking { op: OpId(fresh_id()), origin: None, at: app.now() };
    let (next, transfer) =
        tally_core::decide::top_up(&loaded, amount(2), &booking, &mut || TransferId(fresh_id())).expect("decide");
    let mut stale = store.begin().await.expect("begin");
    let mut result = stale.put_wallet(Some(&loaded), &next).await;
    if result.is_ok() {
        result = stale.append_transfers(&[transfer]).await;
    }
    let result = match result {
        Ok(()) => stale.commit().await,
        Err(error) => {
            stale.rollback().await;
            Err(error)
        }
    };
    match profile.stale_write {
        StaleWrite::Conflicts => {
            assert_eq!(result, Err(StoreError::Conflict));
            assert_eq!(balance(app, id).await, Money::new(101));
        }
        StaleWrite::Rebases => {
            assert_eq!(result, Ok(()));
            assert_eq!(balance(app, id).await, Money::new(103));
            // The line says what really happened: 103 after it, third in line.
            let page = app.ledger(id, 2, 10).await.expect("ledger");
            let side = page.entries[0].wallet.expect("wallet side");
            assert_eq!((side.balance_after, side.seq), (Money::new(103), 3));
        }
        StaleWrite::Unchecked => unreachable!("returned above"),
    }
}

/// Hole 12: a refusal writes nothing, so only `Tx::reads_unchanged` tells
/// whether it was decided on reads still current. Nothing changed, or only
/// the transaction's own writes: unchanged. Where loads take no locks, a
/// change another transaction commits after the read is a conflict, and the
/// use case decides again.
async fn a_refusals_reads_are_checked_where_loads_take_no_locks<S: Store, L: LockManager>(
    app: &Tally<S, L, ManualClock>,
    profile: Profile,
) {
    let id = user(app, Limits::default(), 100).await;
    let create = Command::CreatePayment { amount: amount(500), method: Method::Wallet, confirm: false };
    let Ok(Executed::Fresh(Outcome::Payment(payment))) = app.execute(id, create, None).await else {
        panic!("create the payment")
    };
    let mut tx = app.store().begin().await.expect("begin");
    let wallet = tx.wallet(id).await.expect("load").expect("wallet");
    let loaded = tx.payment(payment.id).await.expect("load").expect("payment");
    assert_eq!(wallet.balance, Money::new(100), "too little to pay 500: a refusal's reads");
    assert_eq!(tx.reads_unchanged().await, Ok(()), "nothing moved");
    let cancelled = loaded.transition(tally_core::payment::PaymentEvent::Cancel, app.now()).expect("cancel");
    tx.put_payment(Some(&loaded), &cancelled).await.expect("write");
    assert_eq!(tx.reads_unchanged().await, Ok(()), "its own write is no change");
    if profile.checks_reads {
        // Another transaction commits a change to the wallet after our read.
        app.execute(id, Command::TopUp { amount: amount(400) }, None).await.expect("top up");
        assert_eq!(tx.reads_unchanged().await, Err(StoreError::Conflict), "the wallet moved since");
    }
    tx.rollback().await;
    let status = app.payment(id, payment.id).await.expect("payment").status;
    assert_eq!(status, PaymentStatus::Wait, "nothing of the checked transaction was kept");
}

async fn a_second_charge_of_a_payment_cannot_be_written<S: Store, L: LockManager>(
    app: &Tally<S, L, ManualClock>,
    _: Profile,
) {
    let id = user(app, Limits::default(), 500).await;
    let create = Command::CreatePayment { amount: amount(100), method: Method::Wallet, confirm: false };
    let Ok(Executed::Fresh(Outcome::Payment(payment))) = app.execute(id, create, None).await else { panic!("create") };
    app.execute(id, Command::ConfirmPayment { payment: payment.id, payment_key: None }, None).await.expect("confirm");
    let snapshot = app.snapshot().await.expect("snapshot");
    let mut charge = snapshot.transfers.iter().find(|t| t.payment == Some(payment.id)).expect("charge").clone();
    charge.id = tally_core::ids::TransferId(charge.id.0 ^ 1 << 100);
    if let Some(side) = charge.wallet.as_mut() {
        side.seq += 10;
    }
    let result = append_alone(app, charge).await;
    assert!(matches!(result, Err(StoreError::Integrity(_))), "{result:?}");
    assert_eq!(balance(app, id).await, Money::new(410), "paid 100, 10 back");
}

/// One ledger line per (wallet, position), like the schema's unique index
/// `transfers_wallet_position`: two transactions that both read a wallet
/// before either committed would book the same position, and the second is
/// refused rather than silently losing the first's write.
async fn a_wallet_position_is_booked_once<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let id = user(app, Limits::default(), 0).await;
    app.execute(id, Command::TopUp { amount: amount(100) }, None).await.expect("top up");
    let snapshot = app.snapshot().await.expect("snapshot");
    let mut again = snapshot.transfers.iter().find(|t| t.wallet.is_some_and(|w| w.user == id)).expect("line").clone();
    assert_eq!(again.wallet.map(|w| w.seq), Some(1), "the wallet's first line");
    again.id = TransferId(again.id.0 ^ 1 << 100);
    again.op = OpId(again.op.0 ^ 1 << 100);
    let result = append_alone(app, again).await;
    assert!(matches!(result, Err(StoreError::Integrity(_))), "{result:?}");
    assert_eq!(balance(app, id).await, Money::new(100));
}

/// Appends `line` in a transaction of its own: what its commit (or, on
/// PostgreSQL, its insert) answered.
async fn append_alone<S: Store, L: LockManager>(
    app: &Tally<S, L, ManualClock>,
    line: tally_core::ledger::Transfer,
) -> Result<(), StoreError> {
    let mut tx = app.store().begin().await.expect("begin");
    match tx.append_transfers(&[line]).await {
        Ok(()) => tx.commit().await,
        Err(error) => {
            // Release the connection before asking the pool for another.
            tx.rollback().await;
            Err(error)
        }
    }
}

async fn expired_keys_are_reaped_live_ones_kept<S: Store, L: LockManager>(app: &Tally<S, L, ManualClock>, _: Profile) {
    let id = user(app, Limits::default(), 0).await;
    let command = Command::TopUp { amount: amount(3) };
    app.execute(id, command.clone(), Some(keyed("reap-old", 3))).await.expect("old");
    app.clock().advance(app.config().idempotency.ttl + Duration::from_secs(1));
    app.execute(id, command.clone(), Some(keyed("reap-new", 3))).await.expect("new");
    // Reap everything expired (other cases' keys included), in batches.
    let mut reaped = 0;
    loop {
        let batch = app.reap_idempotency(2).await.expect("reap");
        reaped += batch;
        if batch < 2 {
            break;
        }
    }
    assert!(reaped >= 1, "the old key was reaped");
    let mut tx = app.store().begin().await.expect("begin");
    let old = tx.idempotency(&IdemScope { user: id, key: IdemKey::new("reap-old").expect("key") }).await.expect("load");
    let new = tx.idempotency(&IdemScope { user: id, key: IdemKey::new("reap-new").expect("key") }).await.expect("load");
    tx.rollback().await;
    assert!(old.is_none() && new.is_some());
    assert_eq!(balance(app, id).await, Money::new(6));
    let _ = app.clock().now();
}
