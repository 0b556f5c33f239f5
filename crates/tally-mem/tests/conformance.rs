//! The store conformance suite on the in-memory store, in both modes. The
//! same suite runs on every PostgreSQL strategy in the end-to-end tests.

mod common;

use common::{block_on, locked, optimistic};
use tally_conformance::fences::Overtaking;
use tally_conformance::{Profile, StaleWrite, run_all};

#[test]
fn locked_memory_store_conforms() {
    let app = locked();
    let ran = block_on(run_all(&app, Profile { stale_write: StaleWrite::Unchecked, checks_reads: false }));
    assert_eq!(ran.len(), 27);
}

/// The fencing cases, in both modes: a token older than one claimed is
/// refused at begin and at commit, all or nothing; equal and empty ones pass.
#[test]
fn memory_store_checks_fences() {
    assert_eq!(block_on(tally_conformance::fences::run_all(&locked(), Overtaking::RefusesTheCommit)).len(), 5);
    assert_eq!(block_on(tally_conformance::fences::run_all(&optimistic(), Overtaking::RefusesTheCommit)).len(), 5);
}

#[test]
fn optimistic_memory_store_conforms() {
    let app = optimistic();
    let ran = block_on(run_all(&app, Profile { stale_write: StaleWrite::Conflicts, checks_reads: true }));
    assert_eq!(ran.len(), 27);
}
