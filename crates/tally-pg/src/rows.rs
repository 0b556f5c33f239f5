//! Rows ↔ domain records. The only place that knows column names.

use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use std::time::Duration;
use tally_core::check::Snapshot;
use tally_core::idempotency::{
    Fingerprint, IdemKey, IdemOrigin, IdemRecord, IdemScope, IdemState, LeaseToken, StoredResponse,
};

use tally_core::catalog::{Event, Product, Seat, SeatStatus, Showtime};
use tally_core::ids::{EventId, OpId, OrderId, PaymentId, ProductId, SeatId, ShowtimeId, TokenId, TransferId, UserId};
use tally_core::ledger::{Account, Transfer, TransferKind, WalletSide};
use tally_core::money::{Amount, Money};
use tally_core::order::{Order, OrderLine, OrderSeat, OrderStatus};
use tally_core::payment::{GatewayAttempt, Method, Payment, PaymentStatus};
use tally_core::queue::{QueueToken, TokenStatus};
use tally_core::store::{StoreError, User};
use tally_core::time::Timestamp;
use tally_core::wallet::{Limits, Wallet};
use uuid::Uuid;

use crate::errors;

pub(crate) fn uuid(id: u128) -> Uuid {
    Uuid::from_u128(id)
}

fn bad(what: &str) -> StoreError {
    StoreError::Integrity(format!("unexpected value in {what}"))
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column).map_err(errors::map)
}

fn id(row: &PgRow, column: &str) -> Result<u128, StoreError> {
    Ok(get::<Uuid>(row, column)?.as_u128())
}

fn opt_id(row: &PgRow, column: &str) -> Result<Option<u128>, StoreError> {
    Ok(get::<Option<Uuid>>(row, column)?.map(|u| u.as_u128()))
}

fn opt_time(row: &PgRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(row, column)?.map(Timestamp))
}

fn amount(row: &PgRow, column: &str) -> Result<Amount, StoreError> {
    Amount::new(get(row, column)?).map_err(|_| bad(column))
}

fn u64_of(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    u64::try_from(get::<i64>(row, column)?).map_err(|_| bad(column))
}

pub(crate) const USER_COLUMNS: &str = "id, name, key_hash, created_at_ms";

/// The one of `variants` that `text_of` writes as the text in `column`
/// (`table.column`): each enum's column values are written once, by the
/// function that writes them.
fn parse<T: Copy>(row: &PgRow, column: &str, variants: &[T], text_of: fn(T) -> &'static str) -> Result<T, StoreError> {
    let text = get::<String>(row, column.rsplit('.').next().unwrap_or(column))?;
    variants.iter().copied().find(|variant| text_of(*variant) == text).ok_or_else(|| bad(column))
}

pub(crate) fn user(row: &PgRow) -> Result<User, StoreError> {
    let hash: Vec<u8> = get(row, "key_hash")?;
    Ok(User {
        id: UserId(id(row, "id")?),
        name: get(row, "name")?,
        key_hash: hash.try_into().map_err(|_| bad("key_hash"))?,
        created_at: Timestamp(get(row, "created_at_ms")?),
    })
}

pub(crate) const WALLET_COLUMNS: &str = "user_id, balance, max_balance, per_payment_limit, daily_limit, monthly_limit, \
     day, spent_day, month, spent_month, payback_held, entry_count, version";

pub(crate) fn wallet(row: &PgRow) -> Result<Wallet, StoreError> {
    let money =
        |column: &str| -> Result<Option<Money>, StoreError> { Ok(get::<Option<i64>>(row, column)?.map(Money::new)) };
    Ok(Wallet {
        user: UserId(id(row, "user_id")?),
        balance: Money::new(get(row, "balance")?),
        limits: Limits {
            max_balance: money("max_balance")?,
            per_payment: money("per_payment_limit")?,
            daily: money("daily_limit")?,
            monthly: money("monthly_limit")?,
        },
        day: get(row, "day")?,
        spent_day: Money::new(get(row, "spent_day")?),
        month: get(row, "month")?,
        spent_month: Money::new(get(row, "spent_month")?),
        payback_held: Money::new(get(row, "payback_held")?),
        entry_count: u64_of(row, "entry_count")?,
        version: u64_of(row, "version")?,
    })
}

pub(crate) const PAYMENT_COLUMNS: &str = "id, user_id, amount, payback, method, status, gateway_payment_key, \
     gateway_started_at_ms, COALESCE(gateway_sent_at_ms, gateway_started_at_ms) AS gateway_sent_at_ms, gateway_requested_by, \
     gateway_watch_until_ms, order_id, created_at_ms, updated_at_ms, version";

pub(crate) fn status_str(status: PaymentStatus) -> &'static str {
    status.as_str()
}

pub(crate) fn payment(row: &PgRow) -> Result<Payment, StoreError> {
    use PaymentStatus::{Cancelled, Cancelling, Confirming, Done, Failed, Refunding, Wait};
    let statuses = [Wait, Confirming, Done, Failed, Cancelling, Cancelled, Refunding];
    let status = parse(row, "payments.status", &statuses, status_str)?;
    let method = parse(row, "payments.method", &[Method::Wallet, Method::Gateway], Method::as_str)?;
    let gateway = match get::<Option<String>>(row, "gateway_payment_key")? {
        Some(payment_key) => Some(GatewayAttempt {
            payment_key,
            started_at: Timestamp(get(row, "gateway_started_at_ms")?),
            sent_at: Timestamp(get(row, "gateway_sent_at_ms")?),
            requested_by: get::<Option<String>>(row, "gateway_requested_by")?
                .map(|key| {
                    IdemKey::new(&key)
                        .map_err(|_| StoreError::Integrity(format!("payments.gateway_requested_by {key:?}")))
                })
                .transpose()?,
            watch_until: get::<Option<i64>>(row, "gateway_watch_until_ms")?.map(Timestamp),
        }),
        None => None,
    };
    Ok(Payment {
        id: PaymentId(id(row, "id")?),
        user: UserId(id(row, "user_id")?),
        amount: amount(row, "amount")?,
        payback: Money::new(get(row, "payback")?),
        method,
        status,
        gateway,
        order: opt_id(row, "order_id")?.map(OrderId),
        created_at: Timestamp(get(row, "created_at_ms")?),
        updated_at: Timestamp(get(row, "updated_at_ms")?),
        version: u64_of(row, "version")?,
    })
}

pub(crate) const TRANSFER_COLUMNS: &str = "id, kind, debit, credit, amount, payment_id, wallet_user_id, \
     wallet_balance_after, wallet_seq, op_id, origin_user_id, origin_key, origin_expires_at_ms, at_ms";

/// An account's column value; a wallet's user goes in `wallet_user_id`.
pub(crate) fn account_str(account: Account) -> &'static str {
    match account {
        Account::World => "world",
        Account::Revenue => "revenue",
        Account::CashbackPool => "cashback_pool",
        Account::Wallet(_) => "wallet",
    }
}

pub(crate) fn transfer(row: &PgRow) -> Result<Transfer, StoreError> {
    let wallet_user = get::<Option<Uuid>>(row, "wallet_user_id")?.map(|u| UserId(u.as_u128()));
    let account = |column: &str| -> Result<Account, StoreError> {
        Ok(match get::<String>(row, column)?.as_str() {
            "world" => Account::World,
            "revenue" => Account::Revenue,
            "cashback_pool" => Account::CashbackPool,
            "wallet" => Account::Wallet(wallet_user.ok_or_else(|| bad("transfers.wallet_user_id"))?),
            _ => return Err(bad(column)),
        })
    };
    use TransferKind::{Payback, PaybackReversal, Payment, Refund, TopUp};
    let kind = parse(row, "transfers.kind", &[TopUp, Payment, Refund, Payback, PaybackReversal], TransferKind::as_str)?;
    let wallet = match wallet_user {
        Some(user) => Some(WalletSide {
            user,
            balance_after: Money::new(get(row, "wallet_balance_after")?),
            seq: u64_of(row, "wallet_seq")?,
        }),
        None => None,
    };
    let origin = match get::<Option<Uuid>>(row, "origin_user_id")? {
        Some(user) => Some(IdemOrigin {
            scope: IdemScope {
                user: UserId(user.as_u128()),
                key: IdemKey::new(&get::<String>(row, "origin_key")?).map_err(|_| bad("transfers.origin_key"))?,
            },
            expires_at: Timestamp(get(row, "origin_expires_at_ms")?),
        }),
        None => None,
    };
    Ok(Transfer {
        id: TransferId(id(row, "id")?),
        kind,
        debit: account("debit")?,
        credit: account("credit")?,
        amount: amount(row, "amount")?,
        payment: get::<Option<Uuid>>(row, "payment_id")?.map(|u| PaymentId(u.as_u128())),
        wallet,
        op: OpId(id(row, "op_id")?),
        origin,
        at: Timestamp(get(row, "at_ms")?),
    })
}

pub(crate) const IDEM_COLUMNS: &str = "user_id, key, fingerprint, state, lease, lease_expires_at_ms, response_status, \
     response_content_type, response_body, op_id, created_at_ms, expires_at_ms, version";

pub(crate) fn idem(row: &PgRow) -> Result<IdemRecord, StoreError> {
    let fingerprint: Vec<u8> = get(row, "fingerprint")?;
    let state = match get::<String>(row, "state")?.as_str() {
        "in_flight" => IdemState::InFlight {
            lease: LeaseToken(get::<Uuid>(row, "lease")?.as_u128()),
            lease_expires_at: Timestamp(get(row, "lease_expires_at_ms")?),
        },
        "completed" => IdemState::Completed {
            response: StoredResponse {
                status: u16::try_from(get::<i32>(row, "response_status")?).map_err(|_| bad("response_status"))?,
                content_type: get(row, "response_content_type")?,
                body: get(row, "response_body")?,
            },
            op: get::<Option<Uuid>>(row, "op_id")?.map(|u| OpId(u.as_u128())),
        },
        _ => return Err(bad("idempotency_keys.state")),
    };
    Ok(IdemRecord {
        scope: IdemScope {
            user: UserId(id(row, "user_id")?),
            key: IdemKey::new(&get::<String>(row, "key")?).map_err(|_| bad("idempotency_keys.key"))?,
        },
        fingerprint: Fingerprint(fingerprint.try_into().map_err(|_| bad("fingerprint"))?),
        state,
        created_at: Timestamp(get(row, "created_at_ms")?),
        expires_at: Timestamp(get(row, "expires_at_ms")?),
        version: u64_of(row, "version")?,
    })
}

pub(crate) const PRODUCT_COLUMNS: &str =
    "id, name, price, stock, stocked, payback_bps, created_at_ms, updated_at_ms, version";

pub(crate) fn product(row: &PgRow) -> Result<Product, StoreError> {
    Ok(Product {
        id: ProductId(id(row, "id")?),
        name: get(row, "name")?,
        price: amount(row, "price")?,
        stock: u64_of(row, "stock")?,
        stocked: u64_of(row, "stocked")?,
        payback_bps: u32_of(row, "payback_bps")?,
        created_at: Timestamp(get(row, "created_at_ms")?),
        updated_at: Timestamp(get(row, "updated_at_ms")?),
        version: u64_of(row, "version")?,
    })
}

pub(crate) const EVENT_COLUMNS: &str = "id, name, active_limit, token_ttl_ms, next_seq, head_seq, active_count, max_seats_per_token, created_at_ms, version";

fn u32_of(row: &PgRow, column: &str) -> Result<u32, StoreError> {
    u32::try_from(get::<i32>(row, column)?).map_err(|_| bad(column))
}

pub(crate) fn event(row: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: EventId(id(row, "id")?),
        name: get(row, "name")?,
        active_limit: u32_of(row, "active_limit")?,
        token_ttl: Duration::from_millis(u64_of(row, "token_ttl_ms")?),
        next_seq: u64_of(row, "next_seq")?,
        head_seq: u64_of(row, "head_seq")?,
        active_count: u32_of(row, "active_count")?,
        max_seats_per_token: u32_of(row, "max_seats_per_token")?,
        created_at: Timestamp(get(row, "created_at_ms")?),
        version: u64_of(row, "version")?,
    })
}

/// A duration in whole milliseconds, as the schema keeps it.
pub(crate) fn duration_ms(duration: Duration) -> Result<i64, StoreError> {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(StoreError::Integrity(format!("{duration:?} is not a whole number of milliseconds")));
    }
    i64::try_from(duration.as_millis()).map_err(|_| StoreError::Integrity(format!("{duration:?} is too long")))
}

pub(crate) fn i32_of(value: u32) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::Integrity(format!("{value} does not fit the schema")))
}

pub(crate) const SHOWTIME_COLUMNS: &str = "id, event_id, starts_at_ms";

pub(crate) fn showtime(row: &PgRow) -> Result<Showtime, StoreError> {
    Ok(Showtime {
        id: ShowtimeId(id(row, "id")?),
        event: EventId(id(row, "event_id")?),
        starts_at: Timestamp(get(row, "starts_at_ms")?),
    })
}

pub(crate) const SEAT_COLUMNS: &str = "id, showtime_id, event_id, label, price, status, order_id, version";

/// A seat status as its columns: the status name and the order it names.
pub(crate) fn seat_status(status: SeatStatus) -> (&'static str, Option<Uuid>) {
    (status.as_str(), status.order().map(|o| uuid(o.0)))
}

pub(crate) fn seat(row: &PgRow) -> Result<Seat, StoreError> {
    let order = opt_id(row, "order_id")?.map(OrderId);
    let status = match (get::<String>(row, "status")?.as_str(), order) {
        ("available", None) => SeatStatus::Available,
        ("held", Some(order)) => SeatStatus::Held(order),
        ("sold", Some(order)) => SeatStatus::Sold(order),
        _ => return Err(bad("seats.status")),
    };
    Ok(Seat {
        id: SeatId(id(row, "id")?),
        showtime: ShowtimeId(id(row, "showtime_id")?),
        event: EventId(id(row, "event_id")?),
        label: get(row, "label")?,
        price: amount(row, "price")?,
        status,
        version: u64_of(row, "version")?,
    })
}

/// An order with its lines and seats, in the order they were written, in
/// one statement (`FROM orders o`; a locking clause may follow).
pub(crate) const ORDER_SELECT: &str = "SELECT o.id, o.user_id, o.status, o.total, o.payback, o.payment_id, o.event_id, \
     o.token_id, o.expires_at_ms, o.created_at_ms, o.updated_at_ms, o.version, \
     ARRAY(SELECT l.product_id FROM order_lines l WHERE l.order_id = o.id ORDER BY l.position) AS line_products, \
     ARRAY(SELECT l.quantity FROM order_lines l WHERE l.order_id = o.id ORDER BY l.position) AS line_quantities, \
     ARRAY(SELECT l.unit_price FROM order_lines l WHERE l.order_id = o.id ORDER BY l.position) AS line_prices, \
     ARRAY(SELECT s.seat_id FROM order_seats s WHERE s.order_id = o.id ORDER BY s.position) AS seat_ids, \
     ARRAY(SELECT s.price FROM order_seats s WHERE s.order_id = o.id ORDER BY s.position) AS seat_prices \
     FROM orders o";

pub(crate) fn order(row: &PgRow) -> Result<Order, StoreError> {
    use OrderStatus::{Cancelled, Expired, Paid, PendingPayment};
    let products: Vec<Uuid> = get(row, "line_products")?;
    let quantities: Vec<i64> = get(row, "line_quantities")?;
    let prices: Vec<i64> = get(row, "line_prices")?;
    let seat_ids: Vec<Uuid> = get(row, "seat_ids")?;
    let seat_prices: Vec<i64> = get(row, "seat_prices")?;
    if products.len() != quantities.len() || products.len() != prices.len() || seat_ids.len() != seat_prices.len() {
        return Err(bad("order lines"));
    }
    let lines = products
        .iter()
        .zip(quantities)
        .zip(prices)
        .map(|((product, quantity), price)| {
            Ok(OrderLine {
                product: ProductId(product.as_u128()),
                quantity: u64::try_from(quantity).map_err(|_| bad("order_lines.quantity"))?,
                unit_price: Amount::new(price).map_err(|_| bad("order_lines.unit_price"))?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let seats = seat_ids
        .iter()
        .zip(seat_prices)
        .map(|(seat, price)| {
            Ok(OrderSeat {
                seat: SeatId(seat.as_u128()),
                price: Amount::new(price).map_err(|_| bad("order_seats.price"))?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Order {
        id: OrderId(id(row, "id")?),
        user: UserId(id(row, "user_id")?),
        lines,
        seats,
        event: opt_id(row, "event_id")?.map(EventId),
        token: opt_id(row, "token_id")?.map(TokenId),
        total: amount(row, "total")?,
        payback: Money::new(get(row, "payback")?),
        status: parse(row, "orders.status", &[PendingPayment, Paid, Cancelled, Expired], OrderStatus::as_str)?,
        payment: opt_id(row, "payment_id")?.map(PaymentId),
        expires_at: Timestamp(get(row, "expires_at_ms")?),
        created_at: Timestamp(get(row, "created_at_ms")?),
        updated_at: Timestamp(get(row, "updated_at_ms")?),
        version: u64_of(row, "version")?,
    })
}

pub(crate) const TOKEN_COLUMNS: &str =
    "id, event_id, user_id, seq, status, joined_at_ms, activated_at_ms, expires_at_ms, used_at_ms, seats_held, version";

/// A token status's column value (the API folds `used` into `expired`; the
/// schema keeps them apart).
pub(crate) fn token_status_str(status: TokenStatus) -> &'static str {
    match status {
        TokenStatus::Waiting => "waiting",
        TokenStatus::Active => "active",
        TokenStatus::Expired => "expired",
        TokenStatus::Used => "used",
    }
}

pub(crate) fn token(row: &PgRow) -> Result<QueueToken, StoreError> {
    use TokenStatus::{Active, Expired, Used, Waiting};
    let status = parse(row, "queue_tokens.status", &[Waiting, Active, Expired, Used], token_status_str)?;
    Ok(QueueToken {
        id: TokenId(id(row, "id")?),
        event: EventId(id(row, "event_id")?),
        user: UserId(id(row, "user_id")?),
        seq: u64_of(row, "seq")?,
        status,
        joined_at: Timestamp(get(row, "joined_at_ms")?),
        activated_at: opt_time(row, "activated_at_ms")?,
        expires_at: opt_time(row, "expires_at_ms")?,
        used_at: opt_time(row, "used_at_ms")?,
        seats_held: u32_of(row, "seats_held")?,
        version: u64_of(row, "version")?,
    })
}

/// A count or quantity as the schema's bigint.
pub(crate) fn count(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Integrity(format!("{value} does not fit the schema")))
}

pub(crate) fn version(value: u64) -> i64 {
    i64::try_from(value).expect("versions stay far below i64::MAX")
}

/// Reads everything the checker needs on `conn` (inside the caller's snapshot).
pub(crate) async fn snapshot(conn: &mut PgConnection) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        wallets: all(conn, format!("SELECT {WALLET_COLUMNS} FROM wallets ORDER BY user_id"), wallet).await?,
        payments: all(conn, format!("SELECT {PAYMENT_COLUMNS} FROM payments ORDER BY id"), payment).await?,
        transfers: all(conn, format!("SELECT {TRANSFER_COLUMNS} FROM transfers ORDER BY at_ms, id"), transfer).await?,
        idempotency: all(conn, format!("SELECT {IDEM_COLUMNS} FROM idempotency_keys ORDER BY user_id, key"), idem)
            .await?,
        products: all(conn, format!("SELECT {PRODUCT_COLUMNS} FROM products ORDER BY id"), product).await?,
        orders: all(conn, format!("{ORDER_SELECT} ORDER BY o.id"), order).await?,
        events: all(conn, format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id"), event).await?,
        seats: all(conn, format!("SELECT {SEAT_COLUMNS} FROM seats ORDER BY id"), seat).await?,
        tokens: all(conn, format!("SELECT {TOKEN_COLUMNS} FROM queue_tokens ORDER BY id"), token).await?,
    })
}

/// Every row `sql` selects, decoded.
async fn all<T>(
    conn: &mut PgConnection,
    sql: String,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let found = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *conn).await.map_err(errors::map)?;
    found.iter().map(decode).collect()
}
