//! Idempotency records (SPEC.md "Idempotency"; the IETF Idempotency-Key draft;
//! Stripe; brandur's rocket-rides).
//!
//! A keyed request is **admitted, run and answered in one transaction**:
//! it looks up `(user, key)` ([`admit`]); no record (or an expired one) →
//! it runs, and writes the record *completed*, with the stored response, in
//! the transaction that writes the effect. A completed record with the same
//! fingerprint → replay; another fingerprint → reused; a live in-flight
//! record → in use. So the key and its effect commit together or not at
//! all: a crash, an abandoned request or an ambiguous commit leaves either
//! both or neither, and a retry replays or runs exactly once. Two racing
//! first requests both run, and the store lets one commit (the key is
//! unique); the other decides again and replays.
//!
//! Only a gateway payment commits its record *in flight* (with a lease
//! token) before its effect: the intent is committed before the gateway is
//! called, and the key must say "in use" meanwhile. The verdict's
//! transaction completes it, after checking the record is still in flight
//! under this request's lease; past the lease a new request may take the
//! key over, and the stalled one is fenced off by its token.
//!
//! The core does not know HTTP: a stored response is an opaque status and body
//! that the HTTP layer renders and replays byte for byte.

use crate::ids::{OpId, UserId};
use crate::time::Timestamp;

/// Longest key accepted (SPEC.md: 1–255 printable ASCII characters).
pub const KEY_LENGTH_MAX: usize = 255;

/// A validated `Idempotency-Key` value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdemKey(String);

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("an idempotency key is 1 to 255 printable ASCII characters")]
pub struct InvalidIdemKey;

impl IdemKey {
    pub fn new(text: &str) -> Result<IdemKey, InvalidIdemKey> {
        let printable = text.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if text.is_empty() || text.len() > KEY_LENGTH_MAX || !printable {
            return Err(InvalidIdemKey);
        }
        Ok(IdemKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keys are scoped to their caller: two users may use the same key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdemScope {
    pub user: UserId,
    pub key: IdemKey,
}

/// Which admission of a key booked an effect: the key, and when that
/// admission's record expires. Stored on every transfer the effect books, so
/// the checker can tell a second effect within one key's life (a bug) from a
/// reuse of the key after it expired (allowed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdemOrigin {
    pub scope: IdemScope,
    pub expires_at: Timestamp,
}

/// A digest of the request (method, path, body) computed by the HTTP layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// A response exactly as first sent, to be replayed byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Identifies one admission of a key. Completion requires the same token, so
/// a request whose lease was taken over after it stalled cannot complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub u128);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdemState {
    InFlight { lease: LeaseToken, lease_expires_at: Timestamp },
    Completed { response: StoredResponse, op: Option<OpId> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemRecord {
    pub scope: IdemScope,
    pub fingerprint: Fingerprint,
    pub state: IdemState,
    pub created_at: Timestamp,
    /// After this instant the key is forgotten and may be used afresh.
    pub expires_at: Timestamp,
    pub version: u64,
}

/// How long keys live and how long one admission may hold a key.
#[derive(Clone, Copy, Debug)]
pub struct IdemConfig {
    pub ttl: std::time::Duration,
    /// Must exceed the longest a request can run (the HTTP request timeout):
    /// past it, a new request with the key may take it over, and the stalled
    /// one is fenced off by its lease token.
    pub lease: std::time::Duration,
}

/// What admission decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Proceed; persist this in-flight record (insert or overwrite `before`).
    Start(IdemRecord),
    Replay(StoredResponse),
    InUse,
    Reused,
}

/// The admission decision for a request with `fingerprint` on `scope`.
pub fn admit(
    existing: Option<&IdemRecord>,
    scope: &IdemScope,
    fingerprint: Fingerprint,
    lease: LeaseToken,
    config: IdemConfig,
    now: Timestamp,
) -> Admission {
    let fresh = |version: u64| IdemRecord {
        scope: scope.clone(),
        fingerprint,
        state: IdemState::InFlight { lease, lease_expires_at: now.plus(config.lease) },
        created_at: now,
        expires_at: now.plus(config.ttl),
        version,
    };
    let Some(record) = existing else {
        return Admission::Start(fresh(0));
    };
    debug_assert_eq!(&record.scope, scope);
    let next_version = record.version + 1;
    if record.expires_at <= now {
        return Admission::Start(fresh(next_version));
    }
    match &record.state {
        // A live admission of the same key: whatever its fingerprint, the
        // caller must wait for it (the draft answers 409 here).
        IdemState::InFlight { lease_expires_at, .. } if *lease_expires_at > now => {
            if crate::mutant::active("idem_ignores_inflight") {
                return Admission::Start(fresh(next_version));
            }
            Admission::InUse
        }
        // The previous holder stalled or crashed past its lease. Its effect
        // cannot have committed (effect and completion share a transaction),
        // so the key is free again; its lease token no longer matches.
        IdemState::InFlight { .. } => {
            if record.fingerprint == fingerprint {
                Admission::Start(fresh(next_version))
            } else {
                Admission::Reused
            }
        }
        IdemState::Completed { response, .. } => {
            if record.fingerprint == fingerprint {
                Admission::Replay(response.clone())
            } else {
                Admission::Reused
            }
        }
    }
}

impl IdemRecord {
    /// Is this record in flight under `lease`?
    pub fn held_by(&self, lease: LeaseToken) -> bool {
        matches!(self.state, IdemState::InFlight { lease: held, .. } if held == lease)
    }

    /// The completion transition: only the lease holder may complete.
    pub fn complete(&self, lease: LeaseToken, response: StoredResponse, op: Option<OpId>) -> Option<IdemRecord> {
        if !self.held_by(lease) {
            return None;
        }
        Some(IdemRecord { state: IdemState::Completed { response, op }, version: self.version + 1, ..self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CONFIG: IdemConfig = IdemConfig { ttl: Duration::from_secs(100), lease: Duration::from_secs(10) };

    fn scope() -> IdemScope {
        IdemScope { user: UserId(1), key: IdemKey::new("k-1").unwrap() }
    }

    fn response() -> StoredResponse {
        StoredResponse { status: 201, content_type: "application/json".into(), body: b"{}".to_vec() }
    }

    #[test]
    fn key_validation() {
        assert!(IdemKey::new("").is_err());
        assert!(IdemKey::new(&"a".repeat(256)).is_err());
        assert!(IdemKey::new("tab\there").is_err());
        assert!(IdemKey::new("é").is_err());
        assert!(IdemKey::new(&"a".repeat(255)).is_ok());
        assert!(IdemKey::new(" spaced ~").is_ok());
    }

    #[test]
    fn admission_table() {
        let fp = Fingerprint([1; 32]);
        let other = Fingerprint([2; 32]);
        let t0 = Timestamp(0);
        let Admission::Start(inflight) = admit(None, &scope(), fp, LeaseToken(1), CONFIG, t0) else { panic!() };
        assert!(inflight.held_by(LeaseToken(1)));
        // In flight, whatever the fingerprint: in use.
        assert_eq!(admit(Some(&inflight), &scope(), fp, LeaseToken(2), CONFIG, t0), Admission::InUse);
        assert_eq!(admit(Some(&inflight), &scope(), other, LeaseToken(2), CONFIG, t0), Admission::InUse);
        // Completed: replay the same request, refuse another.
        let done = inflight.complete(LeaseToken(1), response(), None).unwrap();
        assert_eq!(admit(Some(&done), &scope(), fp, LeaseToken(2), CONFIG, t0), Admission::Replay(response()));
        assert_eq!(admit(Some(&done), &scope(), other, LeaseToken(2), CONFIG, t0), Admission::Reused);
        // Expired: start afresh.
        let later = Timestamp(100_000);
        assert!(
            matches!(admit(Some(&done), &scope(), other, LeaseToken(2), CONFIG, later), Admission::Start(r) if r.version == 2)
        );
    }

    #[test]
    fn stale_lease_is_taken_over_and_fences_the_old_holder() {
        let fp = Fingerprint([1; 32]);
        let Admission::Start(first) = admit(None, &scope(), fp, LeaseToken(1), CONFIG, Timestamp(0)) else { panic!() };
        let Admission::Start(second) = admit(Some(&first), &scope(), fp, LeaseToken(2), CONFIG, Timestamp(10_000))
        else {
            panic!()
        };
        assert!(second.complete(LeaseToken(1), response(), None).is_none(), "old lease must not complete");
        assert!(second.complete(LeaseToken(2), response(), None).is_some());
    }
}
