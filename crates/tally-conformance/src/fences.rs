//! Fencing tokens: what a store that checks them ([`Store::begin_locked`])
//! must refuse, and what it must let through. Sequential cases, through the
//! store only: tokens are handed in by hand, as a lock manager with leases
//! would hand in a paused holder's and its successor's.
//!
//! Each case locks wallets of fresh users, so tokens never meet another
//! case's (or an earlier run's) claims. The tokens are above any a lock
//! manager issues in a test ([`T`] and up): the app that made the user may
//! have claimed its own token on the wallet already.

use std::time::Duration;

use tally_core::money::Money;
use tally_core::store::{Fences, LockKey, LockManager, LockSet, Store, StoreError, Tx};
use tally_core::wallet::{Limits, Movement};

use crate::{amount, balance, user};

type App<S, L> = tally_core::app::Tally<S, L, tally_core::time::ManualClock>;

/// The case's token 0: past every token a test's lock manager issues
/// (the Redis manager's start at its clock in microseconds, about 2^51).
const T: u64 = 1 << 60;

/// How long `begin_locked` may wait for a key (nothing else holds these).
const WAIT: Duration = Duration::from_secs(5);

/// What a store does when a later grant claims a key whose claim an open
/// transaction still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overtaking {
    /// The later claim goes through and the open transaction's commit is
    /// refused (the in-memory store, which has no row locks).
    RefusesTheCommit,
    /// The later claim waits for the open transaction to end (PostgreSQL:
    /// the claim's row stays locked until commit). Not sequential, so the
    /// case is left to the backend's own tests
    /// (`tests/e2e/fences.rs`: a holder paused mid-transaction).
    Waits,
}

/// The cases, in order. Returns their names.
pub async fn run_all<S: Store, L: LockManager>(app: &App<S, L>, overtaking: Overtaking) -> Vec<&'static str> {
    let mut ran = Vec::new();
    macro_rules! case {
        ($name:ident) => {
            $name(app).await;
            ran.push(stringify!($name));
        };
    }
    case!(an_older_token_is_refused_at_begin);
    if overtaking == Overtaking::RefusesTheCommit {
        case!(a_transaction_overtaken_by_a_later_claim_commits_nothing);
    }
    case!(one_stale_key_refuses_the_whole_transaction);
    case!(an_equal_token_begins_again);
    case!(empty_fences_are_never_refused);
    ran
}

fn wallet_key(user: tally_core::ids::UserId) -> LockKey {
    LockKey::Wallet(user)
}

fn fences(tokens: &[(&LockKey, u64)]) -> Fences {
    Fences::new(tokens.iter().map(|(key, token)| ((*key).clone(), *token)))
}

/// Begins under `tokens` (on their keys).
async fn begin<S: Store, L: LockManager>(app: &App<S, L>, tokens: &[(&LockKey, u64)]) -> Result<S::Tx, StoreError> {
    let keys = LockSet::new(tokens.iter().map(|(key, _)| (*key).clone()));
    app.store().begin_locked(&keys, &fences(tokens), WAIT).await
}

/// Tops `user`'s wallet up by `n` in `tx`, without committing.
async fn top_up_in<T: Tx>(tx: &mut T, user: tally_core::ids::UserId, n: i64, now: tally_core::time::Timestamp) {
    let wallet = tx.wallet(user).await.expect("load").expect("wallet");
    let next = wallet.apply(Movement::TopUp(amount(n)), now).expect("apply");
    tx.put_wallet(Some(&wallet), &next).await.expect("put");
}

/// (a) Token 2 claimed and committed; token 1 on the same key is refused at
/// begin, and nothing of its holder lands.
async fn an_older_token_is_refused_at_begin<S: Store, L: LockManager>(app: &App<S, L>) {
    let id = user(app, Limits::default(), 100).await;
    let key = wallet_key(id);
    let mut tx = begin(app, &[(&key, T + 2)]).await.expect("the first claim of a key");
    top_up_in(&mut tx, id, 5, app.now()).await;
    tx.commit().await.expect("the latest claim commits");
    let before = app.snapshot().await.expect("snapshot");
    let refused = begin(app, &[(&key, T + 1)]).await.map(drop);
    assert_eq!(refused, Err(StoreError::Fenced), "a token older than the claimed one");
    assert_eq!(app.snapshot().await.expect("snapshot"), before);
    assert_eq!(balance(app, id).await, Money::new(105));
}

/// (a) The paused holder's transaction began with token 1; its successor
/// claims token 2 and commits; the paused one's commit is refused and
/// applies nothing.
async fn a_transaction_overtaken_by_a_later_claim_commits_nothing<S: Store, L: LockManager>(app: &App<S, L>) {
    let id = user(app, Limits::default(), 100).await;
    let key = wallet_key(id);
    let mut paused = begin(app, &[(&key, T + 1)]).await.expect("the first claim");
    top_up_in(&mut paused, id, 7, app.now()).await;
    let mut successor = begin(app, &[(&key, T + 2)]).await.expect("a later grant's claim");
    top_up_in(&mut successor, id, 11, app.now()).await;
    successor.commit().await.expect("the latest claim commits");
    assert_eq!(paused.commit().await, Err(StoreError::Fenced), "a commit whose claim was overtaken");
    assert_eq!(balance(app, id).await, Money::new(111), "only the successor's top-up landed");
}

/// (b) Several keys, one of them stale: the whole transaction is refused,
/// and it claims none of its keys (an older token on the fresh key still
/// begins).
async fn one_stale_key_refuses_the_whole_transaction<S: Store, L: LockManager>(app: &App<S, L>) {
    let (a, b) = (user(app, Limits::default(), 10).await, user(app, Limits::default(), 10).await);
    let (key_a, key_b) = (wallet_key(a), wallet_key(b));
    begin(app, &[(&key_a, T + 5)]).await.expect("claim").commit().await.expect("commit");
    let refused = begin(app, &[(&key_a, T + 4), (&key_b, T + 6)]).await.map(drop);
    assert_eq!(refused, Err(StoreError::Fenced), "one stale key among several");
    let mut tx = begin(app, &[(&key_b, T + 3)]).await.expect("the refused transaction claimed nothing");
    top_up_in(&mut tx, b, 1, app.now()).await;
    tx.commit().await.expect("commit");
    assert_eq!((balance(app, a).await, balance(app, b).await), (Money::new(10), Money::new(11)));
}

/// (c) One grant may run several transactions: the same token begins and
/// commits again.
async fn an_equal_token_begins_again<S: Store, L: LockManager>(app: &App<S, L>) {
    let id = user(app, Limits::default(), 10).await;
    let key = wallet_key(id);
    for _ in 0..2 {
        let mut tx = begin(app, &[(&key, T + 7)]).await.expect("the same grant's token");
        top_up_in(&mut tx, id, 2, app.now()).await;
        tx.commit().await.expect("the same grant's commit");
    }
    assert_eq!(balance(app, id).await, Money::new(14));
}

/// (d) Without tokens (a lock manager without leases) nothing is refused,
/// whatever was claimed before.
async fn empty_fences_are_never_refused<S: Store, L: LockManager>(app: &App<S, L>) {
    let id = user(app, Limits::default(), 10).await;
    let key = wallet_key(id);
    begin(app, &[(&key, T + 9)]).await.expect("claim").commit().await.expect("commit");
    let mut tx = begin(app, &[]).await.expect("no tokens, no refusal");
    top_up_in(&mut tx, id, 3, app.now()).await;
    tx.commit().await.expect("no tokens, no refusal at commit");
    let mut tx = app.store().begin().await.expect("a plain begin");
    top_up_in(&mut tx, id, 4, app.now()).await;
    tx.commit().await.expect("a plain commit");
    assert_eq!(balance(app, id).await, Money::new(17));
}
