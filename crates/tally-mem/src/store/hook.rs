//! The statement hook: what a caller may do before each statement of a
//! transaction — wait, as for a round trip to a database; fail it, as a dying
//! connection would; watch what it writes — and after its commit.
//!
//! A store handle made by [`MemStore::with_statement_hook`](super::MemStore::with_statement_hook)
//! asks its [`StatementHook`] for one [`TxHook`] per transaction, at begin;
//! the transaction owns it, so the hook drops with the transaction (also when
//! the transaction's future is dropped in the middle of a statement).
//! Without a hook a statement runs at once, as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tally_core::idempotency::IdemRecord;
use tally_core::payment::Payment;
use tally_core::store::StoreError;

/// One statement of a transaction, as its hook sees it, before it runs.
#[derive(Clone, Copy, Debug)]
pub enum Statement<'a> {
    /// `Store::begin` (and `Store::peek`).
    Begin,
    /// A read, by the name of its `Tx` method.
    Read(&'static str),
    /// A write other than the two below, by the name of its `Tx` method.
    Write(&'static str),
    /// `Tx::put_payment`, with the payment as loaded and as written: a monitor
    /// sees the gateway payment keys a transaction claims.
    PutPayment { before: Option<&'a Payment>, after: &'a Payment },
    /// `Tx::put_idempotency`, with the record as loaded and as written: a
    /// monitor sees which admission replaced which record.
    PutIdempotency { before: Option<&'a IdemRecord>, after: &'a IdemRecord },
    /// `Tx::commit`, before anything is validated or applied. `fenced`: the
    /// transaction claimed a lock grant's fencing tokens at begin (it runs
    /// under locks that a lease may take away).
    Commit { fenced: bool },
}

impl Statement<'_> {
    /// The statement's name: its `Tx` method's (or `begin`).
    pub fn name(&self) -> &'static str {
        match self {
            Statement::Begin => "begin",
            Statement::Read(name) | Statement::Write(name) => name,
            Statement::PutPayment { .. } => "put_payment",
            Statement::PutIdempotency { .. } => "put_idempotency",
            Statement::Commit { .. } => "commit",
        }
    }
}

/// What a hook returns: a future that borrows only the hook.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One transaction's hook.
pub trait TxHook: Send {
    /// Runs before `statement`. An error is the statement's: the statement
    /// does nothing and the transaction answers the error (a failed `Commit`
    /// applies nothing).
    fn before(&mut self, statement: Statement<'_>) -> HookFuture<'_, Result<(), StoreError>>;

    /// Runs after the commit was decided (including its commit fault), with
    /// what the caller will be told.
    fn committed(&mut self, result: &Result<(), StoreError>) -> HookFuture<'_, ()> {
        let _ = result;
        Box::pin(std::future::ready(()))
    }
}

/// Makes each transaction's [`TxHook`] at begin.
pub type StatementHook = Arc<dyn Fn() -> Box<dyn TxHook> + Send + Sync>;
