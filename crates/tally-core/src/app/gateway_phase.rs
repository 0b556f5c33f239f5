//! The gateway phase of a payment: the one foreign call after the intent
//! committed, recording its verdict, and the completer that resolves
//! payments whose verdict was lost.

use super::*;

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// Phase 3 of a gateway payment: the one foreign call, then its verdict.
    /// A confirm whose answer is unclear is followed by a lookup — never by a
    /// second confirm. A verdict that leaves a refund owed (`refunding`) is
    /// followed by the refund, and the key is completed only with the
    /// payment's resting state.
    pub(super) async fn call_and_record(
        &self,
        payment: &Payment,
        call: Call,
        held: Option<&Held<'_>>,
        answer: Answer,
    ) -> Result<Outcome, Error> {
        let mut payment = payment.clone();
        let mut call = call;
        // Confirm → (refund) at most: two rounds.
        for _ in 0..2 {
            let verdict = self.call_gateway(&payment, &call).await;
            if !self.config.pause_after_gateway.is_zero() {
                self.clock.sleep(self.config.pause_after_gateway).await;
            }
            match self.record_verdict(&payment, &verdict, held, answer).await? {
                Recorded::Final(outcome) => return Ok(outcome),
                Recorded::Refund(refunding) => {
                    payment = refunding;
                    call = Call::Cancel;
                }
            }
        }
        unreachable!("a refund's verdict is final or pending")
    }

    /// The one foreign call of a phase.
    pub(super) async fn call_gateway(&self, payment: &Payment, call: &Call) -> Verdict {
        let attempt = payment.gateway.as_ref().expect("a gateway call has its attempt");
        let key = attempt.payment_key.as_str();
        match call {
            Call::Confirm => {
                let order_id = gateway::order_id(payment.id);
                let said =
                    self.gateway.confirm(key, &order_id, payment.amount, &gateway::confirm_key(payment.id)).await;
                match said {
                    Confirmed::Unknown { .. } if crate::mutant::active("retry_unknown_confirm") => Verdict::Confirm(
                        self.gateway.confirm(key, &order_id, payment.amount, &gateway::confirm_key(payment.id)).await,
                    ),
                    Confirmed::Unknown { .. } => Verdict::Lookup(self.gateway.lookup(key).await),
                    said => Verdict::Confirm(said),
                }
            }
            Call::Lookup => Verdict::Lookup(self.gateway.lookup(key).await),
            // Only for a charge recorded as ours: a cancelling payment was
            // done, a refunding one was charged with our order id.
            Call::Cancel => {
                debug_assert!(matches!(payment.status, PaymentStatus::Cancelling | PaymentStatus::Refunding));
                Verdict::Cancel(self.gateway.cancel(key, &gateway::cancel_key(payment.id)).await)
            }
        }
    }

    /// Records a gateway verdict (and completes the idempotency key, unless
    /// a refund is still owed) in one transaction under the payment's and
    /// the wallet's locks.
    pub(super) async fn record_verdict(
        &self,
        payment: &Payment,
        verdict: &Verdict,
        held: Option<&Held<'_>>,
        answer: Answer,
    ) -> Result<Recorded, Error> {
        let user = payment.user;
        let started = payment.gateway.as_ref().map_or(payment.updated_at, |a| a.sent_at);
        let give_up = decide::GiveUp {
            at: started.plus(self.config.gateway_give_up_after),
            watch_for: self.config.gateway_watch_after_give_up,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut keys = vec![LockKey::Payment(payment.id), LockKey::Wallet(user)];
            keys.extend(self.order_keys_of(payment.order).await?);
            keys.extend(held.map(|h| LockKey::Idempotency(h.scope.clone())));
            let keys = LockSet::new(keys);
            let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
            let mut tx = match self.store.begin_locked(&keys, &guard.fences(), self.config.lock_wait).await {
                Ok(tx) => tx,
                // `Fenced`: our grants ran out before the claim (a pause past
                // the lease); nothing was written, so `retry_or_fail` runs it
                // again under new grants. Any other error fails as it did.
                Err(error) => {
                    drop(guard);
                    self.retry_or_fail(attempt, Error::Store(error))?;
                    continue;
                }
            };
            let result = self.record_verdict_in(&mut tx, payment.id, user, verdict, give_up, held, answer, &keys).await;
            let recorded = match result {
                Ok(recorded) => recorded,
                Err(error) => {
                    tx.rollback().await;
                    self.retry_or_fail(attempt, error)?;
                    continue;
                }
            };
            let committed = tx.commit().await;
            drop(guard);
            match committed {
                Ok(()) => return Ok(recorded),
                Err(error) => self.retry_or_fail(attempt, Error::Store(error))?,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_verdict_in(
        &self,
        tx: &mut impl Tx,
        payment: PaymentId,
        user: UserId,
        verdict: &Verdict,
        give_up: decide::GiveUp,
        held: Option<&Held<'_>>,
        answer: Answer,
        locked: &LockSet,
    ) -> Result<Recorded, Error> {
        let record = self.held_record(tx, held).await?;
        let loaded = tx.payment(payment).await?.ok_or(Error::NotFound)?;
        let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
        let op = OpId(self.ids.next_id());
        let origin = record.as_ref().map(|r| IdemOrigin { scope: r.scope.clone(), expires_at: r.expires_at });
        let booking = Booking { op, origin, at: self.clock.now() };
        let mut next_id = self.transfer_ids();
        let (payment, order) = match decide::adopt_verdict(&loaded, &wallet, verdict, give_up, &booking, &mut next_id)?
        {
            VerdictDecision::Pending => return Err(Error::OutcomePending),
            VerdictDecision::AlreadyRecorded(current) => {
                let order = self.follow_order(tx, &current, &current, booking.at, locked).await?;
                (current, order)
            }
            VerdictDecision::Booked(decision) => {
                self.persist(tx, Some(&loaded), &wallet, &decision).await?;
                let order = self.follow_order(tx, &loaded, &decision.payment, booking.at, locked).await?;
                (decision.payment, order)
            }
        };
        if payment.status == PaymentStatus::Refunding && loaded.status != PaymentStatus::Refunding {
            // The refund is owed, durably; the key waits for its outcome.
            return Ok(Recorded::Refund(payment));
        }
        let outcome = match (answer, order) {
            (Answer::Order, Some(order)) => Outcome::Order(self.order_view(order)),
            _ => Outcome::Payment(payment),
        };
        if let (Some(held), Some(record)) = (held, record) {
            self.complete(tx, held, Some(&record), &record, &outcome, op).await?;
        }
        Ok(Recorded::Final(outcome))
    }

    /// The completer: gateway payments stuck in `confirming`, `cancelling`
    /// or `refunding` for longer than `older_than` (a crash, a timeout) are
    /// claimed (their attempt's clock restarts, so another instance skips
    /// them) and resolved by a lookup or a re-sent cancel. Failed payments
    /// still watched for a late charge (their confirm given up on) are
    /// claimed the same way and looked up: a charge that landed is refunded.
    /// Every claimed payment is tried, whatever happens to the others;
    /// returns how many were resolved, or the first error once all were
    /// tried.
    pub async fn resolve_stuck(&self, older_than: Duration, limit: usize) -> Result<usize, Error> {
        self.complete_stuck(older_than, limit).await?.into_result()
    }

    /// [`Tally::resolve_stuck`], with what it could not settle: the report an
    /// operator's alerts read (a payment still in flight after the completer
    /// tried it, a refund still owed).
    pub async fn complete_stuck(&self, older_than: Duration, limit: usize) -> Result<Completion, Error> {
        assert!(limit > 0 && limit <= crate::store::LOCK_SET_SIZE_MAX, "a completer batch is 1 to 64 payments");
        let now = self.clock.now();
        let before = Timestamp(now.0.saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX)));
        let mut tx = self.store.begin().await?;
        let candidates = tx.stuck_payments(before, limit).await;
        tx.rollback().await;
        let candidates = candidates?;
        if candidates.is_empty() {
            return Ok(Completion::default());
        }
        let keys = LockSet::new(candidates.iter().map(|p| LockKey::Payment(p.id)));
        let guard = self.locks.acquire(&keys, self.config.lock_wait).await?;
        let mut tx = self.store.begin_locked(&keys, &guard.fences(), self.config.lock_wait).await?;
        let mut claimed = Vec::new();
        for candidate in &candidates {
            let Some(current) = tx.payment(candidate.id).await? else { continue };
            let still_stuck =
                current.awaits_gateway() && current.gateway.as_ref().is_some_and(|a| a.started_at < before);
            if still_stuck {
                let touched = current.transition(PaymentEvent::Touch, now)?;
                tx.put_payment(Some(&current), &touched).await?;
                claimed.push(touched);
            }
        }
        tx.commit().await?;
        drop(guard);
        let mut completion = Completion::default();
        for payment in claimed {
            let call = Call::to_resolve(&payment).expect("claimed payments await the gateway");
            match self.call_and_record(&payment, call, None, Answer::Payment).await {
                Ok(_) => completion.resolved += 1,
                // Nothing landed yet: looked up again next time, no alarm.
                Err(Error::OutcomePending) if payment.watched() => completion.watching += 1,
                Err(Error::OutcomePending) => completion.unsettled.push(payment),
                // The mutant abandons the rest of the batch it claimed.
                Err(error) if crate::mutant::active("completer_gives_up") => return Err(error),
                // One payment that cannot be settled now must not starve the
                // others: try them all, report the first failure after.
                Err(error) => {
                    completion.unsettled.push(payment);
                    completion.first_error.get_or_insert(error);
                }
            }
        }
        Ok(completion)
    }
}

/// What one pass of the completer did.
#[derive(Debug, Default)]
pub struct Completion {
    /// Payments it settled: in flight ones resolved, watched ones whose
    /// late charge was refunded or whose watch ended.
    pub resolved: usize,
    /// Watched payments it looked up and found nothing new for.
    pub watching: usize,
    /// Payments it tried and left in flight (the gateway's answer still
    /// unclear, or recording it failed), as they were when claimed.
    pub unsettled: Vec<Payment>,
    /// The first failure among them, if any.
    pub first_error: Option<Error>,
}

impl Completion {
    /// How many were resolved, or the first failure once all were tried.
    pub fn into_result(self) -> Result<usize, Error> {
        match self.first_error {
            Some(error) => Err(error),
            None => Ok(self.resolved),
        }
    }
}
