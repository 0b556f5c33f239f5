//! Rows ↔ domain records. The only place that knows column names.

use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tally_core::check::Snapshot;
use tally_core::idempotency::{
    Fingerprint, IdemKey, IdemOrigin, IdemRecord, IdemScope, IdemState, LeaseToken, StoredResponse,
};
use tally_core::ids::{OpId, PaymentId, TransferId, UserId};
use tally_core::ledger::{Account, Transfer, TransferKind, WalletSide};
use tally_core::money::{Amount, Money};
use tally_core::payment::{GatewayAttempt, Method, Payment, PaymentStatus};
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

fn amount(row: &PgRow, column: &str) -> Result<Amount, StoreError> {
    Amount::new(get(row, column)?).map_err(|_| bad(column))
}

fn u64_of(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    u64::try_from(get::<i64>(row, column)?).map_err(|_| bad(column))
}

pub(crate) const USER_COLUMNS: &str = "id, name, key_hash, created_at_ms";

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
     day, spent_day, month, spent_month, entry_count, version";

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
        entry_count: u64_of(row, "entry_count")?,
        version: u64_of(row, "version")?,
    })
}

pub(crate) const PAYMENT_COLUMNS: &str = "id, user_id, amount, payback, method, status, gateway_payment_key, \
     gateway_started_at_ms, created_at_ms, updated_at_ms, version";

pub(crate) fn status_str(status: PaymentStatus) -> &'static str {
    status.as_str()
}

pub(crate) fn payment(row: &PgRow) -> Result<Payment, StoreError> {
    let status = match get::<String>(row, "status")?.as_str() {
        "wait" => PaymentStatus::Wait,
        "confirming" => PaymentStatus::Confirming,
        "done" => PaymentStatus::Done,
        "failed" => PaymentStatus::Failed,
        "cancelling" => PaymentStatus::Cancelling,
        "cancelled" => PaymentStatus::Cancelled,
        _ => return Err(bad("payments.status")),
    };
    let method = match get::<String>(row, "method")?.as_str() {
        "wallet" => Method::Wallet,
        "gateway" => Method::Gateway,
        _ => return Err(bad("payments.method")),
    };
    let gateway = match get::<Option<String>>(row, "gateway_payment_key")? {
        Some(payment_key) => {
            Some(GatewayAttempt { payment_key, started_at: Timestamp(get(row, "gateway_started_at_ms")?) })
        }
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
    let kind = match get::<String>(row, "kind")?.as_str() {
        "top_up" => TransferKind::TopUp,
        "payment" => TransferKind::Payment,
        "refund" => TransferKind::Refund,
        "payback" => TransferKind::Payback,
        "payback_reversal" => TransferKind::PaybackReversal,
        _ => return Err(bad("transfers.kind")),
    };
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

pub(crate) fn version(value: u64) -> i64 {
    i64::try_from(value).expect("versions stay far below i64::MAX")
}

/// Reads everything the checker needs on `conn` (inside the caller's snapshot).
pub(crate) async fn snapshot(conn: &mut PgConnection) -> Result<Snapshot, StoreError> {
    let wallets = sqlx::query(AssertSqlSafe(format!("SELECT {WALLET_COLUMNS} FROM wallets ORDER BY user_id")))
        .fetch_all(&mut *conn)
        .await
        .map_err(errors::map)?;
    let payments = sqlx::query(AssertSqlSafe(format!("SELECT {PAYMENT_COLUMNS} FROM payments ORDER BY id")))
        .fetch_all(&mut *conn)
        .await
        .map_err(errors::map)?;
    let transfers = sqlx::query(AssertSqlSafe(format!("SELECT {TRANSFER_COLUMNS} FROM transfers ORDER BY at_ms, id")))
        .fetch_all(&mut *conn)
        .await
        .map_err(errors::map)?;
    let keys = sqlx::query(AssertSqlSafe(format!("SELECT {IDEM_COLUMNS} FROM idempotency_keys ORDER BY user_id, key")))
        .fetch_all(&mut *conn)
        .await
        .map_err(errors::map)?;
    Ok(Snapshot {
        wallets: wallets.iter().map(wallet).collect::<Result<_, _>>()?,
        payments: payments.iter().map(payment).collect::<Result<_, _>>()?,
        transfers: transfers.iter().map(transfer).collect::<Result<_, _>>()?,
        idempotency: keys.iter().map(idem).collect::<Result<_, _>>()?,
    })
}
