//! What the deployment sells: the plan's products (scarce stock, each with
//! the merchant's payback rate or the servers' default) and its one event
//! (one showtime of a few seats behind a small waiting queue, with a limit of
//! seats per queue token), created directly in the database before any host
//! starts — as an operator would have set them up — with deterministic ids
//! from the run's sequence.

use std::sync::Arc;
use std::time::Duration;

use tally_core::app::{NewSeat, NewShowtime};
use tally_core::ids::{IdGen, SeqIds, UserId};
use tally_core::money::Amount;
use tally_core::store::{NoLocks, Store};
use tally_core::time::{Clock, Timestamp};
use tally_core::{Command, Executed, Outcome, Tally};
use tally_mem::MemStore;

use crate::clock::SimClock;
use crate::plan::{Adversary, Inventory};
use crate::server;
use crate::shared::{TAG_SPACE, now_or_never};

/// A product as the clients and the oracle know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogueProduct {
    pub id: String,
    /// Its stock when the run began (restocks add to it).
    pub initial: u64,
    /// Its payback rate in basis points, as the merchant set it (its own
    /// or the servers' default): what the oracle holds payments to.
    pub payback_bps: u32,
}

/// The ids the clients order by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub products: Vec<CatalogueProduct>,
    pub event: Option<String>,
    pub seats: Vec<String>,
    /// The servers' default payback (payments of an amount, and seats).
    pub payback_bps: u32,
    /// The event's seats per queue token.
    pub max_seats_per_token: u32,
}

fn price(units: u64) -> Amount {
    Amount::new(i64::try_from(units).expect("small") * TAG_SPACE).expect("a valid price")
}

/// Creates `inventory`'s products and event as the admin, at the rates of
/// `adversary`'s payback policy.
pub fn create(
    memory: &MemStore,
    clock: &SimClock,
    ids: &Arc<SeqIds>,
    inventory: &Inventory,
    adversary: &Adversary,
) -> Catalogue {
    let setup = Tally::new(
        memory.clone(),
        tally_core::store::NoLocks,
        clock.clone(),
        Arc::clone(ids) as Arc<dyn IdGen>,
        server::core_config(inventory.order_ttl, adversary.payback_bps),
    );
    now_or_never(create_with(&setup, clock.start(), inventory, adversary))
}

/// [`create`] through any service: the chaos harness creates the same
/// catalogue on PostgreSQL. `start` dates the showtime (a month later).
pub async fn create_with<S: Store, C: Clock>(
    setup: &Tally<S, NoLocks, C>,
    start: Timestamp,
    inventory: &Inventory,
    adversary: &Adversary,
) -> Catalogue {
    let mut products = Vec::with_capacity(inventory.products.len());
    for (index, &(units, stock)) in inventory.products.iter().enumerate() {
        let payback_bps = adversary.product_bps.get(index).copied().flatten();
        let command =
            Command::CreateProduct { name: format!("product {index}"), price: price(units), stock, payback_bps };
        match run(setup, command).await {
            Outcome::Product(product) => products.push(CatalogueProduct {
                id: product.id.to_string(),
                initial: stock,
                payback_bps: payback_bps.unwrap_or(adversary.payback_bps),
            }),
            other => panic!("a product, not {other:?}"),
        }
    }
    let seats = inventory
        .seats
        .iter()
        .enumerate()
        .map(|(index, &units)| NewSeat { label: format!("A{}", index + 1), price: price(units) })
        .collect();
    let command = Command::CreateEvent {
        name: "the concert".into(),
        active_limit: inventory.active_limit,
        token_ttl: inventory.token_ttl,
        max_seats_per_token: inventory.max_seats_per_token,
        showtimes: vec![NewShowtime { starts_at: start.plus(Duration::from_secs(30 * 86_400)), seats }],
    };
    let Outcome::Event(view) = run(setup, command).await else { panic!("creating an event answers the event") };
    Catalogue {
        products,
        event: Some(view.event.id.to_string()),
        seats: view.showtimes.iter().flat_map(|(_, seats)| seats.iter().map(|s| s.id.to_string())).collect(),
        payback_bps: adversary.payback_bps,
        max_seats_per_token: inventory.max_seats_per_token,
    }
}

/// One admin command of the setup, which must succeed.
async fn run<S: Store, C: Clock>(setup: &Tally<S, NoLocks, C>, command: Command) -> Outcome {
    match setup.execute(UserId::ADMIN, command, None).await {
        Ok(Executed::Fresh(outcome)) => outcome,
        other => panic!("creating the catalogue succeeds, not {other:?}"),
    }
}
