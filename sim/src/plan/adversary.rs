//! The adversarial part of a seed's plan: which calendar boundary its clock
//! starts just before, and how hostile its clients are (merchant policies,
//! wallet limits next to the amounts they send, reused keys, foreign
//! charges). Drawn once per seed by [`super::Plan`].

use std::time::Duration;

use tally_core::money::Money;
use tally_core::time::Timestamp;
use tally_core::wallet::Limits;

use crate::clock::EPOCH;
use crate::rng::SimRng;
use crate::shared::TAG_SPACE;

/// A UTC calendar boundary a seed's run starts just before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// A midnight inside a month: the daily windows roll.
    Day,
    /// 2026-12-01T00:00Z: the daily and the monthly windows roll.
    Month,
    /// 2027-01-01T00:00Z: the year rolls too.
    Year,
}

/// When a seed's clock starts. Most seeds start at [`EPOCH`] (a midnight,
/// so a run of a few simulated seconds never crosses one); a boundary seed
/// starts a little before a UTC day, month or year end, so that payments,
/// their confirms and the spending windows straddle it (issue 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calendar {
    pub start: Timestamp,
    /// The boundary the run starts before, and when it falls.
    pub boundary: Option<(Boundary, Timestamp)>,
}

/// Seeds (per mille) that start just before a UTC boundary.
pub const BOUNDARY_PER_MILLE: u64 = 300;

const DAY_MS: i64 = 86_400_000;

impl Calendar {
    pub(super) fn draw(rng: &mut SimRng) -> Calendar {
        if !rng.chance(BOUNDARY_PER_MILLE) {
            return Calendar { start: EPOCH, boundary: None };
        }
        let (boundary, days) = match rng.below(20) {
            // EPOCH is 2026-11-23: midnights up to the 29th's end stay in November.
            0..10 => (Boundary::Day, i64::try_from(rng.range(1, 6)).expect("small")),
            10..17 => (Boundary::Month, 8),
            _ => (Boundary::Year, 39),
        };
        let at = Timestamp(EPOCH.0 + days * DAY_MS);
        // Before the boundary by less than a workload takes, so that the
        // clients pay on both sides of it.
        let lead = i64::try_from(rng.range(50, 1_500)).expect("small");
        Calendar { start: Timestamp(at.0 - lead), boundary: Some((boundary, at)) }
    }
}

/// What one client does besides the ordinary workload: the adversarial
/// customer of issue 10. Each habit is on or off per client and seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Habits {
    /// Confirms gateway payments with payment keys already used: its own
    /// earlier payments' keys, and a small pool of keys every reusing client
    /// (of every user) and another merchant share.
    pub reuse_keys: bool,
    /// Spends the cashback of a done gateway payment, then cancels it.
    pub spend_cashback: bool,
    /// Tops the wallet up to just under its `max_balance`, then pays through
    /// the gateway with a payback that may not fit.
    pub fill_to_max: bool,
    /// Books seat after seat with one active queue token.
    pub hoard_seats: bool,
    /// Now and then names its own `payback_amount` (answered 400).
    pub choose_payback: bool,
    /// On a boundary seed: pays from the wallet right as the day rolls, on
    /// its own server, while the other client of its user does on another
    /// (whose clock may lag).
    pub pay_at_midnight: bool,
    /// Confirms a gateway payment from a second checkout tab at the same
    /// time, with a payment key of the tab's own: one of the two confirms
    /// charges, and the other is refused 409, never answered with a charge
    /// its key did not make.
    pub second_tab: bool,
    /// Cancels an order while, in another tab, confirming or cancelling
    /// another of its payments, both sent at once to one server: the two
    /// share a group commit, and each must be answered as it would be alone
    /// (session 13: the order's cancel was answered 404). Drawn on a stream
    /// of its own (see `Plan::draw`).
    pub busy_tabs: bool,
}

/// The money rules one seed tests and how its customers attack them: the
/// merchant's payback policy, the wallets' limits, the calendar, another
/// merchant charging shared payment keys, and each client's habits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adversary {
    /// The servers' default payback in basis points (`Config::payback_bps`).
    pub payback_bps: u32,
    /// Per product (as [`Inventory::products`]): its own rate, or `None`
    /// for the servers' default.
    pub product_bps: Vec<Option<u32>>,
    /// Per user: tight limits on some seeds (amounts in whole units of
    /// [`TAG_SPACE`], as the workload's), none on others.
    pub limits: Vec<Limits>,
    pub calendar: Calendar,
    /// Per client.
    pub habits: Vec<Habits>,
    /// When another merchant's checkout charges a payment key at the
    /// gateway (the shared pool's, or one a client is about to use): a
    /// charge under one of our keys that is not ours.
    pub foreign_charges: Vec<Duration>,
}

/// Shared payment keys: `pk-shared-0` up to this (exclusive).
pub const SHARED_KEYS: u64 = 3;

impl Adversary {
    pub(super) fn draw(rng: &mut SimRng, clients: usize, users: usize, products: usize) -> Adversary {
        let payback_bps = *rng.pick(&[0, 100, 500, 1_000, 2_500, 5_000]);
        let product_bps =
            (0..products).map(|_| rng.chance(500).then(|| *rng.pick(&[0, 300, 1_000, 2_000, 5_000, 10_000]))).collect();
        let units = |rng: &mut SimRng, low: u64, high: u64| {
            Some(Money::new(i64::try_from(rng.range(low, high)).expect("small") * TAG_SPACE))
        };
        let calendar = Calendar::draw(rng);
        // A boundary seed's wallets always have limits, mostly a daily one
        // that a few payments fill: spending windows are what a boundary tests.
        let boundary = calendar.boundary.is_some();
        let tight = boundary || rng.chance(600);
        let limits = (0..users)
            .map(|_| {
                if !tight {
                    return Limits::default();
                }
                let daily = match boundary {
                    true if rng.chance(900) => units(rng, 6, 16),
                    false if rng.chance(600) => units(rng, 8, 25),
                    _ => None,
                };
                let monthly = match daily {
                    Some(daily) if rng.chance(500) => {
                        let extra = i64::try_from(rng.range(0, 15)).expect("small") * TAG_SPACE;
                        Some(Money::new(daily.minor_units() + extra))
                    }
                    _ => None,
                };
                Limits {
                    max_balance: if rng.chance(700) { units(rng, 25, 60) } else { None },
                    per_payment: if rng.chance(300) { units(rng, 6, 12) } else { None },
                    daily,
                    monthly,
                }
            })
            .collect();
        let habits = (0..clients)
            .map(|_| Habits {
                reuse_keys: rng.chance(500),
                spend_cashback: rng.chance(500),
                fill_to_max: rng.chance(600),
                hoard_seats: rng.chance(600),
                choose_payback: rng.chance(300),
                pay_at_midnight: boundary && rng.chance(800),
                second_tab: rng.chance(400),
                busy_tabs: false,
            })
            .collect();
        let foreign_charges =
            if rng.chance(400) { (0..rng.range(1, 4)).map(|_| rng.millis(0, 600)).collect() } else { Vec::new() };
        Adversary { payback_bps, product_bps, limits, calendar, habits, foreign_charges }
    }
}
