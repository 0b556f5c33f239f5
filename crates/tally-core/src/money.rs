//! Money: integer minor units with checked arithmetic.
//!
//! Two types, because the domain has two kinds of numbers. [`Money`] is a signed
//! quantity: an account balance (the outside world's account is negative by
//! construction), a limit, a running total. [`Amount`] is what a single movement
//! moves: strictly positive and at most [`Amount::MAX`]. A request can only ever
//! produce an `Amount` through [`Amount::new`], so zero, negative and absurd
//! amounts are refused at the edge and never reach a transition.

use std::fmt;

/// A signed quantity of minor units (cents, won, ...). Never a float.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    /// The largest balance any account may hold in absolute value. Far below
    /// `i64::MAX` so that sums over many accounts (the conservation check) cannot
    /// overflow either: 2^63 / 10^15 leaves room for ~9,000 accounts at the cap.
    pub const BALANCE_LIMIT: Money = Money(1_000_000_000_000_000);

    pub const fn new(minor_units: i64) -> Money {
        Money(minor_units)
    }

    pub const fn minor_units(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn checked_neg(self) -> Option<Money> {
        self.0.checked_neg().map(Money)
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What one movement moves: `1..=Amount::MAX` minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

/// Why a number is not an [`Amount`].
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountError {
    #[error("amount must be positive")]
    NotPositive,
    #[error("amount exceeds the maximum of {max} minor units", max = Amount::MAX.0)]
    TooLarge,
}

impl Amount {
    /// One movement moves at most 10^12 minor units (ten billion in a currency
    /// with two decimals). The cap keeps every balance arithmetic far from
    /// overflow and refuses fat-fingered requests at the edge.
    pub const MAX: Amount = Amount(1_000_000_000_000);

    pub const fn new(minor_units: i64) -> Result<Amount, AmountError> {
        if minor_units <= 0 {
            Err(AmountError::NotPositive)
        } else if minor_units > Amount::MAX.0 {
            Err(AmountError::TooLarge)
        } else {
            Ok(Amount(minor_units))
        }
    }

    pub const fn minor_units(self) -> i64 {
        self.0
    }

    pub const fn money(self) -> Money {
        Money(self.0)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const _: () = assert!(Amount::MAX.0 < Money::BALANCE_LIMIT.0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_refuses_zero_negative_and_too_large() {
        assert_eq!(Amount::new(0), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(-1), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(i64::MIN), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(Amount::MAX.0 + 1), Err(AmountError::TooLarge));
        assert_eq!(Amount::new(i64::MAX), Err(AmountError::TooLarge));
        assert_eq!(Amount::new(1).map(Amount::minor_units), Ok(1));
        assert_eq!(Amount::new(Amount::MAX.0), Ok(Amount::MAX));
    }

    #[test]
    fn money_arithmetic_is_checked() {
        assert_eq!(Money::new(i64::MAX).checked_add(Money::new(1)), None);
        assert_eq!(Money::new(i64::MIN).checked_sub(Money::new(1)), None);
        assert_eq!(Money::new(i64::MIN).checked_neg(), None);
        assert_eq!(Money::new(5).checked_sub(Money::new(7)), Some(Money::new(-2)));
    }
}
