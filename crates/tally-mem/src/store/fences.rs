//! Fencing: the largest lock token each key's transactions have claimed, and
//! the two checks that make a paused lock holder harmless.
//!
//! A transaction begun under a lock grant ([`Store::begin_locked`]) claims
//! each key's token at begin: a token smaller than one already claimed is
//! refused there (a later grant has run), and a transaction whose claim was
//! overtaken since is refused at commit, before anything is applied. Equal
//! tokens pass: one grant may run several transactions. A transaction begun
//! without tokens claims nothing and is never refused.
//!
//! The map keeps one entry per key ever locked: the same order of size as
//! the records those keys name, which the store keeps too.
//!
//! [`Store::begin_locked`]: tally_core::store::Store::begin_locked

use std::collections::BTreeMap;

use tally_core::store::{Fences, LockKey, StoreError};

/// Mutant: neither check runs, so a holder whose lease ran out writes over
/// the records a later holder wrote (blind writes under locks lose that
/// update).
pub const FENCE_UNCHECKED: &str = "fence_unchecked";

/// The largest token claimed per key.
#[derive(Debug, Default)]
pub(super) struct Claims(BTreeMap<LockKey, u64>);

impl Claims {
    /// Claims every token of `fences`, or none if one is stale.
    pub(super) fn claim(&mut self, fences: &Fences) -> Result<(), StoreError> {
        let stale = fences.tokens().iter().any(|(key, token)| self.0.get(key).is_some_and(|latest| latest > token));
        if stale && !tally_core::mutant::active(FENCE_UNCHECKED) {
            return Err(StoreError::Fenced);
        }
        for (key, token) in fences.tokens() {
            let latest = self.0.entry(key.clone()).or_insert(*token);
            *latest = (*latest).max(*token);
        }
        Ok(())
    }

    /// Whether every claim of `fences` is still the latest of its key.
    pub(super) fn still_latest(&self, fences: &Fences) -> Result<(), StoreError> {
        let overtaken = fences.tokens().iter().any(|(key, token)| self.0.get(key) != Some(token));
        if overtaken && !tally_core::mutant::active(FENCE_UNCHECKED) {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::ids::UserId;

    fn fences(tokens: &[(u128, u64)]) -> Fences {
        Fences::new(tokens.iter().map(|(user, token)| (LockKey::Wallet(UserId(*user)), *token)))
    }

    #[test]
    fn a_later_claim_fences_off_the_earlier_one_and_equal_tokens_pass() {
        let mut claims = Claims::default();
        claims.claim(&fences(&[(1, 2)])).unwrap();
        claims.claim(&fences(&[(1, 2)])).unwrap();
        assert_eq!(claims.still_latest(&fences(&[(1, 2)])), Ok(()));
        assert_eq!(claims.claim(&fences(&[(1, 1), (2, 9)])), Err(StoreError::Fenced));
        assert_eq!(claims.still_latest(&fences(&[(2, 9)])), Err(StoreError::Fenced), "a refused claim claims nothing");
        claims.claim(&fences(&[(1, 5)])).unwrap();
        assert_eq!(claims.still_latest(&fences(&[(1, 2)])), Err(StoreError::Fenced));
        assert_eq!(claims.claim(&Fences::default()), Ok(()));
        assert_eq!(claims.still_latest(&Fences::default()), Ok(()));
    }
}
