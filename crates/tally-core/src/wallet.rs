//! Wallets: a user's balance, its limits, and the one function that changes it.
//!
//! A wallet never changes except through [`Wallet::apply`], which takes a
//! [`Movement`] and returns the next wallet or the reason it is refused. The
//! function is pure: the use cases load a wallet, ask `apply`, and hand the
//! result to the store. A batch of payments on one hot wallet (a later
//! optimisation) folds `apply` over the batch. The atomic SQL strategy
//! restates the window and ceiling rules in its conditional update; the
//! conformance cases `spending_windows_never_move_backwards` and
//! `the_ceiling_counts_held_paybacks_and_caps_every_balance` pin it to these.

use crate::ids::UserId;
use crate::money::{Amount, Money};
use crate::time::Timestamp;

/// Optional ceilings on a wallet (seed 001). `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The balance may never exceed this.
    pub max_balance: Option<Money>,
    /// One payment may not move more than this.
    pub per_payment: Option<Money>,
    /// Payments confirmed in one UTC day may not add up to more than this.
    pub daily: Option<Money>,
    /// Payments confirmed in one UTC calendar month may not add up to more than this.
    pub monthly: Option<Money>,
}

/// Why a set of limits is not acceptable.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("limits must be between 0 and {max}", max = Money::BALANCE_LIMIT)]
pub struct InvalidLimits;

impl Limits {
    pub fn validate(self) -> Result<Limits, InvalidLimits> {
        let fields = [self.max_balance, self.per_payment, self.daily, self.monthly];
        let in_range = |m: &Money| !m.is_negative() && *m <= Money::BALANCE_LIMIT;
        if fields.iter().flatten().all(in_range) { Ok(self) } else { Err(InvalidLimits) }
    }
}

/// Which limit refused a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    PerPayment,
    Daily,
    Monthly,
}

/// One change to a wallet's balance. Each corresponds to one ledger transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Movement {
    /// Money in from the outside world.
    TopUp(Amount),
    /// Money out for a payment: the only movement that counts against limits.
    Pay(Amount),
    /// A cancelled payment's money back.
    Refund(Amount),
    /// Cashback credited when a payment succeeds.
    Payback(Amount),
    /// Cashback taken back when its payment is cancelled.
    PaybackReversal(Amount),
}

/// Why a movement is refused. The wallet is unchanged.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletError {
    #[error("insufficient balance")]
    InsufficientBalance,
    #[error("{0:?} limit exceeded")]
    LimitExceeded(LimitKind),
    #[error("the balance would exceed the wallet's maximum")]
    MaxBalanceExceeded,
}

/// A user's wallet as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    pub user: UserId,
    pub balance: Money,
    pub limits: Limits,
    /// The UTC day of `spent_day` (see [`Timestamp::day`]).
    pub day: i64,
    /// Payments confirmed during `day`.
    pub spent_day: Money,
    /// The month of `spent_month` (see [`Timestamp::month`]).
    pub month: i64,
    /// Payments confirmed during `month`.
    pub spent_month: Money,
    /// Paybacks of gateway charges in flight: room under the balance ceiling
    /// reserved before the charge is sent, so that crediting the payback
    /// once the card was charged can never be refused (SPEC.md: no refusal
    /// after an irreversible foreign effect). Like TigerBeetle's pending
    /// credits: every credit counts it against the ceiling.
    pub payback_held: Money,
    /// How many ledger transfers have touched this wallet; each transfer gets
    /// the next number, which orders the wallet's ledger and pages it.
    pub entry_count: u64,
    /// Bumped by every change; optimistic stores compare it on write.
    pub version: u64,
}

impl Wallet {
    /// A fresh, empty wallet.
    pub fn open(user: UserId, limits: Limits, now: Timestamp) -> Wallet {
        Wallet {
            user,
            balance: Money::ZERO,
            limits,
            day: now.day(),
            spent_day: Money::ZERO,
            month: now.month(),
            spent_month: Money::ZERO,
            payback_held: Money::ZERO,
            entry_count: 0,
            version: 0,
        }
    }

    /// Spending so far in the windows a payment at `now` counts in (zero
    /// once a window rolled).
    ///
    /// Windows never move backwards: a `now` older than the wallet's window
    /// (a request that read the clock before it waited for the wallet, or an
    /// instance whose clock is behind) counts in the wallet's newest window.
    /// Rolling back to the older day would start it from zero and let the
    /// next payment of the newer day start from zero too: a limit bypass.
    pub fn spent_at(&self, now: Timestamp) -> (Money, Money) {
        if crate::mutant::active("window_rollback") {
            // The mutant: any other window starts from zero, older ones too.
            let day = if self.day == now.day() { self.spent_day } else { Money::ZERO };
            let month = if self.month == now.month() { self.spent_month } else { Money::ZERO };
            return (day, month);
        }
        let day = if now.day() > self.day { Money::ZERO } else { self.spent_day };
        let month = if now.month() > self.month { Money::ZERO } else { self.spent_month };
        (day, month)
    }

    /// Reserves room under the ceiling for `payback`, credited later if the
    /// gateway charge it belongs to succeeds. Refused like the credit itself
    /// would be, before anything irreversible happened.
    pub fn hold_payback(&self, payback: Amount) -> Result<Wallet, WalletError> {
        self.credit(payback)?;
        let mut next = self.clone();
        next.version = self.version + 1;
        next.payback_held = self.payback_held.checked_add(payback.money()).expect("bounded sums");
        next.assert_valid();
        Ok(next)
    }

    /// Gives up a hold taken by [`Wallet::hold_payback`]: the charge failed,
    /// or its payback is about to be credited (which then cannot be refused).
    /// `None` if the wallet holds less: it was read before the settlement that
    /// released the hold committed (a store without row locks), and the
    /// caller must decide again.
    pub fn release_payback(&self, payback: Amount) -> Option<Wallet> {
        let held = self.payback_held.checked_sub(payback.money()).filter(|held| !held.is_negative())?;
        Some(Wallet { payback_held: held, version: self.version + 1, ..self.clone() })
    }

    /// The transition function: the wallet after `movement` at `now`, or why not.
    ///
    /// Refunds do not give limit headroom back: a limit caps what was paid in a
    /// window, and a payment that was later refunded was still paid.
    pub fn apply(&self, movement: Movement, now: Timestamp) -> Result<Wallet, WalletError> {
        let mut next = self.clone();
        next.version = self.version + 1;
        next.entry_count = self.entry_count + 1;
        match movement {
            Movement::TopUp(amount) | Movement::Refund(amount) | Movement::Payback(amount) => {
                next.balance = self.credit(amount)?;
            }
            Movement::PaybackReversal(amount) => {
                next.balance = self.debit(amount)?;
            }
            Movement::Pay(amount) => {
                let (spent_day, spent_month) = self.spent_at(now);
                let spent_day = spent_day.checked_add(amount.money()).expect("bounded sums");
                let spent_month = spent_month.checked_add(amount.money()).expect("bounded sums");
                if self.limits.per_payment.is_some_and(|limit| amount.money() > limit) {
                    return Err(WalletError::LimitExceeded(LimitKind::PerPayment));
                }
                if self.limits.daily.is_some_and(|limit| spent_day > limit) {
                    return Err(WalletError::LimitExceeded(LimitKind::Daily));
                }
                if self.limits.monthly.is_some_and(|limit| spent_month > limit) {
                    return Err(WalletError::LimitExceeded(LimitKind::Monthly));
                }
                next.balance = self.debit(amount)?;
                let rollback = crate::mutant::active("window_rollback");
                next.day = if rollback { now.day() } else { self.day.max(now.day()) };
                next.spent_day = spent_day;
                next.month = if rollback { now.month() } else { self.month.max(now.month()) };
                next.spent_month = spent_month;
            }
        }
        next.assert_valid();
        Ok(next)
    }

    /// The balance after crediting `amount`, if it and every held payback
    /// stay under the ceiling (the wallet's maximum, never above the cap).
    fn credit(&self, amount: Amount) -> Result<Money, WalletError> {
        let balance = self.balance.checked_add(amount.money()).expect("bounded sums");
        let committed = balance.checked_add(self.payback_held).expect("bounded sums");
        // The mutant forgets the cap when the wallet has no maximum of its own
        // (what the atomic SQL did).
        let cap =
            if crate::mutant::active("balance_uncapped") { Money::new(i64::MAX / 4) } else { Money::BALANCE_LIMIT };
        let ceiling = self.limits.max_balance.unwrap_or(cap);
        if committed > ceiling.min(cap) {
            return Err(WalletError::MaxBalanceExceeded);
        }
        Ok(balance)
    }

    fn debit(&self, amount: Amount) -> Result<Money, WalletError> {
        let balance = self.balance.checked_sub(amount.money()).expect("bounded sums");
        if balance.is_negative() {
            return Err(WalletError::InsufficientBalance);
        }
        Ok(balance)
    }

    /// Hard checks of what every stored wallet must satisfy.
    pub fn assert_valid(&self) {
        assert!(!self.balance.is_negative(), "wallet {} balance negative", self.user);
        assert!(self.balance <= Money::BALANCE_LIMIT, "wallet {} balance beyond the cap", self.user);
        assert!(!self.spent_day.is_negative() && !self.spent_month.is_negative());
        assert!(!self.payback_held.is_negative(), "wallet {} holds a negative payback", self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn amount(n: i64) -> Amount {
        Amount::new(n).unwrap()
    }

    fn wallet(limits: Limits) -> Wallet {
        Wallet::open(UserId(1), limits, Timestamp(0))
    }

    #[test]
    fn balance_never_negative() {
        let w = wallet(Limits::default()).apply(Movement::TopUp(amount(100)), Timestamp(0)).unwrap();
        assert_eq!(w.apply(Movement::Pay(amount(101)), Timestamp(0)), Err(WalletError::InsufficientBalance));
        let w = w.apply(Movement::Pay(amount(100)), Timestamp(0)).unwrap();
        assert_eq!(w.balance, Money::ZERO);
        assert_eq!(w.entry_count, 2);
        assert_eq!(w.version, 2);
    }

    #[test]
    fn max_balance_refuses_credit_beyond_it() {
        let limits = Limits { max_balance: Some(Money::new(100)), ..Limits::default() };
        let w = wallet(limits).apply(Movement::TopUp(amount(100)), Timestamp(0)).unwrap();
        assert_eq!(w.apply(Movement::TopUp(amount(1)), Timestamp(0)), Err(WalletError::MaxBalanceExceeded));
    }

    #[test]
    fn daily_limit_is_exact_and_rolls_over_at_midnight() {
        let limits = Limits { daily: Some(Money::new(300)), ..Limits::default() };
        let mut w = wallet(limits).apply(Movement::TopUp(amount(1_000)), Timestamp(0)).unwrap();
        for _ in 0..3 {
            w = w.apply(Movement::Pay(amount(100)), Timestamp(10)).unwrap();
        }
        assert_eq!(
            w.apply(Movement::Pay(amount(1)), Timestamp(DAY - 1)),
            Err(WalletError::LimitExceeded(LimitKind::Daily))
        );
        let w = w.apply(Movement::Pay(amount(300)), Timestamp(DAY)).unwrap();
        assert_eq!(w.spent_at(Timestamp(DAY)), (Money::new(300), Money::new(600)));
    }

    #[test]
    fn per_payment_and_monthly_limits() {
        let limits = Limits { per_payment: Some(Money::new(50)), monthly: Some(Money::new(80)), ..Limits::default() };
        let w = wallet(limits).apply(Movement::TopUp(amount(1_000)), Timestamp(0)).unwrap();
        assert_eq!(
            w.apply(Movement::Pay(amount(51)), Timestamp(0)),
            Err(WalletError::LimitExceeded(LimitKind::PerPayment))
        );
        let w = w.apply(Movement::Pay(amount(50)), Timestamp(0)).unwrap();
        assert_eq!(
            w.apply(Movement::Pay(amount(31)), Timestamp(DAY)),
            Err(WalletError::LimitExceeded(LimitKind::Monthly))
        );
        // February starts a new month.
        assert!(w.apply(Movement::Pay(amount(50)), Timestamp(31 * DAY)).is_ok());
    }

    #[test]
    fn a_payment_stamped_before_the_window_counts_in_the_newest_window() {
        // Hole 6: a request that read the clock on day D and got the wallet
        // after a D+1 payment must not roll the window back to D (which
        // would let the next D+1 payment start from zero).
        let limits = Limits { daily: Some(Money::new(100)), monthly: Some(Money::new(1_000)), ..Limits::default() };
        let w = wallet(limits).apply(Movement::TopUp(amount(1_000)), Timestamp(0)).unwrap();
        let w = w.apply(Movement::Pay(amount(60)), Timestamp(DAY + 1)).unwrap();
        let w = w.apply(Movement::Pay(amount(40)), Timestamp(DAY - 1)).unwrap();
        assert_eq!((w.day, w.spent_day), (Timestamp(DAY).day(), Money::new(100)), "the window stayed on D+1");
        assert_eq!(
            w.apply(Movement::Pay(amount(1)), Timestamp(DAY + 2)),
            Err(WalletError::LimitExceeded(LimitKind::Daily))
        );
        assert_eq!(
            w.apply(Movement::Pay(amount(1)), Timestamp(DAY - 2)),
            Err(WalletError::LimitExceeded(LimitKind::Daily))
        );
        // The month boundary the same way: January 31st after February 1st.
        let feb = 31 * DAY;
        let w = w.apply(Movement::Pay(amount(50)), Timestamp(feb)).unwrap();
        let w = w.apply(Movement::Pay(amount(50)), Timestamp(feb - 1)).unwrap();
        assert_eq!((w.month, w.spent_month), (Timestamp(feb).month(), Money::new(100)));
    }

    #[test]
    fn a_held_payback_keeps_its_room_under_the_ceiling() {
        let limits = Limits { max_balance: Some(Money::new(100)), ..Limits::default() };
        let w = wallet(limits).apply(Movement::TopUp(amount(60)), Timestamp(0)).unwrap();
        assert_eq!(w.hold_payback(amount(41)), Err(WalletError::MaxBalanceExceeded));
        let held = w.hold_payback(amount(40)).unwrap();
        // A top-up cannot take the room the payback needs...
        assert_eq!(held.apply(Movement::TopUp(amount(1)), Timestamp(0)), Err(WalletError::MaxBalanceExceeded));
        // ...so crediting it once the card was charged always fits.
        let credited =
            held.release_payback(amount(40)).unwrap().apply(Movement::Payback(amount(40)), Timestamp(0)).unwrap();
        assert_eq!(credited.release_payback(amount(1)), None, "nothing left to release");
        assert_eq!((credited.balance, credited.payback_held), (Money::new(100), Money::ZERO));
    }

    #[test]
    fn the_balance_cap_holds_without_a_maximum() {
        let w = Wallet { balance: Money::BALANCE_LIMIT, ..wallet(Limits::default()) };
        assert_eq!(w.apply(Movement::TopUp(amount(1)), Timestamp(0)), Err(WalletError::MaxBalanceExceeded));
    }

    #[test]
    fn refusal_leaves_nothing_changed() {
        let w = wallet(Limits::default());
        let before = w.clone();
        assert!(w.apply(Movement::PaybackReversal(amount(1)), Timestamp(0)).is_err());
        assert_eq!(w, before);
    }

    #[test]
    fn limits_validate_range() {
        assert!(Limits { daily: Some(Money::new(-1)), ..Limits::default() }.validate().is_err());
        assert!(Limits { max_balance: Some(Money::new(i64::MAX)), ..Limits::default() }.validate().is_err());
        assert!(Limits { monthly: Some(Money::ZERO), ..Limits::default() }.validate().is_ok());
    }
}
