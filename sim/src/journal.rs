//! What happened in one run: the event log, the client-side history of every
//! request and its answer, counters, and what the store monitor saw.
//!
//! One [`Journal`] is shared (outside the hosts, so a crash loses none of
//! it) by the driver, the servers' store and gateway wrappers and the
//! clients. The event log is the run's fingerprint: its hash is what
//! `--check-determinism` compares, and its tail is what a failure prints.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::collections::BTreeMap;

use tally_core::ids::UserId;
use tally_core::time::Timestamp;

use crate::clock::SimClock;
use crate::shared::Violation;

/// Declares [`Count`] and [`Count::ALL`], every count in declaration order.
macro_rules! counts {
    ($($variant:ident,)*) => {
        /// Everything the report counts, per seed and summed over seeds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Count {
            $($variant,)*
        }

        impl Count {
            /// Every count, in the order declared (the report's order).
            pub const ALL: [Count; [$(Count::$variant),*].len()] = [$(Count::$variant),*];
        }
    };
}

counts! {
    // volume
    Operations,
    OperationsCompleted,
    OperationsAbandoned,
    Requests,
    // faults injected
    Partitions,
    HostCrashes,
    HostRestarts,
    MessageLossWindows,
    ClockAdvances,
    LateSteps,
    AmbiguousCommits,
    LostCommits,
    UnappliedAmbiguousCommits,
    DbStalls,
    DbOutages,
    DbRestarts,
    Zombies,
    GatewayLatency,
    Gateway5xx,
    Gateway5xxAfterCommit,
    GatewayLostReplies,
    GatewayDroppedConnections,
    GatewayTamperedCharges,
    ForeignCharges,
    SkewedServers,
    BoundarySeeds,
    // coverage: interesting things that happened
    AttemptTimeouts,
    DuplicatesSent,
    DuplicateInFlight409,
    ReplaysServed,
    RefusalsReplayed,
    RetriesToAnotherHost,
    LeaseTakeovers,
    TransactionsAbandoned,
    StatementsStalled,
    StatementsRefusedUnreachable,
    TransactionsKilledByRestart,
    ZombiesFenced,
    ZombieCommitsApplied,
    FencedCommits,
    CrashBetweenGatewayAndCommit,
    GatewayOutcomeUnknown,
    CompleterResolved,
    KeysReaped,
    BatchedTogether,
    // coverage: orders, stock, seats and the queue
    OrdersCreated,
    OrdersPaid,
    OutOfStock,
    SeatUnavailable,
    OrderExpired,
    OrdersSwept,
    ExpiryRaces,
    QueuePromotions,
    Forbidden403,
    // coverage: the adversarial customer (issue 10)
    KeyReuseRefused,
    SecondTabConfirms,
    BesideRequests,
    OtherTabRefused,
    ForeignKeyFailed,
    CashbackCancelRefused,
    RefundsOwedResolved,
    LateChargesRefunded,
    SeatLimitRefused,
    MaxBalanceRefused,
    LimitRefused,
    PaybackAmountRefused,
    PaymentsAcrossMidnight,
    PaymentsAcrossMonthEnd,
    StampedBehindWindow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Volume,
    Fault,
    Coverage,
}

impl Count {
    pub const fn section(self) -> Section {
        match self {
            Count::Operations | Count::OperationsCompleted | Count::OperationsAbandoned | Count::Requests => {
                Section::Volume
            }
            Count::Partitions
            | Count::HostCrashes
            | Count::HostRestarts
            | Count::MessageLossWindows
            | Count::ClockAdvances
            | Count::LateSteps
            | Count::AmbiguousCommits
            | Count::LostCommits
            | Count::UnappliedAmbiguousCommits
            | Count::DbStalls
            | Count::DbOutages
            | Count::DbRestarts
            | Count::Zombies
            | Count::GatewayLatency
            | Count::Gateway5xx
            | Count::Gateway5xxAfterCommit
            | Count::GatewayLostReplies
            | Count::GatewayDroppedConnections
            | Count::GatewayTamperedCharges
            | Count::ForeignCharges
            | Count::SkewedServers
            | Count::BoundarySeeds => Section::Fault,
            _ => Section::Coverage,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Count::Operations => "operations",
            Count::OperationsCompleted => "operations answered (2xx or a final 4xx)",
            Count::OperationsAbandoned => "operations abandoned after every retry",
            Count::Requests => "requests sent (attempts and duplicates)",
            Count::Partitions => "network partitions (then repaired)",
            Count::HostCrashes => "server crashes",
            Count::HostRestarts => "server restarts",
            Count::MessageLossWindows => "message-loss windows",
            Count::ClockAdvances => "clock advances",
            Count::LateSteps => "clock steps past the give-up while the gateway delayed a confirm",
            Count::AmbiguousCommits => "ambiguous commits (applied, reported failed)",
            Count::LostCommits => "lost commits (connection gone before COMMIT)",
            Count::UnappliedAmbiguousCommits => "ambiguous commits that did not apply (COMMIT lost on its way)",
            Count::DbStalls => "database stalls (every statement waits until it ends)",
            Count::DbOutages => "database unreachable for a while",
            Count::DbRestarts => "database restarts (every open transaction dropped)",
            Count::Zombies => "zombies: a server stalled at COMMIT past its lock lease, then resumed",
            Count::GatewayLatency => "gateway: delayed requests",
            Count::Gateway5xx => "gateway: 5xx before taking effect",
            Count::Gateway5xxAfterCommit => "gateway: 5xx after taking effect",
            Count::GatewayLostReplies => "gateway: replies lost after taking effect",
            Count::GatewayDroppedConnections => "gateway: connections dropped",
            Count::GatewayTamperedCharges => "gateway: charges of another amount than asked (tampering)",
            Count::ForeignCharges => "another merchant's charges under our clients' payment keys",
            Count::SkewedServers => "server clocks lagging the database's (a fixed lag, a slow drift, or both)",
            Count::BoundarySeeds => "seeds started just before a UTC day, month or year end",
            Count::AttemptTimeouts => "client attempts timed out",
            Count::DuplicatesSent => "duplicates sent while the first was in flight",
            Count::DuplicateInFlight409 => "duplicate arrived in flight (409 idempotency_key_in_use)",
            Count::ReplaysServed => "replays served (Idempotent-Replayed)",
            Count::RefusalsReplayed => "stored refusals replayed (4xx replay)",
            Count::RetriesToAnotherHost => "retries sent to another server",
            Count::LeaseTakeovers => "stale in-flight keys taken over (lease expired)",
            Count::TransactionsAbandoned => "transactions abandoned mid-flight (request cancelled or host crashed)",
            Count::StatementsStalled => "statements held up by a database stall",
            Count::StatementsRefusedUnreachable => "statements refused: database unreachable",
            Count::TransactionsKilledByRestart => "transactions dropped by a database restart",
            Count::ZombiesFenced => "zombie commits refused by the fence (a later grant had claimed a key)",
            Count::ZombieCommitsApplied => "zombie commits applied (nobody had claimed its keys since)",
            Count::FencedCommits => "commits refused by the fence, any cause (zombies, database stalls, clock steps)",
            Count::CrashBetweenGatewayAndCommit => "crash between a gateway confirm and its commit",
            Count::GatewayOutcomeUnknown => "gateway answers that were unclear (looked up)",
            Count::CompleterResolved => "stuck payments the completer resolved",
            Count::KeysReaped => "expired idempotency keys reaped",
            Count::OrdersCreated => "orders created (201)",
            Count::OrdersPaid => "order payments confirmed (200 done)",
            Count::OutOfStock => "orders refused out_of_stock",
            Count::SeatUnavailable => "orders refused seat_unavailable",
            Count::OrderExpired => "refused order_expired (pay or cancel too late)",
            Count::OrdersSwept => "orders expired by the sweeper",
            Count::ExpiryRaces => "confirms sent to land just before their order's TTL",
            Count::QueuePromotions => "queue promotions observed (waiting, then active)",
            Count::Forbidden403 => "seat orders refused 403 (token not active)",
            Count::KeyReuseRefused => "confirms with another payment's key refused (409 payment_key_in_use)",
            Count::SecondTabConfirms => "second-tab confirms: one gateway payment, the tab's own payment key",
            Count::BatchedTogether => "requests run in a group commit with others (the batcher's coverage)",
            Count::BesideRequests => "order cancels sent with another payment's confirm or cancel beside (busy tabs)",
            Count::OtherTabRefused => "tab confirms refused: the other tab's key was charged (409 invalid_state)",
            Count::ForeignKeyFailed => "gateway payments failed: their key was charged for another order",
            Count::CashbackCancelRefused => "cancels refused: cashback spent (409 insufficient_balance)",
            Count::RefundsOwedResolved => "refunds owed (a charge of another amount) sent back and resolved",
            Count::LateChargesRefunded => "charges landed after the give-up, refunded by the watch (hole 11)",
            Count::SeatLimitRefused => "seat orders refused seat_limit_reached (one token hoarding)",
            Count::MaxBalanceRefused => "refused max_balance_exceeded (top-ups, payback holds)",
            Count::LimitRefused => "payments refused limit_exceeded (per payment, daily, monthly)",
            Count::PaybackAmountRefused => "requests naming their own payback_amount refused 400",
            Count::PaymentsAcrossMidnight => "payments created before a UTC midnight and confirmed after",
            Count::PaymentsAcrossMonthEnd => "payments created before a month end and confirmed after",
            Count::StampedBehindWindow => {
                "wallet payments stamped a day behind their wallet's window (a lagging server)"
            }
        }
    }
}

/// A counter per [`Count`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts([u64; Count::ALL.len()]);

impl Default for Counts {
    fn default() -> Counts {
        Counts([0; Count::ALL.len()])
    }
}

impl Counts {
    pub fn add(&mut self, count: Count, n: u64) {
        self.0[count as usize] += n;
    }

    pub fn get(&self, count: Count) -> u64 {
        self.0[count as usize]
    }

    pub fn merge(&mut self, other: &Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

/// How one request ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Reply {
        status: u16,
        body: Vec<u8>,
        replayed: bool,
    },
    /// No (complete) answer: a timeout, a refused or dropped connection.
    Failed(String),
}

/// One request a client sent.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub client: usize,
    pub user: UserId,
    /// The client's operation this request belongs to.
    pub op: usize,
    pub kind: &'static str,
    /// The request's path (names the order or payment it acts on).
    pub path: String,
    /// The request's body (names the payment key, the seats, any
    /// `payback_amount` the client chose).
    pub body: Option<Vec<u8>>,
    /// The `Queue-Token` header, for seats.
    pub queue_token: Option<String>,
    pub key: Option<String>,
    pub host: String,
    pub attempt: u32,
    pub duplicate: bool,
    /// By the service's clock (not a lagging server's): when the attempt
    /// was sent and when it ended.
    pub sent_at: Timestamp,
    pub ended_at: Timestamp,
    pub answer: Answer,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<String>,
    hash: u64,
    counts: Counts,
    exchanges: Vec<Exchange>,
    monitor: Vec<Violation>,
    /// Per server host, the payment keys whose confirm its current
    /// incarnation sent; read when the host crashes.
    confirms_sent: Vec<(String, String)>,
    /// Every confirm our servers sent, per order id (our payment id) and
    /// per payment key, whatever became of it: counted by the sender, so a
    /// confirm lost on its way still counts.
    confirms_by_order: BTreeMap<String, u64>,
    confirms_by_key: BTreeMap<String, u64>,
}

/// Shared by every part of one run.
#[derive(Clone, Debug)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
    clock: SimClock,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

impl Journal {
    pub fn new(clock: SimClock) -> Journal {
        Journal { inner: Arc::new(Mutex::new(Inner { hash: FNV_OFFSET, ..Inner::default() })), clock }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only one thread runs a simulation; a poisoned lock means a panic
        // elsewhere, which already fails the run.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs an event at the current simulated time (and clock offset).
    pub fn event(&self, who: &str, what: impl fmt::Display) {
        let line = format!(
            "{:>8}ms{} {who}: {what}",
            self.clock.elapsed().as_millis(),
            match self.clock.offset().as_secs() {
                0 => String::new(),
                offset => format!(" (+{offset}s)"),
            }
        );
        let mut inner = self.lock();
        inner.hash = fnv(inner.hash, line.as_bytes());
        inner.hash = fnv(inner.hash, b"\n");
        inner.events.push(line);
    }

    pub fn count(&self, count: Count, n: u64) {
        self.lock().counts.add(count, n);
    }

    pub fn exchange(&self, exchange: Exchange) {
        self.lock().exchanges.push(exchange);
    }

    pub fn monitor_violation(&self, violation: Violation) {
        self.event("monitor", format!("VIOLATION {violation}"));
        self.lock().monitor.push(violation);
    }

    /// A server is about to send a confirm of `payment_key` for `order_id`.
    pub fn confirm_sent(&self, host: &str, payment_key: &str, order_id: &str) {
        let mut inner = self.lock();
        inner.confirms_sent.push((host.to_owned(), payment_key.to_owned()));
        *inner.confirms_by_order.entry(order_id.to_owned()).or_default() += 1;
        *inner.confirms_by_key.entry(payment_key.to_owned()).or_default() += 1;
    }

    /// Confirms our servers sent, per order id and per payment key.
    pub fn confirms_sent_total(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let inner = self.lock();
        (inner.confirms_by_order.clone(), inner.confirms_by_key.clone())
    }

    /// The payment keys `host` sent confirms for, forgetting them (the host crashed).
    pub fn take_confirms_sent(&self, host: &str) -> Vec<String> {
        let mut inner = self.lock();
        let (theirs, others): (Vec<_>, Vec<_>) = inner.confirms_sent.drain(..).partition(|(h, _)| h == host);
        inner.confirms_sent = others;
        theirs.into_iter().map(|(_, key)| key).collect()
    }

    pub fn hash(&self) -> u64 {
        self.lock().hash
    }

    /// Folds `state`'s whole `Debug` text (the final store) into the run's
    /// hash, and logs its own hash: two runs that logged the same events
    /// but left different databases must not hash equal.
    pub fn fingerprint(&self, what: &str, state: &impl fmt::Debug) {
        struct Fnv(u64);
        impl fmt::Write for Fnv {
            fn write_str(&mut self, text: &str) -> fmt::Result {
                self.0 = fnv(self.0, text.as_bytes());
                Ok(())
            }
        }
        let mut hasher = Fnv(FNV_OFFSET);
        // Formatting into a hasher cannot fail.
        let _ = fmt::write(&mut hasher, format_args!("{state:?}"));
        self.event("sim", format!("{what} hashes {:016x}", hasher.0));
    }

    pub fn counts(&self) -> Counts {
        self.lock().counts.clone()
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.lock().exchanges.clone()
    }

    pub fn monitor_violations(&self) -> Vec<Violation> {
        self.lock().monitor.clone()
    }

    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }

    pub fn event_count(&self) -> usize {
        self.lock().events.len()
    }
}
