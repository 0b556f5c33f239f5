//! Identifiers and where they come from.
//!
//! Every id is a 128-bit value shown as a UUID string. Ids are produced by an
//! injected [`IdGen`], never by a global: production uses random UUIDs (v4, from
//! the binary), while the model checkers and the simulation use [`SeqIds`] so a
//! seed or a schedule reproduces the same ids.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Produces fresh 128-bit ids. Implementations must never repeat a value.
pub trait IdGen: Send + Sync + 'static {
    fn next_id(&self) -> u128;
}

/// Deterministic ids: a 64-bit prefix (e.g. a seed) and a counter. Suitable
/// for one process; not for several instances sharing a database.
#[derive(Debug)]
pub struct SeqIds {
    prefix: u64,
    next: AtomicU64,
}

impl SeqIds {
    pub fn new(prefix: u64) -> SeqIds {
        SeqIds { prefix, next: AtomicU64::new(1) }
    }
}

impl IdGen for SeqIds {
    fn next_id(&self) -> u128 {
        // Relaxed is enough: uniqueness needs atomicity only, and the counter
        // orders nothing else.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        assert!(n < u64::MAX, "id counter exhausted");
        (u128::from(self.prefix) << 64) | u128::from(n)
    }
}

/// Formats a 128-bit id as a lowercase hyphenated UUID.
pub fn fmt_uuid(value: u128, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let hex = format!("{value:032x}");
    write!(f, "{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Parses a UUID in its one canonical form, `8-4-4-4-12` hex digits (either
/// case): what the API writes, and what its OpenAPI `format: uuid` allows.
pub fn parse_uuid(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    let hyphens_in_place = bytes.len() == 36 && [8, 13, 18, 23].iter().all(|&at| bytes[at] == b'-');
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    if !hyphens_in_place || digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&digits, 16).ok()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u128);

        impl $name {
            pub fn parse(text: &str) -> Option<$name> {
                parse_uuid(text).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_uuid(self.0, f)
            }
        }
    };
}

id_type!(
    /// A user, and so also the user's wallet (one wallet per user).
    UserId
);

impl UserId {
    /// The catalogue's administrator: never a real user (ids are never 0), so
    /// the admin's idempotency keys live in a scope of their own.
    pub const ADMIN: UserId = UserId(0);
}
id_type!(
    /// A payment.
    PaymentId
);
id_type!(
    /// One ledger transfer.
    TransferId
);
id_type!(
    /// One execution of a command: every transfer it books carries it, so an
    /// audit (and the invariant checker) can tell executions apart.
    OpId
);

id_type!(
    /// A product with stock.
    ProductId
);
id_type!(
    /// An event (a concert): its showtimes, seats and waiting queue.
    EventId
);
id_type!(
    /// One showtime of an event.
    ShowtimeId
);
id_type!(
    /// One seat of one showtime.
    SeatId
);
id_type!(
    /// An order: products and seats reserved together.
    OrderId
);
id_type!(
    /// A waiting-queue token. Shown to its owner only; knowing it is not
    /// enough to use it (it belongs to one user).
    TokenId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip() {
        let id = PaymentId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(PaymentId::parse(&text), Some(id));
        assert_eq!(PaymentId::parse(&text.to_uppercase()), Some(id), "hex digits in either case");
        // Only the canonical form: no plain 32 digits, no hyphens elsewhere.
        assert_eq!(PaymentId::parse("0123456789abcdef0011223344556677"), None);
        assert_eq!(PaymentId::parse("0123456-789ab-cdef-0011-223344556677"), None);
        assert_eq!(PaymentId::parse("not-a-uuid"), None);
        assert_eq!(PaymentId::parse("01234567-89ab-cdef-0011-22334455667g"), None);
    }

    #[test]
    fn seq_ids_are_unique_and_prefixed() {
        let ids = SeqIds::new(7);
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        assert_eq!(a >> 64, 7);
    }
}
