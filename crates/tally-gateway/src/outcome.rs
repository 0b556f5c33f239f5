//! What the gateway said about one call, reduced to what the caller may do
//! next. These are plain data (no transport types) so the core's `Gateway`
//! trait can return them, or map them one to one, whatever carries the bytes.
//!
//! The one rule every variant serves: a confirm is sent at most once per
//! payment. Nothing here ever means "send the confirm again"; anything short
//! of a definite answer means "look the payment up".

/// What the gateway said about one confirm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The gateway charged the payment, and its reply describes exactly the
    /// payment we asked about (same key, order and amount).
    Approved { payment_key: String, order_id: String, amount: i64, approved_at: String },
    /// A definite refusal: nothing was charged. `code` is the gateway's code
    /// (`REJECT_CARD_PAYMENT`, `INVALID_REQUEST`, `UNAUTHORIZED_KEY`, …), or
    /// [`CLIENT_REFUSED`](crate::protocol::codes::CLIENT_REFUSED) when the
    /// client refused to send the request at all.
    Declined { code: String, message: String },
    /// The gateway has already processed this payment key. Neither success
    /// nor failure: an earlier confirm (ours, before a crash or a lost reply)
    /// may have charged it. Look the payment up and adopt what it says.
    AlreadyProcessed,
    /// We cannot tell whether the charge happened (timeout, reset, 5xx,
    /// unreadable reply, …). Look the payment up; never re-send the confirm
    /// blind.
    Unknown { reason: String },
}

/// What the gateway said about one lookup (`GET /v1/payments/{paymentKey}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The gateway knows the payment. `status` is its own word for it:
    /// [`STATUS_DONE`](crate::protocol::STATUS_DONE) (charged),
    /// [`STATUS_CANCELED`](crate::protocol::STATUS_CANCELED) (charged, then
    /// refunded) or anything else a real gateway may say (`WAITING_FOR_DEPOSIT`,
    /// `EXPIRED`, …). The caller must also compare `amount` with its own.
    Done { amount: i64, order_id: String, status: String },
    /// The gateway has no approved payment under this key. Conclusive only
    /// once no confirm of this key can still be in flight: a confirm delayed
    /// inside the gateway may still land after this answer.
    NotFound,
    /// No usable answer (timeout, 5xx, auth failure, unreadable reply, …).
    /// Lookups have no effect, so the caller may simply ask again later.
    Unknown { reason: String },
}

/// What the gateway said about one cancel (a full refund).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The payment was refunded by this call.
    Cancelled,
    /// The payment had already been refunded (by an earlier call of ours
    /// whose reply was lost, or by someone else). The money is back either way.
    AlreadyCancelled,
    /// The gateway has no such payment: there is nothing to refund.
    NotFound,
    /// A definite refusal that changed nothing (`NOT_CANCELABLE_PAYMENT`,
    /// `UNAUTHORIZED_KEY`, [`CLIENT_REFUSED`](crate::protocol::codes::CLIENT_REFUSED), …).
    Refused { code: String, message: String },
    /// We cannot tell whether the refund happened. Look the payment up;
    /// re-sending the cancel is safe only under the same idempotency key.
    Unknown { reason: String },
}

impl ConfirmOutcome {
    /// True when the caller must look the payment up before deciding anything.
    pub fn needs_lookup(&self) -> bool {
        matches!(self, Self::AlreadyProcessed | Self::Unknown { .. })
    }
}

impl CancelOutcome {
    /// True when the caller must look the payment up before deciding anything.
    pub fn needs_lookup(&self) -> bool {
        matches!(self, Self::Unknown { .. })
    }
}
