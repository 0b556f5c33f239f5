//! Lock waits that time out (issue 14, item 4), on the locked backend with a
//! [`TimerClock`]: shuttle decides when each waiter's timer fires, so the
//! same scenario sees requests granted, requests timed out, and timeouts
//! racing the hand-off. A timed-out request answers `lock wait timed out`
//! and changes nothing; its client's retry with the same key runs it, once;
//! an answered request's retry replays its answer.

use tally_core::app::Config;
use tally_core::ids::SeqIds;
use tally_core::store::{LockKey, LockSet};
use tally_core::time::Clock as _;
use tally_mem::{Concurrency, MemLocks};

use super::gateway::gateway_confirm;
use super::timer::{Branches, TimerClock};
use super::*;

pub(super) type Timed<G = tally_core::gateway::NoGateway> = Tally<MemStore, MemLocks<TimerClock>, TimerClock, G>;

/// The locked backend whose lock waits time out on shuttle's timers; also
/// returns the lock manager, for scenarios that hold a record themselves.
pub(super) fn timed() -> (Arc<Timed>, MemLocks<TimerClock>) {
    let clock = TimerClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    let store = MemStore::new(Concurrency::Locked);
    (Arc::new(Tally::new(store, locks.clone(), clock, Arc::new(SeqIds::new(1)), config())), locks)
}

/// [`timed`] with the in-memory card gateway.
pub(super) fn timed_with_gateway() -> (Arc<Timed<MemGateway>>, MemGateway) {
    let clock = TimerClock::new(START);
    let locks = MemLocks::new(clock.clone(), tally_lock::Config::default());
    let gateway = MemGateway::new();
    let store = MemStore::new(Concurrency::Locked);
    let config = Config { ..config() };
    let app = Tally::new(store, locks, clock, Arc::new(SeqIds::new(1)), config).with_gateway(gateway.clone());
    (Arc::new(app), gateway)
}

fn timed_out() -> Result<Executed, Error> {
    Err(Error::Busy("lock wait timed out"))
}

fn run_keyed<G: Gateway>(app: &Timed<G>, user: UserId, key: &str, command: &Command) -> Result<Executed, Error> {
    block_on(app.execute(user, command.clone(), Some(keyed(key, command))))
}

/// The client's retry with the same key after the race, run alone (no
/// contention: no timer): an answered request replays its answer byte for
/// byte, a timed-out one runs now.
async fn retry_exactly<G: Gateway>(
    app: &Timed<G>,
    user: UserId,
    key: &str,
    command: &Command,
    first: &Result<Executed, Error>,
) {
    let again = app.execute(user, command.clone(), Some(keyed(key, command))).await;
    match first {
        Ok(Executed::Fresh(outcome)) => {
            assert_eq!(again, Ok(Executed::Replayed(render(&Ok(outcome.clone())).unwrap())), "{key}: replayed")
        }
        first => {
            let fenced = Err(Error::Store(tally_core::store::StoreError::Fenced));
            assert!(matches!(first, Err(Error::Busy(_))) || *first == fenced, "{key}: {first:?}");
            assert!(matches!(again, Ok(Executed::Fresh(_))), "{key}: a timed-out request runs on retry: {again:?}");
        }
    }
}

fn top_up(minor_units: i64) -> Command {
    Command::TopUp { amount: amount(minor_units) }
}

/// THREADS keyed top-ups of 100, 200, 300 on one wallet, each lock wait
/// timing out whenever shuttle fires its timer: every request lands or
/// answers `lock wait timed out`; the balance is exactly the sum of those
/// that landed (a timed-out one moved nothing), then each client's retry
/// with its key makes it exactly 600, one transfer per top-up.
pub(super) fn top_ups_land_or_time_out((app, _locks): (Arc<Timed>, MemLocks<TimerClock>), seen: &Branches<2>) {
    let (results, _) = top_ups_land_exactly(&app, |r| *r == timed_out());
    seen.saw(usize::from(results.iter().any(|r| r.is_err())));
}

/// The top-ups again under a 1 s lock lease, waiting up to a minute: a
/// waiter's lease watch is a timer too, so in some schedules it fires, the
/// clock reaches the holder's lease end, and the waiter takes the wallet
/// while the holder, paused by the scheduler mid-transaction, is a zombie.
/// Its commit is fenced (retried under new locks), so no top-up is lost or
/// applied twice (under the mutant `fence_unchecked` the zombie's commit
/// books a second line at a wallet position the successor took, which the
/// store refuses as PostgreSQL's unique index does; before the store had
/// that index, the zombie's write lost the successor's top-up). An answer is
/// a top-up landed, or busy (a wait timed out, or the locks kept being
/// lost), never a bare `Fenced`: a holder paused after its grant but before
/// its transaction began meets its successor's claim at `begin_locked`, and
/// runs again under new locks, as after a commit's `Fenced` (this scenario
/// found it answered 503 instead). Retries make it exactly 600.
pub(super) fn zombie_top_ups_land_once((app, _locks): (Arc<Timed>, MemLocks<TimerClock>), seen: &Branches<2>) {
    let unlanded = |r: &Result<Executed, Error>| matches!(r, Err(Error::Busy(_)));
    let (_, moved) = top_ups_land_exactly(&app, unlanded);
    seen.saw(usize::from(moved > Duration::ZERO && moved < LOCK_WAIT_LONG));
}

const LOCK_WAIT_LONG: Duration = Duration::from_secs(60);

/// [`timed`] whose grants have a 1 s lease (as the simulation's servers
/// have), with lock waits of [`LOCK_WAIT_LONG`], so that a lease runs out
/// long before a wait times out.
pub(super) fn timed_with_lease() -> (Arc<Timed>, MemLocks<TimerClock>) {
    let clock = TimerClock::new(START);
    let locks = MemLocks::with_lease(clock.clone(), tally_lock::Config::default(), Duration::from_secs(1));
    let store = MemStore::new(Concurrency::Locked);
    let config = Config { lock_wait: LOCK_WAIT_LONG, ..config() };
    (Arc::new(Tally::new(store, locks.clone(), clock, Arc::new(SeqIds::new(1)), config)), locks)
}

/// Races the three keyed top-ups; `unlanded` says which other answers are
/// allowed. Returns the answers and how far the clock moved during the race.
fn top_ups_land_exactly(
    app: &Arc<Timed>,
    unlanded: impl Fn(&Result<Executed, Error>) -> bool,
) -> (Vec<Result<Executed, Error>>, Duration) {
    let user = block_on(user_with(app, Limits::default(), 0));
    let requests: Vec<(String, Command)> = (1..=THREADS as i64).map(|i| (format!("t{i}"), top_up(i * 100))).collect();
    let results = race(
        app,
        requests
            .iter()
            .cloned()
            .map(|(key, command)| move |app: Arc<Timed>| run_keyed(&app, user, &key, &command))
            .collect(),
    );
    let moved = Duration::from_millis(u64::try_from(app.clock().now().0 - START.0).expect("time never goes back"));
    let landed: Vec<bool> = results.iter().map(|r| matches!(r, Ok(Executed::Fresh(_)))).collect();
    assert!(results.iter().zip(&landed).all(|(r, &ok)| ok || unlanded(r)), "{results:?}");
    block_on(async {
        let sum: i64 = (1..=THREADS as i64).zip(&landed).filter(|(_, ok)| **ok).map(|(i, _)| i * 100).sum();
        assert_eq!(balance(app, user).await, Money::new(sum), "only what landed moved: {results:?}");
        for ((key, command), first) in requests.iter().zip(&results) {
            retry_exactly(app, user, key, command, first).await;
        }
        let snapshot = app.snapshot().await.unwrap();
        assert_eq!(balance(app, user).await, Money::new(600));
        assert_eq!(snapshot.transfers.len(), THREADS, "one transfer per top-up");
        assert_holds(&snapshot);
    });
    (results, moved)
}

/// A holder that keeps the wallet until request A has answered: A's lock
/// wait must time out (a lock manager that waits without a deadline
/// deadlocks here: the mutant `lock_wait_unbounded`). Request B, on the same
/// wallet, lands after the holder lets go or times out too. Retries make the
/// balance exactly 300.
pub(super) fn a_stuck_holder_times_requests_out((app, locks): (Arc<Timed>, MemLocks<TimerClock>), seen: &Branches<2>) {
    let user = block_on(user_with(&app, Limits::default(), 0));
    let held = block_on(locks.acquire(&LockSet::new([LockKey::Wallet(user)]), Duration::ZERO)).expect("free wallet");
    let (a, b) = (top_up(100), top_up(200));
    let first = {
        let (app, a) = (app.clone(), a.clone());
        thread::spawn(move || run_keyed(&app, user, "a", &a))
    };
    let second = {
        let (app, b) = (app.clone(), b.clone());
        thread::spawn(move || run_keyed(&app, user, "b", &b))
    };
    let holder = thread::spawn(move || {
        let answered = first.join().unwrap();
        drop(held);
        answered
    });
    let (answered_a, answered_b) = (holder.join().unwrap(), second.join().unwrap());
    assert_eq!(answered_a, timed_out(), "the wallet was held until A answered");
    let b_landed = matches!(answered_b, Ok(Executed::Fresh(_)));
    assert!(b_landed || answered_b == timed_out(), "{answered_b:?}");
    seen.saw(usize::from(!b_landed));
    block_on(async {
        assert_eq!(balance(&app, user).await, Money::new(if b_landed { 200 } else { 0 }));
        retry_exactly(&app, user, "a", &a, &answered_a).await;
        retry_exactly(&app, user, "b", &b, &answered_b).await;
        assert_eq!(balance(&app, user).await, Money::new(300));
        assert_holds(&app.snapshot().await.unwrap());
    });
}

/// A keyed gateway confirm racing a keyed top-up on its wallet, either lock
/// wait timing out: before the intent (nothing sent, the payment waits) or
/// after the card was charged, while recording the verdict (the payment
/// stays `confirming`, the key is freed). The retry with the same key then
/// finishes it by a lookup — never a second confirm — so the card is
/// charged once, the payback credited once, and the top-up lands once.
pub(super) fn gateway_confirm_times_out_recoverably(
    (app, gateway): (Arc<Timed<MemGateway>>, MemGateway),
    seen: &Branches<4>,
) {
    let (user, id) = block_on(user_with_gateway_payment(&app));
    let (pay, top) = (gateway_confirm(id), top_up(100));
    let results = race(
        &app,
        vec![(String::from("pay"), pay.clone()), (String::from("top"), top.clone())]
            .into_iter()
            .map(|(key, command)| move |app: Arc<Timed<MemGateway>>| run_keyed(&app, user, &key, &command))
            .collect(),
    );
    assert!(is_done(&results[0]) || results[0] == timed_out(), "{results:?}");
    assert!(matches!(results[1], Ok(Executed::Fresh(_))) || results[1] == timed_out(), "{results:?}");
    block_on(async {
        let status = payment(&app, user, id).await.status;
        let sent = gateway.confirms_received("pk-1");
        seen.saw(match (results[0] == timed_out(), results[1] == timed_out(), sent) {
            (false, false, _) => 0,
            (true, _, 0) => 1,
            (true, _, _) => 2,
            (false, true, _) => 3,
        });
        if results[0] == timed_out() {
            // Timed out before the intent (nothing sent) or after the charge.
            assert!(
                (status, sent) == (PaymentStatus::Wait, 0) || (status, sent) == (PaymentStatus::Confirming, 1),
                "{status:?} {sent}"
            );
        } else {
            assert_eq!((status, sent), (PaymentStatus::Done, 1));
        }
        retry_exactly(&app, user, "pay", &pay, &results[0]).await;
        retry_exactly(&app, user, "top", &top, &results[1]).await;
        assert_eq!(payment(&app, user, id).await.status, PaymentStatus::Done);
        assert_eq!(gateway.confirms_received("pk-1"), 1, "never a second confirm");
        assert_eq!(gateway.charge("pk-1"), Some((500, false)));
        let snapshot = app.snapshot().await.unwrap();
        let booked: Vec<_> = snapshot.transfers.iter().filter(|t| t.payment == Some(id)).map(|t| t.kind).collect();
        assert_eq!(booked, [TransferKind::Payment, TransferKind::Payback], "charged once, paid back once");
        assert_eq!(balance(&app, user).await, Money::new(50 + 100));
        assert_holds(&snapshot);
    });
}
