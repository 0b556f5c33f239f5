//! The request pipeline every mutating use case runs through: idempotency
//! admission, the locked transaction (lock → begin → load → decide → persist →
//! commit, retried on conflicts), the key's completion, and what happens to
//! the key when the request fails.

use super::*;

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// Runs a mutating use case for `user`, at most once per idempotency key.
    pub async fn execute(&self, user: UserId, command: Command, keyed: Option<Keyed<'_>>) -> Result<Executed, Error> {
        let Some(keyed) = keyed else {
            return self.run(user, &command, None).await.map(Executed::Fresh);
        };
        let scope = IdemScope { user, key: keyed.key };
        let lease = LeaseToken(self.ids.next_id());
        match self.admit(&scope, keyed.fingerprint, lease).await? {
            Admission::Start(_) => {}
            Admission::Replay(response) => return Ok(Executed::Replayed(response)),
            Admission::InUse => return Err(Error::IdempotencyKeyInUse),
            Admission::Reused => return Err(Error::IdempotencyKeyReused),
        }
        let held = Held { scope, lease, render: keyed.render };
        match self.run(user, &command, Some(&held)).await {
            Ok(outcome) => Ok(Executed::Fresh(outcome)),
            Err(error) => {
                let stored = self.close_key(&held, &error).await;
                if error.is_refusal() && !stored {
                    // The refusal could not be stored under the key (its
                    // commit failed): answering it now would let a retry run
                    // the request again and answer differently. Say "retry"
                    // instead; the retry meets the key in flight or free.
                    return Err(Error::Busy("the answer could not be recorded; retry"));
                }
                Err(error)
            }
        }
    }

    /// Phase 1 of a keyed request: claim the key, or learn why not. Two
    /// first requests racing without locks both try to insert; the loser's
    /// commit conflicts (unique key) and it decides again on what won.
    pub(super) async fn admit(
        &self,
        scope: &IdemScope,
        fingerprint: Fingerprint,
        lease: LeaseToken,
    ) -> Result<Admission, Error> {
        let keys = LockSet::new([LockKey::Idempotency(scope.clone())]);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Never wait for the key: whoever holds it is running a request
            // with it (its admission, its effect or its settlement), so this
            // one is a duplicate in flight and is told so at once.
            let _guard = match self.locks.acquire(&keys, Duration::ZERO).await {
                Ok(guard) => guard,
                Err(crate::store::LockError::Timeout) => return Ok(Admission::InUse),
                Err(error) => return Err(error.into()),
            };
            let mut tx = self.store.begin().await?;
            let existing = match tx.idempotency_no_wait(scope).await {
                Ok(existing) => existing,
                Err(StoreError::Busy) => {
                    tx.rollback().await;
                    return Ok(Admission::InUse);
                }
                Err(error) => return Err(error.into()),
            };
            let now = self.clock.now();
            let admission =
                idempotency::admit(existing.as_ref(), scope, fingerprint, lease, self.config.idempotency, now);
            let Admission::Start(record) = &admission else {
                tx.rollback().await;
                return Ok(admission);
            };
            let written = match tx.put_idempotency(existing.as_ref(), record).await {
                Ok(()) => tx.commit().await,
                Err(error) => Err(error),
            };
            match written {
                Ok(()) => return Ok(admission),
                Err(StoreError::Conflict) if attempt < self.config.attempts_max => continue,
                Err(error) => return Err(conflicts_exhausted(Error::Store(error))),
            }
        }
    }

    /// After a keyed request failed: store a refusal as its answer, or free the
    /// key so the client can retry. Only while the record is still ours and in
    /// flight — after an ambiguous commit it may already be completed, and then
    /// it must stay so. If this fails too, the lease expiry frees the key.
    /// Returns whether a refusal was stored (always true for other errors).
    pub(super) async fn close_key(&self, held: &Held<'_>, error: &Error) -> bool {
        if *error == Error::LeaseLost {
            return true;
        }
        let response = if error.is_refusal() { (held.render)(&Err(error.clone())) } else { None };
        let keys = LockSet::new([LockKey::Idempotency(held.scope.clone())]);
        let refusal = response.is_some();
        let Ok(_guard) = self.locks.acquire(&keys, self.config.lock_wait).await else {
            return !refusal;
        };
        let Ok(mut tx) = self.store.begin().await else {
            return !refusal;
        };
        let Ok(Some(record)) = tx.idempotency(&held.scope).await else {
            return !refusal;
        };
        let written = match response.and_then(|r| record.complete(held.lease, r, None)) {
            Some(completed) => tx.put_idempotency(Some(&record), &completed).await,
            None if record.held_by(held.lease) => tx.delete_idempotency(&record).await,
            // Taken over: the key now answers for another request.
            None => return !refusal,
        };
        match written {
            Ok(()) => tx.commit().await.is_ok() || !refusal,
            Err(_) => !refusal,
        }
    }

    /// Phase 2: lock, run the command and complete the key in one transaction,
    /// retrying a bounded number of times on conflicts. A gateway payment's
    /// phase ends in a committed intent instead; the gateway is then called
    /// with no transaction open, and its verdict recorded in phase 3.
    pub(super) async fn run(
        &self,
        user: UserId,
        command: &Command,
        mut held: Option<&Held<'_>>,
    ) -> Result<Outcome, Error> {
        let mut attempt = 0;
        let step = loop {
            attempt += 1;
            // Recomputed on every attempt: a retry after the records moved
            // (an order got a payment) locks what they name now.
            let mut keys = self.lock_keys(user, command).await?;
            keys.extend(held.map(|h| LockKey::Idempotency(h.scope.clone())));
            let keys = LockSet::new(keys);
            let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
            let mut tx = self.store.begin().await?;
            let step = match self.run_in(&mut tx, user, command, held, &keys).await {
                Ok(step) => step,
                Err(error) => {
                    tx.rollback().await;
                    if error == Error::Store(StoreError::Conflict) && attempt < self.config.attempts_max {
                        continue;
                    }
                    return Err(conflicts_exhausted(error));
                }
            };
            // Mutant: the decision was made under one acquisition of the locks
            // and is written under another — check-then-act.
            let guard = if crate::mutant::active("check_then_act") {
                drop(guard);
                self.locks.acquire(&keys, self.config.lock_wait).await?
            } else {
                guard
            };
            let committed = tx.commit().await;
            drop(guard);
            match committed {
                Ok(()) => break step,
                Err(StoreError::Conflict) if attempt < self.config.attempts_max => continue,
                // Mutant: an ambiguous commit retried like a conflict, and
                // without its idempotency record (which that commit completed).
                Err(StoreError::Ambiguous)
                    if crate::mutant::active("retry_ambiguous_commit") && attempt < self.config.attempts_max =>
                {
                    held = None;
                    continue;
                }
                Err(error) => return Err(conflicts_exhausted(Error::Store(error))),
            }
        };
        match step {
            Step::Done(outcome) => Ok(outcome),
            Step::Call(payment, call, answer) => self.call_and_record(&payment, call, held, answer).await,
        }
    }

    pub(super) async fn run_in(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        command: &Command,
        held: Option<&Held<'_>>,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        let now = self.clock.now();
        // Loads follow the lock order: the idempotency record first.
        let record = self.held_record(tx, held).await?;
        let op = OpId(self.ids.next_id());
        let origin = record.as_ref().map(|r| IdemOrigin { scope: r.scope.clone(), expires_at: r.expires_at });
        let booking = Booking { op, origin, at: now };
        let step = self.apply(tx, user, command, &booking, locked).await?;
        if let (Step::Done(outcome), Some(held), Some(record)) = (&step, held, &record) {
            self.complete(tx, held, record, outcome, op).await?;
        }
        Ok(step)
    }

    /// The request's in-flight idempotency record, if it is still ours.
    pub(super) async fn held_record(
        &self,
        tx: &mut S::Tx,
        held: Option<&Held<'_>>,
    ) -> Result<Option<IdemRecord>, Error> {
        let Some(held) = held else { return Ok(None) };
        match tx.idempotency(&held.scope).await? {
            Some(record) if record.held_by(held.lease) => Ok(Some(record)),
            _ => Err(Error::LeaseLost),
        }
    }

    /// Stores the response under the key, in the effect's transaction.
    pub(super) async fn complete(
        &self,
        tx: &mut S::Tx,
        held: &Held<'_>,
        record: &IdemRecord,
        outcome: &Outcome,
        op: OpId,
    ) -> Result<(), Error> {
        match (held.render)(&Ok(outcome.clone())) {
            Some(response) => {
                let completed = record.complete(held.lease, response, Some(op)).expect("lease checked above");
                tx.put_idempotency(Some(record), &completed).await?;
            }
            None => tx.delete_idempotency(record).await?,
        }
        Ok(())
    }

    pub(super) async fn apply(
        &self,
        tx: &mut S::Tx,
        user: UserId,
        command: &Command,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        let ids = &self.ids;
        let mut next_id = || TransferId(ids.next_id());
        match command {
            Command::TopUp { amount } => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let (next, transfer) = decide::top_up(&wallet, *amount, booking, &mut next_id)?;
                tx.put_wallet(Some(&wallet), &next).await?;
                tx.append_transfers(std::slice::from_ref(&transfer)).await?;
                Ok(Step::Done(Outcome::TopUp { transfer, balance: next.balance }))
            }
            Command::CreatePayment { amount, method } => {
                if *method == Method::Gateway && !self.gateway.enabled() {
                    return Err(Error::InvalidInput("gateway payments are not configured on this server"));
                }
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                // Refuse early what confirm would refuse anyway; confirm checks again.
                if *method == Method::Wallet && wallet.limits.per_payment.is_some_and(|limit| amount.money() > limit) {
                    return Err(WalletError::LimitExceeded(LimitKind::PerPayment).into());
                }
                let payback = Amount::new(payment::payback_of(*amount, self.config.payback_bps).minor_units()).ok();
                let payment = Payment::new(PaymentId(self.ids.next_id()), user, *amount, payback, *method, booking.at)?;
                tx.put_payment(None, &payment).await?;
                Ok(Step::Done(Outcome::Payment(payment)))
            }
            Command::ConfirmPayment { payment, payment_key } => {
                let loaded = tx.payment(*payment).await?.filter(|p| p.user == user).ok_or(Error::NotFound)?;
                if loaded.method == Method::Gateway {
                    return self.begin_gateway_confirm(tx, loaded, payment_key.as_deref(), booking, locked).await;
                }
                if payment_key.is_some() {
                    return Err(Error::InvalidInput("a wallet payment takes no payment_key"));
                }
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let decision = decide::confirm(&loaded, &wallet, booking, &mut next_id)?;
                self.persist(tx, &loaded, &wallet, &decision).await?;
                self.follow_order(tx, &loaded, &decision.payment, booking.at, locked).await?;
                Ok(Step::Done(Outcome::Payment(decision.payment)))
            }
            Command::CancelPayment { payment } => {
                let loaded = tx.payment(*payment).await?.filter(|p| p.user == user).ok_or(Error::NotFound)?;
                self.cancel_payment(tx, user, loaded, booking, locked, Answer::Payment).await
            }
            Command::CreateOrderPayment { order, method } => {
                self.create_order_payment(tx, user, *order, *method, booking).await
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
