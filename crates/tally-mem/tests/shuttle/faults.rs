//! Commits that fail under concurrency (issue 14, item 4): the in-memory
//! store's fault hook makes the first commits after setup ambiguous
//! (applied, reported failed) or lost (not applied), whichever requests
//! shuttle lets commit first. Clients retry with the same key, as a client
//! that got no clear answer must; each request then takes effect exactly
//! once: a retry after an applied commit replays, after a lost one runs.

use std::sync::Mutex;

use tally_core::store::StoreError;
use tally_mem::CommitFault;

use super::*;

type App<L> = Arc<Tally<MemStore, L, ManualClock>>;

/// Makes the next commits fail as `faults` says, in commit order.
pub(super) fn fail_next_commits(store: &MemStore, faults: Vec<CommitFault>) {
    let faults = Mutex::new(faults.into_iter());
    store.set_commit_faults(Some(Box::new(move || faults.lock().unwrap().next().unwrap_or(CommitFault::None))));
}

fn ambiguous(answer: &Result<Executed, Error>) -> bool {
    *answer == Err(Error::Store(StoreError::Ambiguous))
}

fn lost(answer: &Result<Executed, Error>) -> bool {
    matches!(answer, Err(Error::Store(StoreError::Unavailable(_))))
}

/// Sends `command` under `key` until it gets an answer that is not a
/// failed commit (at most once per injected fault, plus one); returns every
/// answer in order.
fn until_answered<L: LockManager>(
    app: &App<L>,
    user: UserId,
    key: &str,
    command: &Command,
    faults: usize,
) -> Vec<Result<Executed, Error>> {
    let mut answers = Vec::new();
    for _ in 0..=faults {
        let answer = block_on(app.execute(user, command.clone(), Some(keyed(key, command))));
        let failed = ambiguous(&answer) || lost(&answer);
        answers.push(answer);
        if !failed {
            break;
        }
    }
    answers
}

/// Invariant 2 through failed commits: THREADS keyed top-ups (100, 200,
/// 300) on one wallet while the first commit after setup is ambiguous and
/// the second lost. Per key: exactly one execution (a fresh answer or an
/// ambiguous commit, which applied); after an ambiguous answer the retry
/// replays, after a lost one it runs. The balance is exactly 600, one
/// transfer per top-up, whichever requests the faults hit.
pub(super) fn top_ups_through_failed_commits<L: LockManager>(app: App<L>) {
    let user = block_on(user_with(&app, Limits::default(), 0));
    let faults = vec![CommitFault::Ambiguous, CommitFault::Lost];
    let injected = faults.len();
    fail_next_commits(app.store(), faults);
    let requests: Vec<(String, Command)> =
        (1..=THREADS as i64).map(|i| (format!("t{i}"), Command::TopUp { amount: amount(i * 100) })).collect();
    let answers = race(
        &app,
        requests
            .iter()
            .cloned()
            .map(|(key, command)| move |app: App<L>| until_answered(&app, user, &key, &command, injected))
            .collect(),
    );
    let mut failures = 0;
    for (key, answers) in requests.iter().map(|(key, _)| key).zip(&answers) {
        let executions = answers.iter().filter(|a| matches!(a, Ok(Executed::Fresh(_))) || ambiguous(a)).count();
        assert_eq!(executions, 1, "{key}: one execution: {answers:?}");
        let last = answers.last().unwrap();
        assert!(matches!(last, Ok(Executed::Fresh(_) | Executed::Replayed(_))), "{key}: answered: {answers:?}");
        for pair in answers.windows(2) {
            if ambiguous(&pair[0]) {
                assert!(matches!(&pair[1], Ok(Executed::Replayed(r)) if r.status == 201), "{key}: {answers:?}");
            } else {
                assert!(lost(&pair[0]), "{key}: only a failed commit is retried: {answers:?}");
                assert!(!matches!(&pair[1], Ok(Executed::Replayed(_))), "{key}: nothing to replay: {answers:?}");
            }
        }
        failures += answers.len() - 1;
    }
    assert_eq!(failures, injected, "every injected fault answered somebody: {answers:?}");
    block_on(async {
        let snapshot = app.snapshot().await.unwrap();
        assert_eq!(balance(&app, user).await, Money::new(600), "{answers:?}");
        assert_eq!(snapshot.transfers.len(), THREADS, "one transfer per top-up: {answers:?}");
        assert_holds(&snapshot);
    });
}

/// No double charge through failed commits: THREADS keyed confirms of
/// three wallet payments of 100 (payback 10) on a balance of 250 while the
/// first commit after setup is ambiguous and the second lost. Each client
/// retries with its key until it has an answer (a refusal whose storing
/// commit failed answers busy: retried too). Exactly two payments are done
/// and charged once each, the third refused `insufficient_balance`; every
/// key's last answer is its payment's (201 done, or 409 refused), and a
/// retry after an ambiguous commit replays it.
pub(super) fn confirms_through_failed_commits<L: LockManager>(app: App<L>) {
    let (user, ids) = block_on(user_with_payments(&app, (Limits::default(), 250), THREADS, (100, 10)));
    let faults = vec![CommitFault::Ambiguous, CommitFault::Lost];
    let injected = faults.len();
    fail_next_commits(app.store(), faults);
    let requests: Vec<(String, Command)> =
        ids.iter().enumerate().map(|(i, &id)| (format!("c{i}"), confirm(id))).collect();
    let answers = race(
        &app,
        requests
            .iter()
            .cloned()
            .map(|(key, command)| {
                move |app: App<L>| {
                    let mut answers = Vec::new();
                    // Each fault fails at most one attempt; a busy answer
                    // comes only from a fault on a refusal's commit.
                    for _ in 0..=injected {
                        let answer = block_on(app.execute(user, command.clone(), Some(keyed(&key, &command))));
                        let failed = ambiguous(&answer) || lost(&answer) || matches!(answer, Err(Error::Busy(_)));
                        answers.push(answer);
                        if !failed {
                            break;
                        }
                    }
                    answers
                }
            })
            .collect(),
    );
    let broke = Err(Error::Wallet(WalletError::InsufficientBalance));
    block_on(async {
        let mut done = 0;
        for (&id, (key, answers)) in ids.iter().zip(requests.iter().map(|(key, _)| key).zip(&answers)) {
            let status = payment(&app, user, id).await.status;
            let last = answers.last().unwrap();
            match status {
                PaymentStatus::Done => {
                    done += 1;
                    assert!(
                        is_done(last) || matches!(last, Ok(Executed::Replayed(r)) if r.status == 201),
                        "{key}: {answers:?}"
                    );
                }
                PaymentStatus::Wait => assert!(
                    *last == broke || matches!(last, Ok(Executed::Replayed(r)) if r.status == 409),
                    "{key}: {answers:?}"
                ),
                other => panic!("{key}: {other:?} {answers:?}"),
            }
            for pair in answers.windows(2) {
                if ambiguous(&pair[0]) {
                    assert!(matches!(&pair[1], Ok(Executed::Replayed(_))), "{key}: replays: {answers:?}");
                }
            }
        }
        assert_eq!(done, 2, "{answers:?}");
        let snapshot = app.snapshot().await.unwrap();
        let charges = snapshot.transfers.iter().filter(|t| t.kind == TransferKind::Payment).count();
        assert_eq!(charges, 2, "charged once each: {answers:?}");
        assert_eq!(balance(&app, user).await, Money::new(250 - 2 * (100 - 10)));
        assert_holds(&snapshot);
    });
}
