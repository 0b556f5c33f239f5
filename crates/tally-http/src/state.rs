//! The state every handler receives: the core service and what the router
//! derived from its configuration.

use std::sync::Arc;

use tally_core::Tally;

use crate::config::{KeyGen, Readiness};
use crate::metrics::Metrics;

/// Shared by all requests of one router.
pub struct Shared {
    /// SHA-256 of the admin key; the raw key is dropped when the router is built.
    pub admin_key_hash: [u8; 32],
    pub body_limit_bytes: usize,
    pub ledger_page_default: usize,
    pub readiness: Readiness,
    pub metrics: Metrics,
    pub key_gen: KeyGen,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("ledger_page_default", &self.ledger_page_default).finish_non_exhaustive()
    }
}

/// Axum state. Cloned per request, so it is two `Arc`s.
pub struct AppState<S, L, C, G> {
    pub app: Arc<Tally<S, L, C, G>>,
    pub shared: Arc<Shared>,
}

// Derived `Clone` would require `S: Clone` etc.; only the `Arc`s are cloned.
impl<S, L, C, G> Clone for AppState<S, L, C, G> {
    fn clone(&self) -> Self {
        AppState { app: Arc::clone(&self.app), shared: Arc::clone(&self.shared) }
    }
}

impl<S, L, C, G> std::fmt::Debug for AppState<S, L, C, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("shared", &self.shared).finish_non_exhaustive()
    }
}
