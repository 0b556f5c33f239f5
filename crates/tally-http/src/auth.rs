//! Who is calling: API keys, their hashes, and the extractors that turn an
//! `Authorization: Bearer <key>` header into a user or the admin.
//!
//! Keys are never stored, only their SHA-256. A key is 32 random bytes, so a
//! plain hash is enough (no salt or slow hash: there is nothing to brute-force).
//! The admin key is compared in constant time; user keys are found by hash
//! through the store's index, which leaks nothing about the key itself.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tally_core::store::User;

use crate::keys::hash_api_key;
use crate::problem::{ApiError, Code};
use crate::state::{AppState, Backend};

/// Equality whose running time does not depend on where the inputs differ,
/// so response timing cannot reveal how much of a guess of the admin key's
/// hash was right.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The key in `Authorization: Bearer <key>` (the scheme is case-insensitive).
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let missing = || ApiError::new(Code::Unauthorized, "an API key is required: Authorization: Bearer <key>");
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, key) = value.split_once(' ').ok_or_else(missing)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err(missing());
    }
    Ok(key)
}

/// Most API keys a router remembers (a user is about 100 bytes here).
pub const KNOWN_USERS_MAX: usize = 100_000;

/// Users already found by their key's hash. A user and its key never change
/// (there is no rename, rotation or deletion), so a key found once is not
/// looked up again: one read and its transaction less on every request.
/// Unknown keys are never remembered (a user created later, on any instance,
/// is found by the next lookup). Bounded: when full it is emptied and refills
/// from lookups, so a flood of distinct valid keys cannot grow it.
#[derive(Debug, Default)]
pub struct KnownUsers {
    users: Mutex<HashMap<[u8; 32], User>>,
}

impl KnownUsers {
    fn get(&self, hash: &[u8; 32]) -> Option<User> {
        self.users.lock().expect("known users lock").get(hash).cloned()
    }

    fn remember(&self, hash: [u8; 32], user: &User) {
        let mut users = self.users.lock().expect("known users lock");
        if users.len() >= KNOWN_USERS_MAX {
            users.clear();
        }
        users.insert(hash, user.clone());
        debug_assert!(users.len() <= KNOWN_USERS_MAX);
    }
}

/// The user whose key hashes to `hash`, if any: remembered, or looked up.
async fn user_of<B: Backend>(state: &AppState<B>, hash: [u8; 32]) -> Result<Option<User>, ApiError> {
    if let Some(user) = state.shared.known_users.get(&hash) {
        return Ok(Some(user));
    }
    let user = state.app.authenticate(hash).await?;
    if let Some(user) = &user {
        state.shared.known_users.remember(hash, user);
    }
    Ok(user)
}

/// Takes a token from a valid key's bucket (see [`crate::limits`]): checked
/// only once the key is known, and before the body or the `Idempotency-Key`
/// is read, so a 429 is never stored under a key.
fn rate_limit<B: Backend>(state: &AppState<B>, hash: &[u8; 32]) -> Result<(), ApiError> {
    match &state.shared.rate_limits {
        Some(limits) => limits.check(hash),
        None => Ok(()),
    }
}

fn unknown_key() -> ApiError {
    ApiError::new(Code::Unauthorized, "unknown API key")
}

/// The user a request acts for. Every user route takes this first, so an
/// unauthenticated request is refused before anything else is looked at.
#[derive(Clone, Debug)]
pub struct CurrentUser(pub User);

impl<B: Backend> FromRequestParts<AppState<B>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<B>) -> Result<Self, ApiError> {
        let hash = hash_api_key(bearer(parts)?);
        if constant_time_eq(&hash, &state.shared.admin_key_hash) {
            // The admin has no wallet or payments: a known key, but not one
            // that may act on user routes.
            return Err(ApiError::new(Code::Forbidden, "the admin key cannot act as a user"));
        }
        match user_of(state, hash).await? {
            Some(user) => {
                rate_limit(state, &hash)?;
                Ok(CurrentUser(user))
            }
            None => Err(unknown_key()),
        }
    }
}

/// Proof that the caller holds the admin key.
#[derive(Clone, Copy, Debug)]
pub struct Admin;

impl<B: Backend> FromRequestParts<AppState<B>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<B>) -> Result<Self, ApiError> {
        let hash = hash_api_key(bearer(parts)?);
        if constant_time_eq(&hash, &state.shared.admin_key_hash) {
            rate_limit(state, &hash)?;
            return Ok(Admin);
        }
        // A user's key is known but not allowed here (403); anything else
        // is not a key at all (401).
        match user_of(state, hash).await? {
            Some(_) => Err(ApiError::new(Code::Forbidden, "this endpoint requires the admin key")),
            None => Err(unknown_key()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn known_users_stay_within_their_bound() {
        let known = KnownUsers::default();
        let user = |i: usize| User {
            id: tally_core::ids::UserId(i as u128),
            name: "u".into(),
            key_hash: [0; 32],
            created_at: tally_core::time::Timestamp(0),
        };
        let hash = |i: usize| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            h
        };
        for i in 0..=KNOWN_USERS_MAX {
            known.remember(hash(i), &user(i));
        }
        assert_eq!(known.users.lock().unwrap().len(), 1, "emptied when full, then the newest");
        assert_eq!(known.get(&hash(KNOWN_USERS_MAX)).map(|u| u.id), Some(user(KNOWN_USERS_MAX).id));
        assert_eq!(known.get(&hash(0)), None);
    }
}
