//! The request pipeline every mutating use case runs through: idempotency
//! admission, the locked transaction (lock → begin → load → decide → persist →
//! commit, retried on conflicts), the key's completion, and what happens to
//! the key when the request fails.

use super::payments::check_method;
use super::*;

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// Runs a mutating use case for `user`, at most once per idempotency key.
    ///
    /// A keyed request is admitted, run and completed in **one** transaction
    /// (see [`crate::idempotency`]): the key's record is written only with
    /// the effect it answers for. Only a gateway payment's key is committed
    /// in flight, with its intent, before the gateway is called.
    pub async fn execute(
        &self,
        user: UserId,
        command: Command,
        keyed: Option<Keyed<'static>>,
    ) -> Result<Executed, Error> {
        let Some(keyed) = keyed else {
            return self.run(user, &command, None, None).await;
        };
        let scope = IdemScope { user, key: keyed.key };
        let lease = LeaseToken(self.ids.next_id());
        let held = Held { scope, lease, fingerprint: keyed.fingerprint, render: keyed.render };
        // A duplicate of a request this instance is running is told at once
        // (409), not queued behind it: the key's lock is taken without
        // waiting, and a request running alone holds it to its commit.
        // Correctness comes from the store, which lets one of two racing
        // admissions commit; this lock only spares duplicates the queue.
        let key_guard = self.hold_key(&held).await?;
        // Group commit (`batch`) when it is on and the command batches;
        // otherwise, or when the batch sends it back, alone. A batch's
        // leader takes every key of its batch, so a batched request lets
        // its key go first (and a request sent back takes it again).
        let result = if self.batches(&command) {
            drop(key_guard);
            match self.execute_batched(user, &command, &held).await {
                Some(batch::Batched::Closed(result)) => return result,
                Some(batch::Batched::Ran(result)) => result,
                None => self.run(user, &command, Some(&held), None).await,
            }
        } else {
            self.run(user, &command, Some(&held), Some(key_guard)).await
        };
        match result {
            Ok(executed) => Ok(executed),
            // The key answers for another request: nothing ran, nothing to close.
            Err(error @ (Error::IdempotencyKeyInUse | Error::IdempotencyKeyReused)) => Err(error),
            Err(error) => match self.close_key(&held, &error).await {
                KeyClosed::Closed => Err(error),
                // A duplicate sent at the same time as the request that
                // answers the key: it ran, was refused (its first request
                // had already taken the effect) and changed nothing. The
                // key's answer is the other request's, so that is this
                // one's too, as if it had arrived a moment later.
                KeyClosed::AnsweredElsewhere(KeyAnswer::Replay(response)) => Ok(Executed::Replayed(response)),
                KeyClosed::AnsweredElsewhere(KeyAnswer::InUse) => Err(Error::IdempotencyKeyInUse),
                KeyClosed::AnsweredElsewhere(KeyAnswer::Reused) => Err(Error::IdempotencyKeyReused),
                // The refusal could not be stored under the key (its commit
                // failed): answering it now would let a retry run the
                // request again and answer differently. Say "retry" instead;
                // the retry meets the key in flight, free or answered.
                KeyClosed::NotStored => Err(Error::Busy("the answer could not be recorded; retry")),
            },
        }
    }

    /// Takes `held`'s key in the lock manager without waiting: held by
    /// another request (a duplicate in flight), it is 409 at once.
    async fn hold_key(&self, held: &Held<'_>) -> Result<L::Guard, Error> {
        let key = LockSet::new([LockKey::Idempotency(held.scope.clone())]);
        match self.locks.acquire(&key, Duration::ZERO).await {
            Ok(guard) => Ok(guard),
            Err(crate::store::LockError::Timeout) => Err(Error::IdempotencyKeyInUse),
            Err(error) => Err(error.into()),
        }
    }

    /// Admission, inside the request's transaction: what the key says about
    /// this request, and the record it is stored under now (if any). Under
    /// the pessimistic strategy a record another transaction holds is a key
    /// in flight, answered at once.
    pub(super) async fn admit_in(
        &self,
        tx: &mut impl Tx,
        held: &Held<'_>,
    ) -> Result<(Option<IdemRecord>, Admission), Error> {
        let existing = match tx.idempotency_no_wait(&held.scope).await {
            Ok(existing) => existing,
            Err(StoreError::Busy) => return Ok((None, Admission::InUse)),
            Err(error) => return Err(error.into()),
        };
        let admission = self.admission(held, existing.as_ref());
        Ok((existing, admission))
    }

    /// Stores a refusal in `tx` as the answer of a key this request never
    /// wrote: admitted afresh and completed at once. `Ok(Some(answer))`:
    /// the key was answered or taken meanwhile (by a duplicate, or another
    /// instance), not ours to answer; what it answers instead.
    pub(super) async fn store_refusal(
        &self,
        tx: &mut impl Tx,
        held: &Held<'_>,
        existing: Option<&IdemRecord>,
        response: StoredResponse,
    ) -> Result<Option<KeyAnswer>, StoreError> {
        let fresh = match self.admission(held, existing) {
            Admission::Start(fresh) => fresh,
            Admission::Replay(response) => return Ok(Some(KeyAnswer::Replay(response))),
            Admission::InUse => return Ok(Some(KeyAnswer::InUse)),
            Admission::Reused => return Ok(Some(KeyAnswer::Reused)),
        };
        let completed = fresh.complete(held.lease, response, None).expect("a fresh admission is held");
        tx.put_idempotency(existing, &completed).await?;
        Ok(None)
    }

    /// What the key, holding `existing`, says about this request now.
    fn admission(&self, held: &Held<'_>, existing: Option<&IdemRecord>) -> Admission {
        let now = self.clock.now();
        idempotency::admit(existing, &held.scope, held.fingerprint, held.lease, self.config.idempotency, now)
    }

    /// After a keyed request failed: store a refusal as its answer, or free
    /// the key so the client can retry. A key this request committed in
    /// flight (a gateway payment's) is completed or freed only while it is
    /// still ours — after an ambiguous commit it may already be completed,
    /// and then it must stay so. A key the request never wrote is admitted
    /// again here, and a refusal stored under it. If this fails, a refusal
    /// is not answered (see `execute`) and the lease expiry frees the key.
    pub(super) async fn close_key(&self, held: &Held<'_>, error: &Error) -> KeyClosed {
        if *error == Error::LeaseLost {
            return KeyClosed::Closed;
        }
        let response = if error.is_refusal() { (held.render)(&Err(error.clone())) } else { None };
        // Only a refusal's answer matters to the client; a key merely freed
        // that could not be is freed by its lease's expiry.
        let Some(response) = response else {
            return self.close_key_once(held, None).await.unwrap_or(KeyClosed::Closed);
        };
        // Duplicates refused at the same moment race to store the refusal
        // under a key none of them wrote: the losers' writes fail on the
        // key's uniqueness, and a second look finds the winner's answer.
        for _ in 0..CLOSE_ATTEMPTS {
            if let Some(closed) = self.close_key_once(held, Some(response.clone())).await {
                return closed;
            }
        }
        KeyClosed::NotStored
    }

    /// One attempt of [`Tally::close_key`]; `None` when it could not look or
    /// write.
    async fn close_key_once(&self, held: &Held<'_>, response: Option<StoredResponse>) -> Option<KeyClosed> {
        let keys = LockSet::new([LockKey::Idempotency(held.scope.clone())]);
        let guard = self.locks.acquire(&keys, self.config.lock_wait).await.ok()?;
        let mut tx = self.store.begin_locked(&keys, &guard.fences(), self.config.lock_wait).await.ok()?;
        let existing = tx.idempotency(&held.scope).await.ok()?;
        let written = match (existing.as_ref().filter(|r| r.held_by(held.lease)), response) {
            (Some(record), Some(response)) => {
                let completed = record.complete(held.lease, response, None).expect("held by this lease");
                tx.put_idempotency(Some(record), &completed).await
            }
            (Some(record), None) => tx.delete_idempotency(record).await,
            // Never written, nothing to free.
            (None, None) => return Some(KeyClosed::Closed),
            (None, Some(response)) => match self.store_refusal(&mut tx, held, existing.as_ref(), response).await {
                Ok(None) => Ok(()),
                Ok(Some(answered)) => return Some(KeyClosed::AnsweredElsewhere(answered)),
                Err(error) => Err(error),
            },
        };
        match written {
            Ok(()) if tx.commit().await.is_ok() => Some(KeyClosed::Closed),
            _ => None,
        }
    }

    /// Phase 2: lock, run the command and complete the key in one transaction,
    /// retrying a bounded number of times on conflicts. A gateway payment's
    /// phase ends in a committed intent instead; the gateway is then called
    /// with no transaction open, and its verdict recorded in phase 3.
    ///
    /// A keyed request holds its key's lock (`key_guard`, taken without
    /// waiting, see `execute`) before it waits for the rest: a duplicate is
    /// then answered 409 at once (SPEC) instead of queueing behind it — a
    /// thousand duplicates would each wait their turn for a replay, and past
    /// the lock wait fail. The key sorts first in the global lock order, so
    /// taking it before the rest keeps that order.
    pub(super) async fn run(
        &self,
        user: UserId,
        command: &Command,
        mut held: Option<&Held<'_>>,
        mut key_guard: Option<L::Guard>,
    ) -> Result<Executed, Error> {
        let mut attempt = 0;
        let step = loop {
            attempt += 1;
            // Recomputed on every attempt: a retry after the records moved
            // (an order got a payment) locks what they name now.
            let keys = self.lock_keys(user, command).await?;
            if let (Some(held), None) = (held, &key_guard) {
                key_guard = Some(self.hold_key(held).await?);
            }
            let rest = LockSet::new(keys.iter().cloned());
            let keys = LockSet::new(keys.into_iter().chain(held.map(|h| LockKey::Idempotency(h.scope.clone()))));
            let guard = self.locks.acquire(&rest, self.config.lock_wait).await?;
            // Mutant `check_then_act` (below) also begins without the grant's
            // fencing tokens: a store that checks them would refuse the write
            // made under the second acquisition, and the bug would be gone.
            let fences = if crate::mutant::active("check_then_act") {
                Fences::default()
            } else {
                let key_fences = key_guard.iter().flat_map(|g| g.fences().tokens().to_vec());
                Fences::new(key_fences.chain(guard.fences().tokens().iter().cloned()))
            };
            let mut tx = match self.store.begin_locked(&keys, &fences, self.config.lock_wait).await {
                Ok(tx) => tx,
                // `Fenced`: our grants ran out before the claim (a pause past
                // the lease); nothing was written, so `retry_or_fail` runs it
                // again under new grants. Any other error fails as it did.
                Err(error) => {
                    drop(guard);
                    // The key's grant may be what ran out: take it again.
                    key_guard = None;
                    self.retry_or_fail(attempt, Error::Store(error))?;
                    continue;
                }
            };
            let step = match self.run_in(&mut tx, user, command, held, &keys).await {
                // Read, wrote nothing: no commit to pay for.
                Ok(step @ Step::Answered(_)) => {
                    tx.rollback().await;
                    break step;
                }
                Ok(step) => step,
                Err(error) => {
                    let error = self.refusal_on_current_reads(&mut tx, error).await;
                    tx.rollback().await;
                    self.retry_or_fail(attempt, error)?;
                    continue;
                }
            };
            // Mutant: the decision was made under one acquisition of the locks
            // and is written under another — check-then-act.
            let guard = if crate::mutant::active("check_then_act") {
                drop(guard);
                self.locks.acquire(&rest, self.config.lock_wait).await?
            } else {
                guard
            };
            let committed = tx.commit().await;
            drop(guard);
            match committed {
                Ok(()) => break step,
                // Mutant: an ambiguous commit retried like a conflict, and
                // without its idempotency record (which that commit completed).
                Err(StoreError::Ambiguous)
                    if crate::mutant::active("retry_ambiguous_commit") && attempt < self.config.attempts_max =>
                {
                    held = None;
                    continue;
                }
                Err(error) => {
                    if error == StoreError::Fenced {
                        key_guard = None;
                    }
                    self.retry_or_fail(attempt, Error::Store(error))?;
                }
            }
        };
        // The gateway call and its verdict run with no lock held; the
        // verdict recorder takes the key again.
        drop(key_guard);
        self.finish(step, held).await
    }

    /// A refusal is answered only if what it was decided on is still what
    /// the store holds (`Tx::reads_unchanged`): otherwise it becomes a
    /// conflict, and the request is decided again on what changed. A
    /// refusal writes nothing, so no write guard would catch a decision on
    /// reads that disagree (hole 12: a racing cancel's loser refused
    /// `insufficient_balance` instead of `invalid_state`). Other errors
    /// pass through as they are.
    pub(super) async fn refusal_on_current_reads(&self, tx: &mut impl Tx, error: Error) -> Error {
        // Mutant: the refusal is answered on whatever was read.
        if !error.is_refusal() || crate::mutant::active("refusal_unvalidated") {
            return error;
        }
        match tx.reads_unchanged().await {
            Ok(()) => error,
            Err(stale) => Error::Store(stale),
        }
    }

    /// After the locked phase committed (alone or in a batch): the answer,
    /// or the gateway call and its verdict.
    pub(super) async fn finish(&self, step: Step, held: Option<&Held<'_>>) -> Result<Executed, Error> {
        match step {
            Step::Done(outcome) => Ok(Executed::Fresh(outcome)),
            Step::Call(payment, call, answer) => {
                self.call_and_record(&payment, call, held, answer).await.map(Executed::Fresh)
            }
            Step::Answered(Admission::Replay(response)) => Ok(Executed::Replayed(response)),
            Step::Answered(Admission::Reused) => Err(Error::IdempotencyKeyReused),
            Step::Answered(Admission::InUse | Admission::Start(_)) => Err(Error::IdempotencyKeyInUse),
        }
    }

    pub(super) async fn run_in(
        &self,
        tx: &mut impl Tx,
        user: UserId,
        command: &Command,
        held: Option<&Held<'_>>,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        let now = self.clock.now();
        // Loads follow the lock order: the idempotency record first.
        let (existing, record) = match held {
            None => (None, None),
            Some(held) => match self.admit_in(tx, held).await? {
                (existing, Admission::Start(record)) => (existing, Some(record)),
                (_, answered) => return Ok(Step::Answered(answered)),
            },
        };
        let op = OpId(self.ids.next_id());
        let origin = record.as_ref().map(|r| IdemOrigin { scope: r.scope.clone(), expires_at: r.expires_at });
        let booking = Booking { op, origin, at: now };
        let step = self.apply(tx, user, command, &booking, locked).await?;
        if let (Some(held), Some(record)) = (held, &record) {
            match &step {
                Step::Done(outcome) => self.complete(tx, held, existing.as_ref(), record, outcome, op).await?,
                // The gateway is called after this commit: the key goes in
                // flight with the intent, and phase 3 completes it.
                Step::Call(..) => tx.put_idempotency(existing.as_ref(), record).await?,
                Step::Answered(_) => unreachable!("apply answers no admission"),
            }
        }
        Ok(step)
    }

    /// The request's in-flight idempotency record, if it is still ours.
    pub(super) async fn held_record(
        &self,
        tx: &mut impl Tx,
        held: Option<&Held<'_>>,
    ) -> Result<Option<IdemRecord>, Error> {
        let Some(held) = held else { return Ok(None) };
        match tx.idempotency(&held.scope).await? {
            Some(record) if record.held_by(held.lease) => Ok(Some(record)),
            _ => Err(Error::LeaseLost),
        }
    }

    /// Stores the response under the key, in the effect's transaction.
    /// `record` is the key's in-flight record; `stored` is what the store
    /// holds under the key now (`record` itself once it was committed, an
    /// expired record or nothing when it was admitted in this transaction).
    pub(super) async fn complete(
        &self,
        tx: &mut impl Tx,
        held: &Held<'_>,
        stored: Option<&IdemRecord>,
        record: &IdemRecord,
        outcome: &Outcome,
        op: OpId,
    ) -> Result<(), Error> {
        match ((held.render)(&Ok(outcome.clone())), stored) {
            (Some(response), _) => {
                let completed = record.complete(held.lease, response, Some(op)).expect("lease checked above");
                tx.put_idempotency(stored, &completed).await?;
            }
            // Nothing to answer with: free the key if it was ours in the store.
            (None, Some(stored)) if stored.held_by(held.lease) => tx.delete_idempotency(stored).await?,
            (None, _) => {}
        }
        Ok(())
    }

    pub(super) async fn apply(
        &self,
        tx: &mut impl Tx,
        user: UserId,
        command: &Command,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        let mut next_id = self.transfer_ids();
        match command {
            Command::TopUp { amount } => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let (next, transfer) = decide::top_up(&wallet, *amount, booking, &mut next_id)?;
                tx.put_wallet(Some(&wallet), &next).await?;
                tx.append_transfers(std::slice::from_ref(&transfer)).await?;
                Ok(Step::Done(Outcome::TopUp { transfer, balance: next.balance }))
            }
            Command::CreatePayment { amount, method, confirm } => {
                check_method(*method, *confirm, self.gateway.enabled())?;
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                // Refuse early what confirm would refuse anyway; confirm checks again.
                if *method == Method::Wallet && wallet.limits.per_payment.is_some_and(|limit| amount.money() > limit) {
                    return Err(WalletError::LimitExceeded(LimitKind::PerPayment).into());
                }
                let payback = Amount::new(payment::payback_of(*amount, self.config.payback_bps).minor_units()).ok();
                let payment = Payment::new(PaymentId(self.ids.next_id()), user, *amount, payback, *method, booking.at)?;
                self.created_payment(tx, payment, *confirm, booking, locked, Some(wallet)).await
            }
            Command::ConfirmPayment { payment, payment_key } => {
                let loaded = tx.payment(*payment).await?.filter(|p| p.user == user).ok_or(Error::NotFound)?;
                if loaded.method == Method::Gateway {
                    return self.begin_gateway_confirm(tx, loaded, payment_key.as_deref(), booking, locked).await;
                }
                if payment_key.is_some() {
                    return Err(Error::InvalidState("a wallet payment takes no payment_key"));
                }
                self.confirm_wallet_payment(tx, Some(&loaded), &loaded, booking, locked, None).await
            }
            Command::CancelPayment { payment } => {
                let loaded = tx.payment(*payment).await?.filter(|p| p.user == user).ok_or(Error::NotFound)?;
                self.cancel_payment(tx, user, loaded, booking, locked, Answer::Payment).await
            }
            Command::CreateOrderPayment { order, method, confirm } => {
                check_method(*method, *confirm, self.gateway.enabled())?;
                let payment = self.order_payment(tx, user, *order, *method, booking).await?;
                self.created_payment(tx, payment, *confirm, booking, locked, None).await
            }
            Command::CreateProduct { name, price, stock, payback_bps } => {
                self.create_product(tx, name, *price, *stock, *payback_bps, booking).await
            }
            Command::Restock { product, quantity } => self.restock(tx, *product, *quantity, booking).await,
            Command::CreateEvent { name, active_limit, token_ttl, max_seats_per_token, showtimes } => {
                let settings = QueueSettings {
                    active_limit: *active_limit,
                    token_ttl: *token_ttl,
                    max_seats_per_token: *max_seats_per_token,
                };
                self.create_event(tx, name, settings, showtimes, booking).await
            }
            Command::JoinQueue { event } => self.join_queue(tx, user, *event, booking).await,
            Command::QueueStatus { token } => self.queue_status(tx, user, *token, booking, locked).await,
            Command::CreateOrder { items, seats, token } => {
                let request = crate::decide::order::request(items, seats, *token)?;
                self.create_order(tx, user, request, booking, locked).await
            }
            Command::CancelOrder { order } => self.cancel_order(tx, user, *order, booking, locked).await,
        }
    }
}

/// How many times a refusal is offered to its key (see [`Tally::close_key`]).
const CLOSE_ATTEMPTS: u32 = 3;

/// What became of a failed request's key (see [`Tally::close_key`]).
pub(super) enum KeyClosed {
    /// The refusal is stored as the key's answer, or the key freed (or
    /// never written).
    Closed,
    /// Another request answers the key: it completed it, or holds it,
    /// meanwhile. What the key says now.
    AnsweredElsewhere(KeyAnswer),
    /// The refusal could not be stored (a failed commit, no lock).
    NotStored,
}

/// What a key another request answers says to a request that found it so.
pub(super) enum KeyAnswer {
    /// That request completed it: its stored answer.
    Replay(StoredResponse),
    /// That request still holds it.
    InUse,
    /// It answers another body.
    Reused,
}
