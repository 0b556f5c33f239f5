//! The double-entry ledger.
//!
//! Every movement of money is one [`Transfer`] from a debit account to a credit
//! account, so the sum over all accounts is zero by construction (SPEC.md
//! invariant 4). Each transfer in this domain touches exactly one user wallet,
//! except none do for money that never passes through one; the wallet side
//! records the wallet's balance after the transfer, which is what the wallet
//! ledger API shows and what invariant 3 checks against.

use crate::idempotency::{IdemKey, IdemOrigin};
use crate::ids::{OpId, PaymentId, TransferId, UserId};
use crate::money::{Amount, Money};
use crate::time::Timestamp;
use crate::wallet::Movement;

/// An account of the ledger. Only wallets have a sign rule (never negative);
/// the system accounts move freely and balance the books.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// Where top-ups come from: its balance is minus everything ever paid in.
    World,
    /// What merchants earned from payments, less refunds.
    Revenue,
    /// Funds cashback: paybacks come out of it, reversals go back in.
    CashbackPool,
    /// A user's wallet.
    Wallet(UserId),
}

/// What a transfer is, as the wallet ledger shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferKind {
    TopUp,
    Payment,
    Refund,
    Payback,
    PaybackReversal,
}

impl TransferKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TransferKind::TopUp => "top_up",
            TransferKind::Payment => "payment",
            TransferKind::Refund => "refund",
            TransferKind::Payback => "payback",
            TransferKind::PaybackReversal => "payback_reversal",
        }
    }
}

/// One immutable ledger line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub kind: TransferKind,
    pub debit: Account,
    pub credit: Account,
    pub amount: Amount,
    pub payment: Option<PaymentId>,
    /// The wallet this transfer touches, its balance after it, and the
    /// transfer's position in that wallet's ledger (1-based).
    pub wallet: Option<WalletSide>,
    /// The execution that booked this transfer.
    pub op: OpId,
    /// The idempotency key (and its admission) of the request that booked it, if any.
    pub origin: Option<IdemOrigin>,
    pub at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletSide {
    pub user: UserId,
    pub balance_after: Money,
    pub seq: u64,
}

impl Transfer {
    /// The signed effect of this transfer on `account`.
    pub fn delta(&self, account: Account) -> Money {
        let amount = self.amount.money();
        if self.credit == account {
            amount
        } else if self.debit == account {
            amount.checked_neg().expect("amounts are positive")
        } else {
            Money::ZERO
        }
    }
}

/// The context every transfer of one execution shares.
#[derive(Clone, Debug)]
pub struct Booking {
    pub op: OpId,
    pub origin: Option<IdemOrigin>,
    pub at: Timestamp,
}

impl Booking {
    /// The `Idempotency-Key` this execution runs under, if any (its scope is
    /// the caller's, and a request acts on its caller's records only).
    pub fn requested_by(&self) -> Option<IdemKey> {
        self.origin.as_ref().map(|origin| origin.scope.key.clone())
    }

    /// A transfer between two system accounts (no wallet): a gateway
    /// payment's charge (world → revenue) or its refund (revenue → world).
    pub fn system_transfer(
        &self,
        id: TransferId,
        kind: TransferKind,
        debit: Account,
        credit: Account,
        amount: Amount,
        payment: Option<PaymentId>,
    ) -> Transfer {
        assert!(!matches!(debit, Account::Wallet(_)) && !matches!(credit, Account::Wallet(_)));
        self.transfer(id, (kind, debit, credit, amount), payment)
    }

    /// The transfer with this booking's execution, origin and time; no wallet side yet.
    fn transfer(
        &self,
        id: TransferId,
        (kind, debit, credit, amount): (TransferKind, Account, Account, Amount),
        payment: Option<PaymentId>,
    ) -> Transfer {
        Transfer {
            id,
            kind,
            debit,
            credit,
            amount,
            payment,
            wallet: None,
            op: self.op,
            origin: self.origin.clone(),
            at: self.at,
        }
    }

    /// The transfer that records `movement` on `user`'s wallet, given the
    /// wallet after it. The accounts follow from the movement; the caller
    /// cannot pick them.
    pub fn wallet_transfer(
        &self,
        id: TransferId,
        movement: Movement,
        user: UserId,
        wallet_after: &crate::wallet::Wallet,
        payment: Option<PaymentId>,
    ) -> Transfer {
        debug_assert_eq!(wallet_after.user, user);
        let wallet = Account::Wallet(user);
        let leg = match movement {
            Movement::TopUp(a) => (TransferKind::TopUp, Account::World, wallet, a),
            Movement::Pay(a) => (TransferKind::Payment, wallet, Account::Revenue, a),
            Movement::Refund(a) => (TransferKind::Refund, Account::Revenue, wallet, a),
            Movement::Payback(a) => (TransferKind::Payback, Account::CashbackPool, wallet, a),
            Movement::PaybackReversal(a) => (TransferKind::PaybackReversal, wallet, Account::CashbackPool, a),
        };
        let side = WalletSide { user, balance_after: wallet_after.balance, seq: wallet_after.entry_count };
        Transfer { wallet: Some(side), ..self.transfer(id, leg, payment) }
    }
}
