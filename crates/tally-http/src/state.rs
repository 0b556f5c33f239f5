//! The state every handler receives: the core service and what the router
//! derived from its configuration.

use std::sync::Arc;

use tally_core::Tally;
use tally_core::gateway::Gateway;
use tally_core::store::{LockManager, Store};
use tally_core::time::Clock;

use crate::config::{KeyGen, Readiness};
use crate::metrics::Metrics;

/// The core service a router serves, named by one type parameter instead of
/// four: handlers, extractors and [`AppState`] are generic over `B: Backend`
/// alone. Its one implementation is [`Tally`] itself; the associated types
/// are its store, lock manager, clock and gateway.
pub trait Backend: Send + Sync + 'static {
    type Store: Store;
    type Locks: LockManager;
    type Clock: Clock;
    type Gateway: Gateway;
}

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Backend for Tally<S, L, C, G> {
    type Store = S;
    type Locks = L;
    type Clock = C;
    type Gateway = G;
}

/// `B` spelled as the [`Tally`] it is, so that generic code sees `Tally`'s
/// methods (for `B = Tally<S, L, C, G>` this is that very type).
pub type App<B> = Tally<<B as Backend>::Store, <B as Backend>::Locks, <B as Backend>::Clock, <B as Backend>::Gateway>;

/// Shared by all requests of one router.
pub struct Shared {
    /// SHA-256 of the admin key; the raw key is dropped when the router is built.
    pub admin_key_hash: [u8; 32],
    pub body_limit_bytes: usize,
    pub ledger_page_default: usize,
    pub readiness: Readiness,
    pub metrics: Metrics,
    pub key_gen: KeyGen,
    pub known_users: crate::auth::KnownUsers,
    /// A token bucket per API key, when `--rate-limit` is set.
    pub rate_limits: Option<crate::limits::RateLimits>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("ledger_page_default", &self.ledger_page_default).finish_non_exhaustive()
    }
}

/// Axum state. Cloned per request, so it is two `Arc`s.
pub struct AppState<B: Backend> {
    pub app: Arc<App<B>>,
    pub shared: Arc<Shared>,
}

// Derived `Clone` would require `B: Clone`; only the `Arc`s are cloned.
impl<B: Backend> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState { app: Arc::clone(&self.app), shared: Arc::clone(&self.shared) }
    }
}

impl<B: Backend> std::fmt::Debug for AppState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("shared", &self.shared).finish_non_exhaustive()
    }
}
