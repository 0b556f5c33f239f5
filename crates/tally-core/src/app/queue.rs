//! The waiting queue's use cases (seed 002): joining an event's queue, a
//! token's status, and the refresh that retires and promotes tokens
//! ([`queue::refresh`], the one function that moves them).

use super::locking::the_queue;
use super::*;
use crate::catalog;
use crate::decide::order::stale;
use crate::queue::{self, QueueToken, TokenStatus};

/// A queue token as its owner sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenView {
    pub token: QueueToken,
    pub status: TokenStatus,
    /// 0 once promoted; else the place in line (1 = next).
    pub position: u64,
}

/// Most tokens one event can have active at once, as a load bound.
const ACTIVE_LOAD_MAX: usize = catalog::ACTIVE_LIMIT_MAX as usize;

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    pub(super) async fn join_queue(
        &self,
        tx: &mut impl Tx,
        user: UserId,
        event: EventId,
        booking: &Booking,
    ) -> Result<Step, Error> {
        let loaded = tx.event(event).await?.ok_or(Error::NotFound)?;
        let now = booking.at;
        // One live token per user and event: joining again answers it.
        let live = tx
            .user_token(event, user)
            .await?
            .filter(|t| t.status == TokenStatus::Waiting || (t.status == TokenStatus::Active && t.usable(now)));
        let joining = match &live {
            Some(_) => None,
            None => Some((TokenId(self.ids.next_id()), user)),
        };
        let mine = live.as_ref().map_or_else(|| joining.map(|(id, _)| id), |t| Some(t.id));
        let (event, written) = self.refresh_queue(tx, &loaded, joining, None, now).await?;
        let token = written
            .into_iter()
            .find(|t| Some(t.id) == mine)
            .or(live)
            .expect("the caller's token is live or was just joined");
        Ok(Step::Done(Outcome::Token(token_view(token, &event, now))))
    }

    pub(super) async fn queue_status(
        &self,
        tx: &mut impl Tx,
        user: UserId,
        token: TokenId,
        booking: &Booking,
        locked: &LockSet,
    ) -> Result<Step, Error> {
        // The queue key came from a peek at the token; no key, no token.
        let event = the_queue(locked).ok_or(Error::NotFound)?;
        let now = booking.at;
        // The event row guards its tokens: load it first.
        let event = tx.event(event).await?.ok_or(StoreError::Integrity("token of no event".into()))?;
        let loaded = tx.token(token).await?.filter(|t| t.user == user && t.event == event.id).ok_or(Error::NotFound)?;
        let (event, written) = self.refresh_queue(tx, &event, None, None, now).await?;
        let token = written.into_iter().find(|t| t.id == token).unwrap_or(loaded);
        Ok(Step::Done(Outcome::Token(token_view(token, &event, now))))
    }

    /// Loads an event's queue, runs [`queue::refresh`] (with `joining`, a
    /// token not yet stored, at the back of the line) and writes what moved.
    /// Returns the tokens as written and the event.
    pub(super) async fn refresh_queue(
        &self,
        tx: &mut impl Tx,
        event: &Event,
        joining: Option<(TokenId, UserId)>,
        used: Option<TokenId>,
        now: Timestamp,
    ) -> Result<(Event, Vec<QueueToken>), Error> {
        let active = tx.tokens(event.id, TokenStatus::Active, ACTIVE_LOAD_MAX).await?;
        let mut waiting = tx.tokens(event.id, TokenStatus::Waiting, event.active_limit as usize).await?;
        // The queue was read after `now`: the transaction that freed a slot
        // may have committed in between, stamped later than `now`. Promoting
        // at the earlier time would overlap the two tokens' activity, so
        // read the clock again once everything the decision rests on is
        // read. (What matters is the event's read: a slot freed between it
        // and the tokens' reads also moved the event's version, so this
        // transaction's event write is refused and the request runs again.)
        let now = self.clock.now().max(now);
        let mut joined_event = event.clone();
        let mut joined = None;
        if let Some((id, user)) = joining {
            let (next, token) = queue::join(event, id, user, now);
            if waiting.last().is_some_and(|last| last.seq >= token.seq) {
                // The event row was read before another join committed (no
                // row locks: optimistic, atomic): its counter is stale.
                return Err(stale());
            }
            joined_event = next;
            joined = Some(token.clone());
            // At the back of the line: promoted only if every waiting token
            // ahead of it is (the load holds as many as there are slots).
            waiting.push(token);
        }
        // The token was checked usable by another read; without locks (an
        // optimistic store) the two reads may disagree: retry.
        let refreshed = queue::refresh(&joined_event, &active, &waiting, used, now).map_err(|_| stale())?;
        if refreshed.event != *event {
            tx.put_event(Some(event), &refreshed.event).await?;
        }
        let mut written = refreshed.changed.clone();
        if let Some(joined) = joined.as_ref().filter(|j| !written.iter().any(|t| t.id == j.id)) {
            written.push(joined.clone());
        }
        for token in &written {
            let before = if joined.as_ref().is_some_and(|j| j.id == token.id) {
                None
            } else {
                active.iter().chain(waiting.iter()).find(|t| t.id == token.id)
            };
            tx.put_token(before, token).await?;
        }
        Ok((refreshed.event, written))
    }

    /// The order was paid: its queue token is used up and its slot goes to
    /// the next in line. A token that already expired (or was used by
    /// another order) has no slot to give.
    pub(super) async fn use_token(&self, tx: &mut impl Tx, order: &Order, now: Timestamp) -> Result<(), Error> {
        let (Some(token), Some(event)) = (order.token, order.event) else { return Ok(()) };
        let loaded = tx.event(event).await?.ok_or(StoreError::Integrity(format!("event {event} gone")))?;
        let usable = tx.token(token).await?.is_some_and(|t| t.usable(now));
        let used = usable.then_some(token);
        self.refresh_queue(tx, &loaded, None, used, now).await?;
        Ok(())
    }

    /// The caller's queue token, its queue refreshed first (a waiting token
    /// may have been promoted, an active one may have expired).
    pub async fn queue_token(&self, user: UserId, token: TokenId) -> Result<TokenView, Error> {
        match self.execute(user, Command::QueueStatus { token }, None).await? {
            Executed::Fresh(Outcome::Token(view)) => Ok(view),
            other => unreachable!("a queue status is a token, not {other:?}"),
        }
    }
}

fn token_view(token: QueueToken, event: &Event, now: Timestamp) -> TokenView {
    TokenView { status: token.status_at(now), position: token.position(event), token }
}
