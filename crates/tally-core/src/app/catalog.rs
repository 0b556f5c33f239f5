//! The catalog's use cases: products (created, restocked, read) and events
//! with their showtimes and seats (created by the admin, read by anyone).

use std::collections::BTreeSet;

use super::*;
use crate::catalog::{self, Seat, SeatStatus, Showtime, StockEvent};
use crate::ids::ShowtimeId;
use crate::queue;

/// One seat of a new showtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSeat {
    pub label: String,
    pub price: Amount,
}

/// One showtime of a new event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewShowtime {
    pub starts_at: Timestamp,
    pub seats: Vec<NewSeat>,
}

/// An event as created: its showtimes with their seats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventView {
    pub event: Event,
    pub showtimes: Vec<(Showtime, Vec<Seat>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShowtimeView {
    pub showtime: Showtime,
    pub available_seats: u64,
}

/// An event's queue settings, as the admin creates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    pub active_limit: u32,
    pub token_ttl: Duration,
    pub max_seats_per_token: u32,
}

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    pub(super) async fn create_product(
        &self,
        tx: &mut impl Tx,
        name: &str,
        price: Amount,
        stock: u64,
        payback_bps: Option<u32>,
        booking: &Booking,
    ) -> Result<Step, Error> {
        let name = valid_label(name, "a product name must be 1 to 200 characters, without control characters")?;
        let payback_bps = payback_bps.unwrap_or(self.config.payback_bps);
        if payback_bps > crate::payment::PAYBACK_BPS_MAX {
            return Err(Error::InvalidInput("payback_bps must be 0 to 10000"));
        }
        let product = Product::new(ProductId(self.ids.next_id()), name, price, stock, payback_bps, booking.at)?;
        tx.put_product(None, &product).await?;
        Ok(Step::Done(Outcome::Product(product)))
    }

    pub(super) async fn restock(
        &self,
        tx: &mut impl Tx,
        product: ProductId,
        quantity: u64,
        booking: &Booking,
    ) -> Result<Step, Error> {
        let loaded = tx.product(product).await?.ok_or(Error::NotFound)?;
        let restocked = loaded.apply(StockEvent::Restock(quantity), booking.at)?;
        tx.put_product(Some(&loaded), &restocked).await?;
        Ok(Step::Done(Outcome::Product(restocked)))
    }

    pub(super) async fn create_event(
        &self,
        tx: &mut impl Tx,
        name: &str,
        settings: QueueSettings,
        showtimes: &[NewShowtime],
        booking: &Booking,
    ) -> Result<Step, Error> {
        let QueueSettings { active_limit, token_ttl, max_seats_per_token } = settings;
        let name = valid_label(name, "an event name must be 1 to 200 characters, without control characters")?;
        if !queue::valid_settings(active_limit, token_ttl) {
            return Err(Error::InvalidInput("active_limit must be 1 to 10000 and token_ttl_seconds 1 to 86400"));
        }
        if max_seats_per_token == 0 || max_seats_per_token > catalog::MAX_SEATS_PER_TOKEN_MAX {
            return Err(Error::InvalidInput("max_seats_per_token must be 1 to 1000"));
        }
        if showtimes.is_empty() || showtimes.len() > catalog::SHOWTIMES_MAX {
            return Err(Error::InvalidInput("an event has 1 to 100 showtimes"));
        }
        let seat_count: usize = showtimes.iter().map(|s| s.seats.len()).sum();
        if showtimes.iter().any(|s| s.seats.is_empty() || s.seats.len() > catalog::SEATS_PER_SHOWTIME_MAX)
            || seat_count > catalog::SEATS_PER_EVENT_MAX
        {
            return Err(Error::InvalidInput("a showtime has 1 to 1000 seats, an event at most 10000"));
        }
        let event = Event {
            id: EventId(self.ids.next_id()),
            name,
            active_limit,
            token_ttl,
            next_seq: 1,
            head_seq: 1,
            active_count: 0,
            max_seats_per_token,
            created_at: booking.at,
            version: 0,
        };
        let mut created = Vec::with_capacity(showtimes.len());
        for new in showtimes {
            let showtime = Showtime { id: ShowtimeId(self.ids.next_id()), event: event.id, starts_at: new.starts_at };
            let mut labels = BTreeSet::new();
            let mut seats = Vec::with_capacity(new.seats.len());
            for seat in &new.seats {
                let label =
                    valid_label(&seat.label, "a seat label must be 1 to 200 characters, without control characters")?;
                if !labels.insert(label.clone()) {
                    return Err(Error::InvalidInput("seat labels must be unique within a showtime"));
                }
                seats.push(Seat {
                    id: SeatId(self.ids.next_id()),
                    showtime: showtime.id,
                    event: event.id,
                    label,
                    price: seat.price,
                    status: SeatStatus::Available,
                    version: 0,
                });
            }
            created.push((showtime, seats));
        }
        tx.put_event(None, &event).await?;
        for (showtime, seats) in &created {
            tx.insert_showtime(showtime).await?;
            for seat in seats {
                tx.put_seat(None, seat).await?;
            }
        }
        Ok(Step::Done(Outcome::Event(EventView { event, showtimes: created })))
    }

    pub async fn product(&self, id: ProductId) -> Result<Product, Error> {
        let mut tx = self.store.peek().await?;
        let product = tx.product(id).await;
        tx.rollback().await;
        product?.ok_or(Error::NotFound)
    }

    /// An event's showtimes with how many seats are available in each.
    pub async fn showtimes(&self, event: EventId) -> Result<Vec<ShowtimeView>, Error> {
        let mut tx = self.store.peek().await?;
        let result = async {
            tx.event(event).await?.ok_or(Error::NotFound)?;
            let mut views = Vec::new();
            for showtime in tx.showtimes(event).await? {
                let seats = tx.seats(showtime.id).await?;
                let available_seats = seats.iter().filter(|s| s.status == SeatStatus::Available).count() as u64;
                views.push(ShowtimeView { showtime, available_seats });
            }
            Ok(views)
        }
        .await;
        tx.rollback().await;
        result
    }

    pub async fn seats(&self, showtime: ShowtimeId) -> Result<Vec<Seat>, Error> {
        let mut tx = self.store.peek().await?;
        let result = async {
            tx.showtime(showtime).await?.ok_or(Error::NotFound)?;
            Ok(tx.seats(showtime).await?)
        }
        .await;
        tx.rollback().await;
        result
    }
}

fn valid_label(text: &str, refusal: &'static str) -> Result<String, Error> {
    catalog::label(text).map(str::to_owned).ok_or(Error::InvalidInput(refusal))
}
