//! Running one batch: one lock set, one transaction, the same use-case
//! code for every request, one commit, then every answer.
//!
//! ```text
//! lock keys of every request (peeks) ∪ their idempotency keys → one LockSet
//! lock (global order) → begin → Overlay → preload every locked record, in order
//!     (one multi-record read per kind for wallets, payments, idempotency records)
//! for each request, in arrival order:
//!     mark; run_in (admission + effect + stored answer, as alone)
//!     refusal  → rollback_to(mark); store the refusal under its key (no extra commit)
//!     conflict → rollback_to(mark); the request runs alone afterwards
//! flush (each record once; one multi-record write per kind) → commit once → answer each
//! ```
//!
//! A conflict at commit runs the whole batch again (bounded, like `run`);
//! an unknown commit outcome answers every request of the batch 503 — each
//! key was written in that commit, so a retry replays or runs exactly once.

use super::*;
use crate::overlay::Overlay;
use crate::store::BATCH_LOCK_SET_SIZE_MAX;

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// Runs `batch` and answers every request of it (through its slot).
    /// `commit_started` is called as a commit is sent: the queue's next batch
    /// may then run its statements (`Config::batch_overlap`).
    pub(super) async fn run_batch(&self, batch: &[Entry], commit_started: &mut (dyn FnMut() + Send)) {
        let mut keyed = true;
        for _ in 0..self.config.attempts_max {
            match self.try_batch(batch, keyed, commit_started).await {
                Attempt::Answered => return,
                Attempt::Conflict => {}
                Attempt::AmbiguousRetriedWithoutKeys => keyed = false,
            }
        }
        // Conflicts every time: each request runs alone, with its own retries.
        for entry in batch {
            entry.slot.send(Reply::Alone);
        }
    }

    /// One attempt. `keyed` is false only under the `retry_ambiguous_commit`
    /// mutant, after an ambiguous commit: the requests then run again
    /// without their keys, as that mutant does in `run`.
    async fn try_batch(&self, batch: &[Entry], keyed: bool, commit_started: &mut (dyn FnMut() + Send)) -> Attempt {
        let mut replies: Vec<Option<Reply>> = batch.iter().map(|_| None).collect();
        // Recomputed on every attempt, as `run` does: records move.
        let mut keys = Vec::new();
        // Each request's own lock set: what its use case is told it holds,
        // exactly as when it runs alone. A use case reads what its peek found
        // from its lock set (an order's payment), so it must not see the
        // other requests' keys.
        let mut owns: Vec<Option<LockSet>> = batch.iter().map(|_| None).collect();
        for ((entry, reply), owned) in batch.iter().zip(replies.iter_mut()).zip(owns.iter_mut()) {
            match self.lock_keys(entry.user, &entry.command).await {
                Ok(mut own) => {
                    own.push(LockKey::Idempotency(entry.scope.clone()));
                    if keys.len() + own.len() > BATCH_LOCK_SET_SIZE_MAX {
                        *reply = Some(Reply::Alone);
                    } else {
                        keys.extend(own.iter().cloned());
                        *owned = Some(LockSet::new(own));
                    }
                }
                Err(error) => *reply = Some(Reply::Ran(Err(error))),
            }
        }
        let keys = LockSet::for_batch(keys);
        let Ok(guard) = self.locks.acquire(&keys, self.config.lock_wait).await else {
            // One slow record must not fail the others: each waits alone.
            deliver(batch, fill(replies, || Reply::Alone));
            return Attempt::Answered;
        };
        let tx = match self.store.begin_locked(&keys, &guard.fences(), self.config.lock_wait).await {
            Ok(tx) => tx,
            // A lease that ran out before the claim: the batch runs again
            // under new grants, like a conflict.
            Err(StoreError::Fenced) => return Attempt::Conflict,
            Err(error) => {
                deliver(batch, fill(replies, || Reply::Ran(Err(error.clone().into()))));
                return Attempt::Answered;
            }
        };
        let mut tx = Overlay::new(tx);
        // An error poisons the overlay, which the loop below checks first.
        let _ = tx.preload(keys.keys()).await;
        // The requests whose answer depends on the commit.
        let mut ran = Vec::new();
        // Whether a business refusal is among them: its reads are checked
        // before the commit answers it (see `refusal_on_current_reads`).
        let mut refused = false;
        for (i, entry) in batch.iter().enumerate() {
            if tx.poisoned().is_some() {
                break;
            }
            if replies[i].is_some() {
                continue;
            }
            let held = entry.held();
            let mark = tx.mark();
            // The mutant hands every request the whole batch's lock set.
            let locked = match &owns[i] {
                Some(own) if !crate::mutant::active("batch_shared_lock_set") => own,
                _ => &keys,
            };
            let reply = match self.run_in(&mut tx, entry.user, &entry.command, keyed.then_some(&held), locked).await {
                Ok(step) => Reply::Ran(Ok(step)),
                Err(Error::Store(StoreError::Conflict)) => {
                    tx.rollback_to(mark);
                    Reply::Alone
                }
                Err(error) => {
                    tx.rollback_to(mark);
                    let reply = self.refuse_in(&mut tx, &held, error).await;
                    refused |= matches!(reply, Reply::Refused(_));
                    reply
                }
            };
            if !matches!(reply, Reply::Alone) {
                ran.push(i);
            }
            replies[i] = Some(reply);
        }
        // A refusal decided on reads another transaction has changed since
        // is not answered: the batch runs again, as on a conflict at commit.
        // (Any other failure of the check poisons the overlay: below.)
        if refused
            && tx.poisoned().is_none()
            && !crate::mutant::active("refusal_unvalidated")
            && tx.reads_unchanged().await == Err(StoreError::Conflict)
        {
            tx.rollback().await;
            return Attempt::Conflict;
        }
        if tx.poisoned().is_some() {
            // The inner transaction failed a statement (a key locked by
            // another transaction, a lost connection): nothing of the batch
            // is written, and each request runs alone and meets it there.
            tx.rollback().await;
            drop(guard);
            for i in ran {
                replies[i] = None;
            }
            deliver(batch, fill(replies, || Reply::Alone));
            return Attempt::Answered;
        }
        // Mutant: every request is answered before the commit's outcome is known.
        let early = crate::mutant::active("batch_answers_before_commit");
        if early {
            deliver(batch, fill(std::mem::take(&mut replies), || Reply::Alone));
        }
        // Mutant: the batch's locks go before its commit, so a request
        // running alone may read what the batch has not committed yet.
        let guard = if crate::mutant::active("batch_unlocks_before_commit") {
            drop(guard);
            None
        } else {
            Some(guard)
        };
        let committed = if tx.changed() > 0 || tx.has_transfers() {
            commit_started();
            tx.commit().await
        } else {
            // Replays and refusals of bad input only: nothing to commit.
            tx.rollback().await;
            Ok(())
        };
        drop(guard);
        if early {
            return Attempt::Answered;
        }
        match committed {
            Ok(()) => {}
            // Nothing was written; a fenced commit lost its grants to later
            // holders, and runs again under new ones.
            Err(StoreError::Conflict | StoreError::Fenced) => return Attempt::Conflict,
            // Mutant: an ambiguous commit retried like a conflict, and
            // without the idempotency records (which that commit wrote).
            Err(StoreError::Ambiguous) if crate::mutant::active("retry_ambiguous_commit") => {
                return Attempt::AmbiguousRetriedWithoutKeys;
            }
            Err(error) => {
                for i in ran {
                    replies[i] = Some(Reply::Ran(Err(Error::Store(error.clone()))));
                }
            }
        }
        deliver(batch, fill(replies, || Reply::Alone));
        Attempt::Answered
    }

    /// A request failed inside the batch, its writes undone: a business
    /// refusal is stored under its key in the batch's transaction, as
    /// `close_key` stores it in one of its own.
    async fn refuse_in(&self, tx: &mut Overlay<S::Tx>, held: &Held<'_>, error: Error) -> Reply {
        if !error.is_refusal() {
            return Reply::Ran(Err(error));
        }
        let Some(response) = (held.render)(&Err(error.clone())) else { return Reply::Ran(Err(error)) };
        let mark = tx.mark();
        let Ok(existing) = tx.idempotency(&held.scope).await else { return Reply::Alone };
        match self.store_refusal(tx, held, existing.as_ref(), response).await {
            Ok(None) => Reply::Refused(error),
            // Answered or taken meanwhile: the alone path tells which.
            Ok(Some(_)) => Reply::Alone,
            Err(_) => {
                tx.rollback_to(mark);
                Reply::Alone
            }
        }
    }
}

/// How one attempt at a batch ended.
enum Attempt {
    /// Every request of the batch was answered (through its slot).
    Answered,
    /// The commit conflicted; nothing was answered: run the batch again.
    Conflict,
    /// Only under the `retry_ambiguous_commit` mutant.
    AmbiguousRetriedWithoutKeys,
}

fn fill(replies: Vec<Option<Reply>>, default: impl Fn() -> Reply) -> Vec<Reply> {
    replies.into_iter().map(|reply| reply.unwrap_or_else(&default)).collect()
}

fn deliver(batch: &[Entry], replies: Vec<Reply>) {
    debug_assert_eq!(batch.len(), replies.len(), "one reply per request");
    for (entry, reply) in batch.iter().zip(replies) {
        entry.slot.send(reply);
    }
}
