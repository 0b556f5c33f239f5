//! The in-memory backend: Tally's store traits over plain maps, and its lock
//! manager over `tally-lock`.
//!
//! This is what loom, shuttle, proptest and the simulation run the real use
//! cases on, so it must behave like the PostgreSQL store in every way the use
//! cases can observe:
//!
//! - **All or nothing.** A transaction buffers its writes and applies them
//!   under one mutex at commit; a rollback (or a drop) discards them.
//! - **Read committed.** Reads see committed data plus the transaction's own
//!   writes, never another transaction's uncommitted ones.
//! - **Constraints.** What PostgreSQL's schema refuses, commit refuses with
//!   [`StoreError::Integrity`]: duplicate ids, a negative balance.
//! - **Two concurrency modes**, like the PostgreSQL strategies:
//!   [`Concurrency::Locked`] writes blindly and relies on the lock manager
//!   (like `SELECT … FOR UPDATE`), so a use case that forgets a lock really
//!   loses updates here; [`Concurrency::Optimistic`] checks every written
//!   record's version at commit and answers [`StoreError::Conflict`].
//! - **Fencing.** A transaction begun under a lock grant claims the grant's
//!   fencing tokens; a token older than one already claimed is refused with
//!   [`StoreError::Fenced`], at begin or at commit, so a holder whose lock
//!   lease ran out (see [`MemLocks::with_lease`]) writes nothing.
//! - **Faults.** An injected *ambiguous commit* applies the writes and then
//!   reports [`StoreError::Ambiguous`], as a connection dying during `COMMIT`
//!   would.
//!
//! All shared state sits behind `tally_lock::sync`, the one facade that swaps
//! std primitives for shuttle's (or loom's) under the model checkers.

mod gateway;
mod locks;
mod store;

pub use gateway::MemGateway;
pub use locks::{MemGuard, MemLocks};
pub use store::{
    CommitFault, Concurrency, FENCE_UNCHECKED, FaultHook, HookFuture, MemStore, MemTx, Statement, StatementHook, TxHook,
};
