//! The payment use cases' locked steps: a new payment (created, or created
//! and confirmed in one step), a wallet confirm, a confirm's or a cancel's
//! intent before the gateway is called, and writing a payment decision.

use super::*;

/// A one-step confirm is for wallet payments: a gateway payment is confirmed
/// with the payment key its checkout gives the client, later.
pub(super) fn check_method(method: Method, confirm: bool, gateway_enabled: bool) -> Result<(), Error> {
    match method {
        Method::Gateway if !gateway_enabled => {
            Err(Error::InvalidInput("gateway payments are not configured on this server"))
        }
        Method::Gateway if confirm => Err(Error::InvalidInput(
            "confirm: true is for wallet payments; a gateway payment is confirmed with its payment_key",
        )),
        _ => Ok(()),
    }
}

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// Stores a new payment in `wait`, or (`confirm`) confirms it first and
    /// stores it `done`: one insert, and a refused confirm creates nothing.
    pub(super) async fn created_payment(
        &self,
        tx: &mut impl Tx,
        payment: Payment,
        confirm: bool,
        booking: &Booking,
        locked: &LockSet,
        wallet: Option<Wallet>,
    ) -> Result<Step, Error> {
        if !confirm {
            tx.put_payment(None, &payment).await?;
            return Ok(Step::Done(Outcome::Payment(payment)));
        }
        debug_assert_eq!(payment.method, Method::Wallet, "check_method admits wallet payments only");
        self.confirm_wallet_payment(tx, None, &payment, booking, locked, wallet).await
    }

    /// Confirms a wallet payment (`wait → done`) and moves its order.
    /// `stored`: the payment as the store holds it (none for a new one);
    /// `wallet`: the payer's wallet if this transaction already loaded it
    /// (under its lock), so a one-step payment reads it once.
    pub(super) async fn confirm_wallet_payment(
        &self,
        tx: &mut impl Tx,
        stored: Option<&Payment>,
        payment: &Payment,
        booking: &Booking,
        locked: &LockSet,
        wallet: Option<Wallet>,
    ) -> Result<Step, Error> {
        let mut next_id = self.transfer_ids();
        let wallet = match wallet {
            Some(wallet) => wallet,
            None => tx.wallet(payment.user).await?.ok_or(Error::NotFound)?,
        };
        debug_assert_eq!(wallet.user, payment.user, "a payment is paid from its owner's wallet");
        let decision = decide::confirm(payment, &wallet, booking, &mut next_id)?;
        self.persist(tx, stored, &wallet, &decision).await?;
        self.follow_order(tx, payment, &decision.payment, booking.at, locked).await?;
        Ok(Step::Done(Outcome::Payment(decision.payment)))
    }

    /// Cancels a payment (and, through [`Tally::follow_order`], the order it
    /// paid). A gateway payment's refund goes through the gateway.
    pub(super) async fn cancel_payment(
        &self,
        tx: &mut impl Tx,
        user: UserId,
        loaded: Payment,
        booking: &Booking,
        locked: &LockSet,
        answer: Answer,
    ) -> Result<Step, Error> {
        let mut next_id = self.transfer_ids();
        match (loaded.method, loaded.status) {
            // Money went through the gateway: it must come back through it.
            // Its payback is reversed first, in this transaction: refused
            // now (the cashback was spent) rather than after the card was
            // refunded.
            //
            // The reversal is the payment's, not the key's: the transition
            // (done → cancelling) makes it happen once, whichever request or
            // completer then finishes the cancel, and the key may be freed
            // and re-admitted while the refund's outcome is unknown. The
            // key's one effect is the refund, booked with its completion.
            (Method::Gateway, PaymentStatus::Done) => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let decision = decide::begin_cancel(&loaded, &wallet, booking, &mut next_id)?;
                self.persist(tx, Some(&loaded), &wallet, &decision).await?;
                Ok(Step::Call(decision.payment, Call::Cancel, answer))
            }
            // Another request's cancel in flight: this one is a second
            // cancel, refused as it is once the first one settled.
            (Method::Gateway, PaymentStatus::Cancelling) if another_request(&loaded, booking) => {
                let event = PaymentEvent::BeginCancel { requested_by: booking.requested_by() };
                Err(crate::payment::InvalidTransition { from: loaded.status, event }.into())
            }
            // The retry of the cancel whose outcome is unknown: the
            // gateway's cancel is idempotent, so asking again is safe.
            (Method::Gateway, PaymentStatus::Cancelling) => Ok(Step::Call(loaded, Call::Cancel, answer)),
            // The retry of the request that began this cancel, after the
            // completer settled it: that request's effect, answered as such.
            (Method::Gateway, PaymentStatus::Cancelled) if began_phase(&loaded, booking) => {
                let order = match (answer, loaded.order) {
                    (Answer::Order, Some(order)) => tx.order(order).await?,
                    _ => None,
                };
                Ok(Step::Done(match order {
                    Some(order) => Outcome::Order(self.order_view(order)),
                    None => Outcome::Payment(loaded),
                }))
            }
            _ => {
                let wallet = tx.wallet(user).await?.ok_or(Error::NotFound)?;
                let decision = decide::cancel(&loaded, &wallet, booking, &mut next_id)?;
                self.persist(tx, Some(&loaded), &wallet, &decision).await?;
                let order = self.follow_order(tx, &loaded, &decision.payment, booking.at, locked).await?;
                Ok(Step::Done(match (answer, order) {
                    (Answer::Order, Some(order)) => Outcome::Order(self.order_view(order)),
                    _ => Outcome::Payment(decision.payment),
                }))
            }
        }
    }

    /// `wait → confirming` and commit: the permit to send the confirm once,
    /// with the payment key claimed and the payback's room held. A payment
    /// already confirming (another request is sending it, or one crashed
    /// after sending it) is looked up instead; one owing a refund sends it.
    pub(super) async fn begin_gateway_confirm(
        &self,
        tx: &mut impl Tx,
        loaded: Payment,
        payment_key: Option<&str>,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        // The retry of the request that began this confirm, after the
        // completer settled it: that request's effect, answered as such.
        if matches!(loaded.status, PaymentStatus::Done | PaymentStatus::Failed) && began_phase(&loaded, booking) {
            return Ok(Step::Done(Outcome::Payment(loaded)));
        }
        if let (PaymentStatus::Confirming | PaymentStatus::Refunding, Some(call)) =
            (loaded.status, Call::to_resolve(&loaded))
        {
            // Another request than the one that began this confirm, or
            // another payment key than the one being charged, is a second
            // confirm, refused as it is once the first one settled: it must
            // not be answered with a charge it did not make.
            let attempt = loaded.gateway.as_ref().expect("an in-flight gateway payment has its attempt");
            let other_key = payment_key.is_some_and(|key| key != attempt.payment_key);
            let second =
                another_request(&loaded, booking) || (other_key && !crate::mutant::active("other_key_answered"));
            if second {
                let payment_key = payment_key.unwrap_or(&attempt.payment_key).to_owned();
                let event = PaymentEvent::BeginConfirm { payment_key, requested_by: booking.requested_by() };
                return Err(crate::payment::InvalidTransition { from: loaded.status, event }.into());
            }
            // The retry of the request that began it (its outcome unknown):
            // look the charge up (or send the owed refund).
            return Ok(Step::Call(loaded, call, Answer::Payment));
        }
        let Some(payment_key) = payment_key else {
            return Err(Error::InvalidState("a gateway payment is confirmed with its payment_key"));
        };
        // A key belongs to one payment, forever: another payment's key would
        // make one card charge pay two payments (and its refund undo both).
        let unbound = crate::mutant::active("payment_key_unbound");
        if !unbound {
            ensure_key_locked(locked, payment_key)?;
            if tx.payment_by_key(payment_key).await?.is_some_and(|owner| owner != loaded.id) {
                return Err(Error::PaymentKeyInUse);
            }
        }
        let wallet = tx.wallet(loaded.user).await?.ok_or(Error::NotFound)?;
        let (confirming, held) =
            decide::begin_confirm(&loaded, &wallet, payment_key, booking.requested_by(), booking.at)?;
        tx.put_payment(Some(&loaded), &confirming).await?;
        if held != wallet {
            tx.put_wallet(Some(&wallet), &held).await?;
        }
        // The order is marked as being paid before the charge is sent, so
        // the sweeper cannot expire it while the money may be on its way.
        self.follow_order(tx, &loaded, &confirming, booking.at, locked).await?;
        Ok(Step::Call(confirming, Call::Confirm, Answer::Payment))
    }

    /// Writes a payment decision. `stored`: the payment as the store holds
    /// it (none for one created in this transaction).
    pub(super) async fn persist(
        &self,
        tx: &mut impl Tx,
        stored: Option<&Payment>,
        wallet: &Wallet,
        decision: &Decision,
    ) -> Result<(), Error> {
        tx.put_payment(stored, &decision.payment).await?;
        // A gateway charge books transfers without touching the wallet.
        if decision.wallet != *wallet {
            tx.put_wallet(Some(wallet), &decision.wallet).await?;
        }
        if !decision.transfers.is_empty() {
            tx.append_transfers(&decision.transfers).await?;
        }
        Ok(())
    }
}

/// Whether the request running under `booking` began `payment`'s current
/// (or last) gateway phase: its `Idempotency-Key`, of the payment's owner.
pub(super) fn began_phase(payment: &Payment, booking: &Booking) -> bool {
    // Mutant: the retry of a settled phase's request is refused as a second
    // confirm or cancel (409), as before the attempt kept its key.
    if crate::mutant::active("settled_phase_refused") {
        return false;
    }
    let Some(origin) = &booking.origin else { return false };
    origin.scope.user == payment.user && payment.gateway.as_ref().is_some_and(|a| a.requested_by(&origin.scope.key))
}

/// Whether the request running under `booking` is another than the one
/// that began `payment`'s gateway phase, still in flight: a second confirm
/// or cancel. Only the request that began a phase drives it (its retry looks
/// the outcome up); the completer settles it otherwise. A phase whose
/// requester is not recorded (begun before the attempt kept it) is driven
/// by whichever request comes.
fn another_request(payment: &Payment, booking: &Booking) -> bool {
    // Mutant: a second request joins the phase in flight and is answered
    // with its outcome, as before.
    if crate::mutant::active("other_key_answered") {
        return false;
    }
    let Some(requester) = payment.gateway.as_ref().and_then(|a| a.requested_by.as_ref()) else { return false };
    !booking.origin.as_ref().is_some_and(|o| o.scope.user == payment.user && o.scope.key == *requester)
}

/// A payment key is claimed under its lock (the peek that chose the locks
/// saw the request's key, so this only fails on a bug).
fn ensure_key_locked(locked: &LockSet, payment_key: &str) -> Result<(), Error> {
    let key = LockKey::PaymentKey(payment_key.to_owned());
    if locked.keys().binary_search(&key).is_err() {
        return Err(Error::Store(StoreError::Integrity("payment key claimed without its lock".into())));
    }
    Ok(())
}
