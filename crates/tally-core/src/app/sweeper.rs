//! The expiry sweeper (seed 004's scheduled job): unpaid orders past their
//! TTL become `expired` and give their stock and seats back.

use super::locking::{ensure_locked, order_keys};
use super::*;
use crate::decide;

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// The expiry sweeper (seed 004's scheduled job): unpaid orders past
    /// their TTL become `expired` and give their stock and seats back, each
    /// in its own transaction, at most `limit` per call. An order someone
    /// else holds (a payment, another sweeper) is skipped, not waited for:
    /// the next sweep, or the holder, settles it. Returns how many expired.
    pub async fn expire_orders(&self, limit: usize) -> Result<usize, Error> {
        assert!(limit > 0 && limit <= 1_000, "a sweep expires 1 to 1000 orders");
        let now = self.clock.now();
        let mut tx = self.store.peek().await?;
        let candidates = tx.expired_orders(now, limit).await;
        tx.rollback().await;
        let mut expired = 0;
        for id in candidates? {
            let keys = LockSet::new(self.order_keys_of(Some(id)).await?);
            let Ok(guard) = self.locks.acquire(&keys, Duration::ZERO).await else { continue };
            // Skipped, not waited for, in the store too.
            let mut tx = match self.store.begin_locked(&keys, &guard.fences(), Duration::ZERO).await {
                Ok(tx) => tx,
                Err(StoreError::Busy) => continue,
                Err(error) => return Err(error.into()),
            };
            match self.expire_in(&mut tx, id, now, &keys).await {
                Ok(true) => {}
                Ok(false) | Err(Error::Order(_) | Error::Store(StoreError::Conflict | StoreError::Busy)) => {
                    tx.rollback().await;
                    continue;
                }
                Err(error) => {
                    tx.rollback().await;
                    return Err(error);
                }
            }
            match tx.commit().await {
                Ok(()) => expired += 1,
                Err(StoreError::Conflict) => {}
                Err(error) => return Err(error.into()),
            }
            drop(guard);
        }
        Ok(expired)
    }

    async fn expire_in(&self, tx: &mut impl Tx, id: OrderId, now: Timestamp, locked: &LockSet) -> Result<bool, Error> {
        let Some(order) = tx.order_skip_locked(id).await? else { return Ok(false) };
        ensure_locked(locked, order_keys(&order))?;
        // Re-checked under the lock: the listing was an unlocked read, and a
        // payment may have landed since.
        let Some(expired) = decide::order::expire(&order, now)? else { return Ok(false) };
        self.release(tx, &order, now).await?;
        tx.put_order(Some(&order), &expired).await?;
        Ok(true)
    }
}
