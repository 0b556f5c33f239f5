//! The waiting queue of an event (seed 002's token API).
//!
//! ```text
//!  token:  waiting ──promote (a slot is free)──► active ──TTL passed──► expired
//!                                                   └───order paid────► used
//! ```
//!
//! The event row holds the queue's counters and is what every queue change
//! locks; tokens change only under it. [`refresh`] is the one place tokens
//! move: it retires active tokens whose TTL passed, then promotes waiting
//! tokens in join order while fewer than `active_limit` are active — so SPEC.md
//! invariant 8 is a property of one pure function, checked again from the
//! tokens' own activation intervals by the checker.

use std::time::Duration;

use crate::catalog::Event;
use crate::ids::{EventId, TokenId, UserId};
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    Waiting,
    Active,
    /// Its TTL passed while active.
    Expired,
    /// Its order was paid; its slot went to the next in line.
    Used,
}

impl TokenStatus {
    /// As the API shows it: a used token is over, like an expired one.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Waiting => "waiting",
            TokenStatus::Active => "active",
            TokenStatus::Expired | TokenStatus::Used => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueToken {
    pub id: TokenId,
    pub event: EventId,
    pub user: UserId,
    /// Join order within the event, from 1.
    pub seq: u64,
    pub status: TokenStatus,
    pub joined_at: Timestamp,
    /// When it became active, and when its activity ends (its TTL).
    pub activated_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// When it was used (its order paid), if it was.
    pub used_at: Option<Timestamp>,
    /// Seats held or sold by the live orders booked with it.
    pub seats_held: u32,
    pub version: u64,
}

impl QueueToken {
    /// Active and inside its TTL: good for booking seats.
    pub fn usable(&self, now: Timestamp) -> bool {
        self.status == TokenStatus::Active && self.expires_at.is_some_and(|end| now < end)
    }

    /// The token after an order booked `seats` more with it, or `None` if
    /// that would pass the event's `max_seats_per_token`.
    pub fn book_seats(&self, seats: u32, max_seats_per_token: u32) -> Option<QueueToken> {
        let held = self.seats_held.checked_add(seats)?;
        let unchecked = crate::mutant::active("seat_hoarding");
        (held <= max_seats_per_token || unchecked).then(|| QueueToken {
            seats_held: held,
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// The token after an order booked with it gave `seats` back (cancelled
    /// or expired).
    pub fn free_seats(&self, seats: u32) -> QueueToken {
        let held = self.seats_held.checked_sub(seats).expect("a token frees only seats it holds");
        QueueToken { seats_held: held, version: self.version + 1, ..self.clone() }
    }

    /// What a reader sees: an active token past its TTL is expired even
    /// before a refresh wrote it so.
    pub fn status_at(&self, now: Timestamp) -> TokenStatus {
        if self.status == TokenStatus::Active && !self.usable(now) { TokenStatus::Expired } else { self.status }
    }

    /// When its hold on a slot ended (or ends), if it ever had one.
    pub fn active_until(&self) -> Option<Timestamp> {
        match (self.expires_at, self.used_at) {
            (Some(end), Some(used)) => Some(end.min(used)),
            (end, None) => end,
            (None, used) => used,
        }
    }

    /// Position in line: 0 once promoted, else how many wait ahead plus one.
    pub fn position(&self, event: &Event) -> u64 {
        if self.status == TokenStatus::Waiting { self.seq - event.head_seq + 1 } else { 0 }
    }
}

/// A new token at the back of `event`'s line; the event's counter moves.
pub fn join(event: &Event, id: TokenId, user: UserId, now: Timestamp) -> (Event, QueueToken) {
    let token = QueueToken {
        id,
        event: event.id,
        user,
        seq: event.next_seq,
        status: TokenStatus::Waiting,
        joined_at: now,
        activated_at: None,
        expires_at: None,
        used_at: None,
        seats_held: 0,
        version: 0,
    };
    let next = Event { next_seq: event.next_seq + 1, version: event.version + 1, ..event.clone() };
    (next, token)
}

/// The queue after time passed and, optionally, one active token was used:
/// the event as it must be written and every token that changed (as written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refreshed {
    pub event: Event,
    pub changed: Vec<QueueToken>,
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("queue token {0} is not active")]
pub struct TokenNotActive(pub TokenId);

/// Retires active tokens past their TTL (and `used`, if given and still
/// active), then promotes waiting tokens in join order into the free slots.
///
/// `active` must be every active token of the event; `waiting` the oldest
/// waiting ones, in join order, at least as many as can be promoted (the
/// caller loads `active_limit` of them).
pub fn refresh(
    event: &Event,
    active: &[QueueToken],
    waiting: &[QueueToken],
    used: Option<TokenId>,
    now: Timestamp,
) -> Result<Refreshed, TokenNotActive> {
    assert!(active.iter().all(|t| t.event == event.id && t.status == TokenStatus::Active));
    assert!(waiting.iter().all(|t| t.event == event.id && t.status == TokenStatus::Waiting));
    assert!(waiting.windows(2).all(|w| w[0].seq < w[1].seq), "waiting tokens in join order");
    let bump = |t: &QueueToken| QueueToken { version: t.version + 1, ..t.clone() };
    let mut changed = Vec::new();
    let mut still_active = 0u32;
    if let Some(used) = used {
        let token = active.iter().find(|t| t.id == used && t.usable(now)).ok_or(TokenNotActive(used))?;
        changed.push(QueueToken { status: TokenStatus::Used, used_at: Some(now), ..bump(token) });
    }
    for token in active.iter().filter(|t| Some(t.id) != used) {
        if token.usable(now) {
            still_active += 1;
        } else {
            changed.push(QueueToken { status: TokenStatus::Expired, ..bump(token) });
        }
    }
    let mut head_seq = event.head_seq;
    let free = event.active_limit.saturating_sub(still_active);
    let promoted_max = if crate::mutant::active("queue_over_admit") { free + 1 } else { free };
    for token in waiting.iter().take(promoted_max as usize) {
        changed.push(QueueToken {
            status: TokenStatus::Active,
            activated_at: Some(now),
            expires_at: Some(now.plus(event.token_ttl)),
            ..bump(token)
        });
        still_active += 1;
        head_seq = token.seq + 1;
    }
    if changed.is_empty() {
        return Ok(Refreshed { event: event.clone(), changed });
    }
    debug_assert!(still_active <= event.active_limit || crate::mutant::active("queue_over_admit"));
    let event = Event { head_seq, active_count: still_active, version: event.version + 1, ..event.clone() };
    Ok(Refreshed { event, changed })
}

/// The bounds an event's queue settings must be within.
pub fn valid_settings(active_limit: u32, token_ttl: Duration) -> bool {
    (1..=crate::catalog::ACTIVE_LIMIT_MAX).contains(&active_limit)
        && token_ttl >= Duration::from_secs(1)
        && token_ttl <= crate::catalog::TOKEN_TTL_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(limit: u32) -> Event {
        Event {
            id: EventId(1),
            name: "e".into(),
            active_limit: limit,
            token_ttl: Duration::from_secs(10),
            next_seq: 1,
            head_seq: 1,
            active_count: 0,
            max_seats_per_token: 4,
            created_at: Timestamp(0),
            version: 0,
        }
    }

    /// Joins `n` users and refreshes at `now`; returns the event and all tokens.
    fn joined(limit: u32, n: u64, now: Timestamp) -> (Event, Vec<QueueToken>) {
        let mut e = event(limit);
        let mut tokens = Vec::new();
        for i in 0..n {
            let (next, token) = join(&e, TokenId(u128::from(i) + 1), UserId(u128::from(i) + 1), now);
            e = next;
            tokens.push(token);
        }
        let r = refresh(&e, &[], &tokens, None, now).unwrap();
        for t in r.changed {
            let slot = tokens.iter_mut().find(|x| x.id == t.id).unwrap();
            *slot = t;
        }
        (r.event, tokens)
    }

    #[test]
    fn never_more_than_the_limit_active() {
        let (e, tokens) = joined(2, 5, Timestamp(0));
        let active: Vec<_> = tokens.iter().filter(|t| t.status == TokenStatus::Active).map(|t| t.seq).collect();
        assert_eq!(active, [1, 2], "the first two in line");
        assert_eq!((e.active_count, e.head_seq), (2, 3));
        let waiting: Vec<_> = tokens.iter().filter(|t| t.status == TokenStatus::Waiting).collect();
        assert_eq!(waiting.iter().map(|t| t.position(&e)).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn an_expired_or_used_token_frees_its_slot_for_the_next_in_line() {
        let (e, tokens) = joined(2, 4, Timestamp(0));
        let active: Vec<_> = tokens.iter().filter(|t| t.status == TokenStatus::Active).cloned().collect();
        let waiting: Vec<_> = tokens.iter().filter(|t| t.status == TokenStatus::Waiting).cloned().collect();
        // Token 1 is used at t=5: token 3 is promoted, token 2 stays.
        let r = refresh(&e, &active, &waiting, Some(TokenId(1)), Timestamp(5)).unwrap();
        let by_id = |id: u128| r.changed.iter().find(|t| t.id == TokenId(id)).map(|t| t.status);
        assert_eq!(
            (by_id(1), by_id(2), by_id(3), by_id(4)),
            (Some(TokenStatus::Used), None, Some(TokenStatus::Active), None)
        );
        assert_eq!(r.event.active_count, 2);
        // At t=10 s token 2's TTL is over (token 3's is not): token 2
        // expires and token 4 is promoted.
        let still: Vec<_> = vec![active[1].clone(), r.changed[1].clone()];
        let r2 = refresh(&r.event, &still, &waiting[1..], None, Timestamp(10_000)).unwrap();
        assert_eq!(
            r2.changed.iter().map(|t| (t.seq, t.status)).collect::<Vec<_>>(),
            [(2, TokenStatus::Expired), (4, TokenStatus::Active)]
        );
        assert_eq!((r2.event.active_count, r2.event.head_seq), (2, 5));
    }

    #[test]
    fn a_used_token_must_be_active() {
        let (e, tokens) = joined(1, 2, Timestamp(0));
        let active: Vec<_> = tokens.iter().filter(|t| t.status == TokenStatus::Active).cloned().collect();
        assert_eq!(refresh(&e, &active, &[], Some(TokenId(2)), Timestamp(1)), Err(TokenNotActive(TokenId(2))));
        assert_eq!(refresh(&e, &active, &[], Some(TokenId(1)), Timestamp(10_000)), Err(TokenNotActive(TokenId(1))));
        assert!(refresh(&e, &active, &[], None, Timestamp(1)).unwrap().changed.is_empty(), "nothing to do");
    }

    #[test]
    fn a_token_books_at_most_its_events_seats_across_its_orders() {
        // Hole 7: one active token placing order after order.
        let (_, tokens) = joined(1, 1, Timestamp(0));
        let token = &tokens[0];
        let two = token.book_seats(2, 4).unwrap();
        let four = two.book_seats(2, 4).unwrap();
        assert_eq!(four.seats_held, 4);
        assert_eq!(four.book_seats(1, 4), None, "the fifth seat is refused");
        // An order given back frees its seats for the same token.
        assert_eq!(four.free_seats(2).book_seats(2, 4).map(|t| t.seats_held), Some(4));
    }
}
