//! The clients: what they ask for (a table of operation kinds) and how they
//! ask (like real clients: a timeout per attempt, retries with the same
//! `Idempotency-Key` on a new connection, sometimes to another server,
//! sometimes a deliberate duplicate while the first is still in flight).
//!
//! # The operation table
//!
//! [`OPS`] lists every kind of operation with a weight, a `build` that turns
//! the client's state into a request (or declines, when the client has
//! nothing to act on yet), and a `learn` that updates the state from a
//! success. Besides money (top-ups, payments, confirms, cancels), clients
//! order the seed's scarce products (one or two lines, the same two products
//! listed in either order by different clients), join the event's queue and
//! poll their token, order seats with it (sometimes with a token that is not
//! active: a 403), pay orders (wallet, and gateway when the seed allows),
//! cancel them, read them, restock (with the admin key), and leave the rest
//! unpaid to lapse past the seed's order TTL.
//!
//! # The adversarial customer (issue 10)
//!
//! Each client has the seed's [`Habits`]: it may confirm gateway payments
//! with keys already used (its own earlier payments', or a pool every such
//! client — of every user — and another merchant share); spend the cashback
//! of a done gateway payment and then cancel it (read the wallet, pay out
//! nearly all of it, cancel); top the wallet up to just under its
//! `max_balance` and then pay through the gateway with a payback that may not
//! fit; book seat after seat with one queue token; and name its own
//! `payback_amount` (which must be refused 400). A scheme's steps are a
//! *script* the client follows before drawing anything else.
//!
//! # Amount tags
//!
//! Every money amount a client sends ends in a tag (`client * 1000 + op`)
//! below [`TAG_SPACE`], unique within the run. The oracle reads it back from
//! the ledger: two top-ups with one tag are one request taking effect twice.
//! A payment for an order has the order's total as its amount (prices are
//! whole multiples of [`TAG_SPACE`]) and carries no tag: the oracle counts
//! an order's payments against the keys that asked for one.
//!
//! # Layout
//!
//! - this module: the client's state, the request an operation plans
//!   ([`Planned`]) and the operation table's row type ([`OpKind`]);
//! - `ops`: the operation table itself ([`OPS`]) — every kind's request
//!   builder and what a client learns from its success, the adversarial
//!   schemes' scripted steps, and how a client picks its next step;
//! - `client`: how a client sends (attempts, retries with the same key,
//!   duplicates), counts answers in the journal, and the other merchant.

mod client;
mod ops;

pub use self::client::{
    ClientSpec, ElsewhereSpec, FOREIGN_ORDER_PREFIX, attempt_call, client, count_tab_refusal, elsewhere, is_code,
    is_final, names_payback,
};
pub use self::ops::{OPENING_PER_MILLE, OPS, next_op, shared_key};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tally_core::ids::UserId;
use tally_core::time::{Clock, Timestamp};

use crate::catalogue::Catalogue;
use crate::clock::SimClock;
use crate::journal::{Answer, Count, Exchange, Journal};
use crate::net::{self, Failure, Reply};
use crate::plan::{ClientBehaviour, Habits, SHARED_KEYS, server_name, timing};
use crate::rng::SimRng;

pub use crate::shared::TAG_SPACE;

/// How many units one restock adds.
pub const RESTOCK_QUANTITY: u64 = 1;

/// A payment the client created.
#[derive(Clone, Debug)]
pub struct Known {
    pub id: String,
    pub gateway: bool,
    pub payment_key: String,
    pub status: String,
    /// The order it pays (index into `ClientState::orders`).
    pub order: Option<usize>,
    /// The payback the server set (the merchant's policy).
    pub payback: i64,
}

/// An order the client created.
#[derive(Clone, Debug)]
pub struct KnownOrder {
    pub id: String,
    pub status: String,
    /// When it expires unpaid, by the service's clock.
    pub expires_at: Option<Timestamp>,
    /// The seats it booked.
    pub seats: Vec<String>,
}

/// The client's queue token.
#[derive(Clone, Debug)]
pub struct KnownToken {
    pub id: String,
    pub status: String,
}

/// What one client knows.
#[derive(Clone, Debug, Default)]
pub struct ClientState {
    pub payments: Vec<Known>,
    pub orders: Vec<KnownOrder>,
    pub token: Option<KnownToken>,
    pub catalogue: Arc<Catalogue>,
    /// Whether this seed pays some orders through the gateway.
    pub orders_via_gateway: bool,
    /// What the client observed since the loop last looked, for the counters.
    pub noted: Vec<Count>,
    /// The natural next step after the last success (pay the order just
    /// made, confirm the payment just created, poll a waiting token, book
    /// seats with an active one): taken at [`FOLLOW_PER_MILLE`].
    pub follow: Option<&'static str>,
    /// Pays at the last moment, racing the order TTL (see [`Inventory::races_expiry`](crate::plan::Inventory)).
    pub racer: bool,
    /// The fastest answered operation so far (simulated time, one
    /// attempt): how a last-moment payer estimates its way to the server,
    /// as a real one would from its own round trips.
    pub fastest_exchange: Option<Duration>,
    /// How early (ms) the last-moment payer now sends a confirm before its
    /// order's TTL: learnt from its races, later after a payment that made
    /// it, earlier after one refused `order_expired` (see [`ClientState::race_margin_ms`]).
    pub race_margin: Option<u64>,
    /// The service's clock, as a client with a synchronised clock reads it.
    pub clock: SimClock,
    pub habits: Habits,
    /// The user's `max_balance`, if it has one.
    pub max_balance: Option<i64>,
    /// The balance the client last read.
    pub balance: Option<i64>,
    /// A scheme's next steps, taken in order before anything is drawn: an
    /// operation kind and, for a confirm or a cancel, the payment it is for.
    pub script: VecDeque<(&'static str, Option<usize>)>,
    /// The payment the step being built is for (from the script).
    pub aim: Option<usize>,
    /// The step being built is the key reuser's opening: reuse a key.
    pub reusing: bool,
    /// The UTC boundary the run starts before, if any (by the service's clock).
    pub boundary: Option<Timestamp>,
}

/// A scheme of the adversarial customer, started by reading the wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Spend the cashback of this done gateway payment, then cancel it.
    SpendCashback(usize),
    /// Top up to just under `max_balance`, then pay through the gateway.
    FillToMax,
}

/// How often a client takes the natural next step instead of a random one.
pub const FOLLOW_PER_MILLE: u64 = 500;

impl ClientState {
    /// How long a request takes to reach a server and be served, as the
    /// client estimates it: half its fastest round trip (one step of the
    /// simulated network each way, until it has measured one).
    pub fn one_way_ms(&self) -> u64 {
        self.fastest_exchange.map_or(10, |rtt| u64::try_from(rtt.as_millis() / 2).unwrap_or(u64::MAX))
    }

    /// How early the last-moment payer sends its confirm: its fastest round
    /// trip at first (a confirm does more before it reads the time than the
    /// fastest request did), then what its races taught it.
    pub fn race_margin_ms(&self) -> u64 {
        self.race_margin.unwrap_or_else(|| self.one_way_ms() * 2)
    }

    /// Learns from a race's answer: paid in time → try later next time;
    /// too late → earlier. A payer probing for the latest moment it can
    /// pay, which keeps its confirms at the TTL's edge.
    pub fn learn_race(&mut self, in_time: bool) {
        let margin = self.race_margin_ms();
        self.race_margin = Some(if in_time { margin.saturating_sub(RACE_STEP_MS) } else { margin + 2 * RACE_STEP_MS });
    }
}

/// How much the last-moment payer moves its margin after a race.
pub const RACE_STEP_MS: u64 = 5;

/// A request an operation wants sent.
#[derive(Clone, Debug)]
pub struct Planned {
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// Money and inventory moves carry an `Idempotency-Key` and are retried.
    pub keyed: bool,
    /// Retried without a key: the request is idempotent by itself (joining a queue).
    pub idempotent: bool,
    /// Sent with the admin key instead of the client's.
    pub admin: bool,
    /// The payment (index into `ClientState::payments`) this acts on.
    pub payment: Option<usize>,
    /// The order (index into `ClientState::orders`) this acts on.
    pub order: Option<usize>,
    /// For a new gateway payment: its payment key.
    pub payment_key: Option<String>,
    /// The `Queue-Token` header, for seats.
    pub queue_token: Option<String>,
    /// Waits this long before sending (a client polling its place in line,
    /// or paying at the last moment).
    pub delay: Duration,
    /// A confirm timed to land just before its order's TTL.
    pub races: bool,
    /// The scheme this wallet read starts.
    pub scheme: Option<Scheme>,
    /// A step of a script: a payment it creates is confirmed next.
    pub scripted: bool,
    /// For seats: the ones asked for.
    pub seats: Vec<String>,
    /// For a gateway payment's confirm: a second checkout tab confirms the
    /// same payment at the same time with this payment key, under a key of
    /// its own (see [`Planned::second_tab`]).
    pub second_tab: Option<String>,
    /// This is that second tab's confirm.
    pub tab: bool,
    /// Sent at the same moment to the same server, under a key of its own
    /// ([`Planned::beside_key`]), and not waited for: the busy-tabs habit.
    pub beside: Option<Box<Planned>>,
}

impl Planned {
    /// The second tab's confirm, if this confirm has one: the same
    /// payment, the tab's payment key; sent once (a tab whose answer is
    /// lost does not retry).
    pub fn second_tab(&self) -> Option<Planned> {
        let payment_key = self.second_tab.as_ref()?;
        Some(Planned {
            body: Some(ops::json(&serde_json::json!({ "payment_key": payment_key }))),
            second_tab: None,
            tab: true,
            beside: None,
            ..self.clone()
        })
    }

    /// The second tab's `Idempotency-Key`, from the confirm's own.
    pub fn tab_key(key: &str) -> String {
        format!("{key}-tab")
    }

    /// The `Idempotency-Key` of the request sent beside this one.
    pub fn beside_key(key: &str) -> String {
        format!("{key}-beside")
    }
}

/// One row of the operation table.
#[derive(Debug)]
pub struct OpKind {
    pub name: &'static str,
    pub weight: u64,
    pub build: fn(&ClientState, &mut SimRng, i64) -> Option<Planned>,
    pub learn: fn(&mut ClientState, &Planned, &Reply),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last-moment payer keeps its confirms at the TTL's edge: it
    /// starts a round trip ahead, sends later after a race it won and
    /// earlier after one it lost, and never aims after the TTL.
    #[test]
    fn the_last_moment_payer_probes_for_the_latest_moment() {
        let mut state = ClientState { fastest_exchange: Some(Duration::from_millis(31)), ..ClientState::default() };
        assert_eq!((state.one_way_ms(), state.race_margin_ms()), (15, 30));
        state.learn_race(true);
        assert_eq!(state.race_margin_ms(), 25);
        state.learn_race(false);
        assert_eq!(state.race_margin_ms(), 35);
        for _ in 0..10 {
            state.learn_race(true);
        }
        assert_eq!(state.race_margin_ms(), 0);
        assert_eq!(ClientState::default().race_margin_ms(), 20, "one step each way before any round trip");
    }
}
