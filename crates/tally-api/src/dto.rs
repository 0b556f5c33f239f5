//! The wire format: request and response bodies, and their conversions from
//! and to the core's types (which are deliberately not `Serialize`).
//!
//! Requests are parsed in two steps. Serde checks the *shape* (JSON syntax,
//! types, unknown and missing fields) and fails with 400 `malformed_request`;
//! then the conversions here check the *values* (amounts in range) and fail
//! with 422 `invalid_amount`. Amounts are read through [`JsonInteger`] so that
//! an integer too large for `i64` is told apart from a fraction: the first is
//! a value out of range (422), the second is the wrong type (400).

use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use tally_core::app::{LedgerPage, Outcome, WalletView};
use tally_core::ids::UserId;
use tally_core::ledger::{Account, Transfer};
use tally_core::money::{Amount, AmountError, Money};
use tally_core::payment::{PAYMENT_KEY_LENGTH_MAX, Payment, is_valid_payment_key};
use tally_core::store::User;
use tally_core::time::{Timestamp, civil_from_days};
use tally_core::wallet::Limits;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::problem::{ApiError, Code};

mod orders;

pub use orders::{
    CreateEventRequest, CreateOrderRequest, CreateProductRequest, EventBody, NewSeatInput, NewShowtimeInput, OrderBody,
    OrderItemBody, OrderItemInput, OrderSeatBody, ProductBody, RestockRequest, SeatBody, SeatsBody, ShowtimeBody,
    ShowtimeCreatedBody, ShowtimesBody, TokenBody, parse_rfc3339,
};

/// An integer as written in a JSON body, before its range is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonInteger {
    /// Fits `i64` or `u64`.
    Exact(i128),
    /// An integer-valued number beyond `i64` in magnitude (`1e30`,
    /// `99999999999999999999999`): serde_json hands these over as floats.
    Huge { negative: bool },
}

impl From<i64> for JsonInteger {
    fn from(value: i64) -> JsonInteger {
        JsonInteger::Exact(i128::from(value))
    }
}

impl From<u64> for JsonInteger {
    fn from(value: u64) -> JsonInteger {
        JsonInteger::Exact(i128::from(value))
    }
}

/// A client writes what it holds as the integer it is; `Huge` is only ever
/// read (a float beyond `i64`), never written.
impl Serialize for JsonInteger {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonInteger::Exact(value) => serializer.serialize_i128(*value),
            JsonInteger::Huge { .. } => Err(serde::ser::Error::custom("a huge integer is read, never written")),
        }
    }
}

/// 2^63 as a float: every float at or beyond it in magnitude is an integer
/// too large for `i64` (floats that large have no fractional part).
const I64_LIMIT_AS_FLOAT: f64 = 9_223_372_036_854_775_808.0;

impl<'de> Deserialize<'de> for JsonInteger {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonInteger, D::Error> {
        struct IntegerVisitor;

        impl Visitor<'_> for IntegerVisitor {
            type Value = JsonInteger;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer number of minor units")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<JsonInteger, E> {
                Ok(JsonInteger::Exact(i128::from(value)))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<JsonInteger, E> {
                Ok(JsonInteger::Exact(i128::from(value)))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<JsonInteger, E> {
                // serde_json hands over a number written with a fraction or
                // an exponent as a float. JSON Schema's `integer` is a value,
                // not a spelling: `10.0` and `1e3` are the integers 10 and
                // 1000, as the OpenAPI document promises. Only a fraction is
                // refused. (Above 2^53 a float may not be the number written,
                // but every range this API accepts ends below 2^53, so such a
                // value is refused as out of range whatever it reads as.)
                if value.abs() >= I64_LIMIT_AS_FLOAT {
                    Ok(JsonInteger::Huge { negative: value.is_sign_negative() })
                } else if value.fract() == 0.0 {
                    #[allow(clippy::cast_possible_truncation)] // integral and below 2^63: exact
                    Ok(JsonInteger::Exact(i128::from(value as i64)))
                } else {
                    Err(E::invalid_type(de::Unexpected::Float(value), &self))
                }
            }
        }

        deserializer.deserialize_any(IntegerVisitor)
    }
}

/// A whole number into `T` (a count, a rate, seconds), read like a
/// [`JsonInteger`] (`10.0` is 10); one outside `T`'s range is malformed, as
/// serde's own integers are. For `#[serde(deserialize_with = "whole")]`.
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(deserializer: D) -> Result<T, D::Error> {
    match JsonInteger::deserialize(deserializer)? {
        JsonInteger::Exact(value) => {
            T::try_from(value).map_err(|_| de::Error::custom(format!("the number {value} is out of range")))
        }
        JsonInteger::Huge { .. } => Err(de::Error::custom("the number is out of range")),
    }
}

/// [`whole`] for a field that may be absent or `null` (with `#[serde(default)]`).
pub fn whole_or_null<'de, D: Deserializer<'de>, T: TryFrom<i128>>(deserializer: D) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<i128>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<Whole<T>>::deserialize(deserializer)?.map(|Whole(value)| value))
}

/// A nested object of a body (`limits`, an order line, a showtime, a seat)
/// read only from a JSON object: serde would also take a struct from an
/// array of its fields in order (`[null, null]`), which the schema does not
/// allow. For `#[serde(deserialize_with = "object")]` on an optional field.
pub fn object_or_null<'de, D: Deserializer<'de>, T: de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?
        .map(|map| T::deserialize(serde_json::Value::Object(map)).map_err(de::Error::custom))
        .transpose()
}

/// [`object_or_null`] for a list of objects.
pub fn objects<'de, D: Deserializer<'de>, T: de::DeserializeOwned>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?
        .into_iter()
        .map(|map| T::deserialize(serde_json::Value::Object(map)).map_err(de::Error::custom))
        .collect()
}

/// [`objects`] for a list that may be absent or `null`.
pub fn objects_or_null<'de, D: Deserializer<'de>, T: de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    #[derive(Deserialize)]
    struct Objects<T: de::DeserializeOwned>(#[serde(deserialize_with = "objects")] Vec<T>);
    Ok(Option::<Objects<T>>::deserialize(deserializer)?.map(|Objects(list)| list))
}

impl JsonInteger {
    /// An amount that one movement may move (`1..=Amount::MAX`).
    pub fn amount(self) -> Result<Amount, ApiError> {
        match self {
            JsonInteger::Exact(value) => match i64::try_from(value) {
                Ok(value) => Ok(Amount::new(value)?),
                Err(_) if value < 0 => Err(AmountError::NotPositive.into()),
                Err(_) => Err(AmountError::TooLarge.into()),
            },
            JsonInteger::Huge { negative: true } => Err(AmountError::NotPositive.into()),
            JsonInteger::Huge { negative: false } => Err(AmountError::TooLarge.into()),
        }
    }

    /// A count of units (a stock, a quantity) within `range`; anything else
    /// is a value out of range (422), like an amount.
    pub fn units(self, field: &str, range: RangeInclusive<u64>) -> Result<u64, ApiError> {
        let in_range = match self {
            JsonInteger::Exact(value) => u64::try_from(value).ok().filter(|units| range.contains(units)),
            JsonInteger::Huge { .. } => None,
        };
        in_range.ok_or_else(|| {
            ApiError::new(Code::InvalidAmount, format!("{field} must be between {} and {}", range.start(), range.end()))
        })
    }

    /// A wallet limit: `0..=Money::BALANCE_LIMIT`.
    pub fn limit(self, field: &str) -> Result<Money, ApiError> {
        let in_range = match self {
            JsonInteger::Exact(value) => i64::try_from(value)
                .ok()
                .map(Money::new)
                .filter(|money| !money.is_negative() && *money <= Money::BALANCE_LIMIT),
            JsonInteger::Huge { .. } => None,
        };
        in_range.ok_or_else(|| {
            ApiError::new(Code::InvalidAmount, format!("{field} must be between 0 and {}", Money::BALANCE_LIMIT))
        })
    }
}

// ---------------------------------------------------------------- requests

/// A name or a label a client gives (a user, a product, an event, a seat),
/// checked by the core's one rule (`tally_core::catalog::label`); the
/// schema restates that rule exactly, as [`LABEL_PATTERN`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Label(pub String);

/// `tally_core::catalog::label` as a JSON Schema pattern: no control
/// character (C0, DEL, C1), and at least one character that is neither a
/// control character nor a space. Ranges only, so every regex engine reads
/// it the same.
pub const LABEL_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

impl utoipa::PartialSchema for Label {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(tally_core::catalog::LABEL_LENGTH_MAX))
            .pattern(Some(LABEL_PATTERN))
            .description(Some(
                "1 to 200 characters, no control characters, not only spaces; surrounding spaces are dropped",
            ))
            .into()
    }
}

impl ToSchema for Label {}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub name: Label,
    #[serde(default, deserialize_with = "object_or_null")]
    pub limits: Option<LimitsInput>,
}

/// Optional wallet ceilings; absent or `null` means unlimited (serde reads
/// a missing `Option` field as `None`).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsInput {
    pub max_balance: Option<LimitInput>,
    pub per_payment_limit: Option<LimitInput>,
    pub daily_limit: Option<LimitInput>,
    pub monthly_limit: Option<LimitInput>,
}

/// One wallet ceiling as a body gives it: minor units, `0..=10^15`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct LimitInput(pub JsonInteger);

impl utoipa::PartialSchema for LimitInput {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            .minimum(Some(0))
            .maximum(Some(Money::BALANCE_LIMIT.minor_units()))
            .into()
    }
}

impl ToSchema for LimitInput {}

impl LimitsInput {
    pub fn limits(&self) -> Result<Limits, ApiError> {
        let read = |value: Option<LimitInput>, field: &str| value.map(|v| v.0.limit(field)).transpose();
        Ok(Limits {
            max_balance: read(self.max_balance, "max_balance")?,
            per_payment: read(self.per_payment_limit, "per_payment_limit")?,
            daily: read(self.daily_limit, "daily_limit")?,
            monthly: read(self.monthly_limit, "monthly_limit")?,
        })
    }
}

/// `POST /v1/wallet/top-ups`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    /// Minor units, `1..=10^12`.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: JsonInteger,
}

/// `POST /v1/payments`: `{amount}` or `{order_id}` (exactly one), and
/// `method: "wallet" | "gateway"`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentRequest {
    /// Minor units, `1..=10^12`. Exactly one of `amount` and `order_id`.
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: Option<JsonInteger>,
    /// `wallet` (paid from the wallet) or `gateway` (paid through the
    /// payment gateway; refused when the server has no gateway configured).
    #[schema(example = "wallet")]
    pub method: String,
    /// Never accepted (400 `malformed_request`, whatever its value, even
    /// `null`): the payback is the merchant's policy (a product's
    /// `payback_bps`, or the service's `--payback-bps`), never the
    /// customer's choice. Read here only to refuse it with a clear detail
    /// instead of a bare "unknown field".
    #[serde(default, deserialize_with = "present", skip_serializing)]
    #[schema(ignore)]
    pub payback_amount: Option<Present>,
    /// Pay this order of the caller's: the amount is its total. It must
    /// be `pending_payment` and inside its TTL.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub order_id: Option<String>,
    /// `true`: create and confirm in one step, in one transaction (wallet
    /// payments only, like Stripe's `confirm=true`): answered 201 `done`,
    /// or refused (409) with nothing created.
    #[serde(default)]
    pub confirm: bool,
}

impl CreatePaymentRequest {
    /// A payment of `amount` minor units by `method` (`wallet`, `gateway`).
    pub fn of_amount(amount: i64, method: &str) -> CreatePaymentRequest {
        CreatePaymentRequest {
            amount: Some(JsonInteger::from(amount)),
            method: method.to_owned(),
            payback_amount: None,
            order_id: None,
            confirm: false,
        }
    }

    /// A payment of the order `order`'s total by `method`.
    pub fn of_order(order: &str, method: &str) -> CreatePaymentRequest {
        CreatePaymentRequest {
            amount: None,
            order_id: Some(order.to_owned()),
            ..CreatePaymentRequest::of_amount(0, method)
        }
    }

    /// Created and confirmed in one step (`confirm: true`).
    pub fn confirmed(self) -> CreatePaymentRequest {
        CreatePaymentRequest { confirm: true, ..self }
    }
}

impl CreateUserRequest {
    /// A user named `name`, with no limits.
    pub fn named(name: &str) -> CreateUserRequest {
        CreateUserRequest { name: Label(name.to_owned()), limits: None }
    }
}

/// A field that was in the body, whatever its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Present;

/// Deserializes any value, `null` included, as [`Present`]; with
/// `#[serde(default)]`, an absent field stays `None`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Present>, D::Error> {
    de::IgnoredAny::deserialize(deserializer)?;
    Ok(Some(Present))
}

/// The body of `cancel`: none, or `{}`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

/// The body of `confirm`: for a wallet payment none, or `{}`; for a gateway
/// payment `{payment_key}`, the key the gateway's checkout gave the client.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    #[serde(default, deserialize_with = "payment_key")]
    #[schema(example = "tgen_20261123abcdef", min_length = 1, max_length = 200)]
    pub payment_key: Option<String>,
}

/// A gateway payment key: 1 to `PAYMENT_KEY_LENGTH_MAX` characters, or
/// absent. Any other is malformed (400), before it reaches the payment.
fn payment_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let key = Option::<String>::deserialize(deserializer)?;
    match key {
        Some(key) if !is_valid_payment_key(&key) => {
            Err(de::Error::custom(format!("payment_key must be 1 to {PAYMENT_KEY_LENGTH_MAX} characters")))
        }
        key => Ok(key),
    }
}

/// `GET /v1/wallet/ledger` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Page size, 1 to 100 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page (decimal digits); absent or
    /// empty for the first page. A cursor past the end reads an empty page.
    #[param(pattern = r"^[0-9]{0,20}$")]
    pub after: Option<String>,
}

// --------------------------------------------------------------- responses

/// `201` of `POST /v1/users`. The API key is shown here once and never again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserCreated {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub api_key: String,
}

impl UserCreated {
    pub fn new(user: &User, api_key: String) -> UserCreated {
        UserCreated { id: user.id.to_string(), name: user.name.clone(), api_key }
    }
}

/// A wallet's ceilings; `null` means unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitsBody {
    pub max_balance: Option<i64>,
    pub per_payment_limit: Option<i64>,
    pub daily_limit: Option<i64>,
    pub monthly_limit: Option<i64>,
}

/// `GET /v1/wallet`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WalletBody {
    pub balance: i64,
    pub limits: LimitsBody,
    /// Confirmed payments in the current UTC day.
    pub spent_today: i64,
    /// Confirmed payments in the current UTC calendar month.
    pub spent_this_month: i64,
}

impl From<&WalletView> for WalletBody {
    fn from(view: &WalletView) -> WalletBody {
        let limits = &view.wallet.limits;
        WalletBody {
            balance: view.wallet.balance.minor_units(),
            limits: LimitsBody {
                max_balance: limits.max_balance.map(Money::minor_units),
                per_payment_limit: limits.per_payment.map(Money::minor_units),
                daily_limit: limits.daily.map(Money::minor_units),
                monthly_limit: limits.monthly.map(Money::minor_units),
            },
            spent_today: view.spent_today.minor_units(),
            spent_this_month: view.spent_this_month.minor_units(),
        }
    }
}

/// `201` of `POST /v1/wallet/top-ups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopUpBody {
    /// The ledger entry the top-up booked.
    #[schema(format = Uuid)]
    pub entry_id: String,
    pub amount: i64,
    /// The balance right after this top-up.
    pub balance: i64,
}

/// One line of a wallet's ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntryBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// `top_up`, `payment`, `refund`, `payback` or `payback_reversal`.
    pub kind: String,
    /// Signed from the wallet's point of view: credits positive, debits
    /// (payments, payback reversals) negative. Summing `amount` over the whole
    /// ledger gives the balance.
    pub amount: i64,
    pub balance_after: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(format = Uuid)]
    pub payment_id: Option<String>,
    /// RFC 3339, UTC, millisecond precision.
    #[schema(example = "2026-11-23T00:00:00.000Z")]
    pub created_at: String,
}

/// `GET /v1/wallet/ledger`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerBody {
    pub entries: Vec<LedgerEntryBody>,
    /// Pass as `after` to read the next page; absent on the last page. Opaque.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<String>,
}

impl LedgerBody {
    pub fn new(user: UserId, page: &LedgerPage) -> LedgerBody {
        LedgerBody {
            entries: page.entries.iter().map(|t| LedgerEntryBody::new(user, t)).collect(),
            next: page.next.map(|seq| seq.to_string()),
        }
    }
}

impl LedgerEntryBody {
    fn new(user: UserId, transfer: &Transfer) -> LedgerEntryBody {
        LedgerEntryBody {
            id: transfer.id.to_string(),
            kind: transfer.kind.as_str().to_owned(),
            amount: transfer.delta(Account::Wallet(user)).minor_units(),
            balance_after: transfer.wallet.map_or(0, |side| side.balance_after.minor_units()),
            payment_id: transfer.payment.map(|id| id.to_string()),
            created_at: rfc3339(transfer.at),
        }
    }
}

/// A payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// `wait`, `done`, `failed` or `cancelled`; a gateway payment also shows
    /// the states where the gateway has (or may have) been called and its
    /// answer is not recorded yet: `confirming`, `cancelling` (a refund of a
    /// done payment, whose payback reversal is already held), and
    /// `refunding` (the gateway charged another amount than ours: the
    /// payment fails, and its refund is owed and being sent; it ends
    /// `failed` once the gateway gave the money back). The service finishes
    /// these by itself; a client polls `GET /v1/payments/{id}`.
    pub status: String,
    pub amount: i64,
    /// The payback (cashback) this payment credits when it is confirmed
    /// (and reverses when it is cancelled), set by the merchant's policy:
    /// the rate of the order's products, or the service default. 0 when
    /// none.
    pub payback_amount: i64,
    /// `wallet` or `gateway`.
    pub method: String,
    /// The order this payment pays, if it pays one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(format = Uuid)]
    pub order_id: Option<String>,
}

impl From<&Payment> for PaymentBody {
    fn from(payment: &Payment) -> PaymentBody {
        PaymentBody {
            id: payment.id.to_string(),
            status: payment.status.as_str().to_owned(),
            amount: payment.amount.minor_units(),
            payback_amount: payment.payback.minor_units(),
            method: payment.method.as_str().to_owned(),
            order_id: payment.order.map(|order| order.to_string()),
        }
    }
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    #[schema(example = "ok")]
    pub status: String,
}

/// The JSON of a command's outcome. Deterministic: serde writes struct
/// fields in declaration order.
pub fn outcome_json(outcome: &Outcome) -> Vec<u8> {
    let bytes = match outcome {
        Outcome::TopUp { transfer, balance } => serde_json::to_vec(&TopUpBody {
            entry_id: transfer.id.to_string(),
            amount: transfer.amount.minor_units(),
            balance: balance.minor_units(),
        }),
        Outcome::Payment(payment) => serde_json::to_vec(&PaymentBody::from(payment)),
        Outcome::Product(product) => serde_json::to_vec(&ProductBody::from(product)),
        Outcome::Event(event) => serde_json::to_vec(&EventBody::from(event)),
        Outcome::Token(token) => serde_json::to_vec(&TokenBody::from(token)),
        Outcome::Order(order) => serde_json::to_vec(&OrderBody::from(order)),
    };
    bytes.expect("response bodies are plain strings and integers")
}

/// `2026-11-23T08:05:09.042Z`: RFC 3339 in UTC with milliseconds, always the
/// same width, so timestamps sort as strings.
pub fn rfc3339(at: Timestamp) -> String {
    const MILLIS_PER_DAY: i64 = 86_400_000;
    let millis = at.millis();
    let (year, month, day) = civil_from_days(millis.div_euclid(MILLIS_PER_DAY));
    let of_day = millis.rem_euclid(MILLIS_PER_DAY);
    let (hour, minute) = (of_day / 3_600_000, of_day / 60_000 % 60);
    let (second, milli) = (of_day / 1000 % 60, of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integer(json: &str) -> Result<JsonInteger, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integers_floats_and_overflow_are_told_apart() {
        assert_eq!(integer("10").unwrap(), JsonInteger::Exact(10));
        assert_eq!(integer("-3").unwrap(), JsonInteger::Exact(-3));
        assert_eq!(integer("9223372036854775808").unwrap(), JsonInteger::Exact(9_223_372_036_854_775_808));
        assert_eq!(integer("1e30").unwrap(), JsonInteger::Huge { negative: false });
        assert_eq!(integer("-99999999999999999999999").unwrap(), JsonInteger::Huge { negative: true });
        assert!(integer("10.5").is_err());
        assert_eq!(integer("10.0").unwrap(), JsonInteger::Exact(10), "JSON Schema's integer is a value");
        assert_eq!(integer("1e3").unwrap(), JsonInteger::Exact(1000));
        assert_eq!(integer("-2.0E1").unwrap(), JsonInteger::Exact(-20));
        assert!(integer("1e-3").is_err());
        assert!(integer("\"10\"").is_err());
        assert!(integer("true").is_err());
    }

    #[test]
    fn amounts_are_checked_against_the_core_range() {
        let code = |json: &str| integer(json).unwrap().amount().map_err(|e| e.code);
        assert_eq!(code("1").map(Amount::minor_units), Ok(1));
        assert_eq!(code("0"), Err(Code::InvalidAmount));
        assert_eq!(code("-1"), Err(Code::InvalidAmount));
        assert_eq!(code("1000000000001"), Err(Code::InvalidAmount));
        assert_eq!(code("9223372036854775808"), Err(Code::InvalidAmount));
        assert_eq!(code("1e30"), Err(Code::InvalidAmount));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        let at = Timestamp(20_780 * 86_400_000 + 8 * 3_600_000 + 5 * 60_000 + 9_042);
        assert_eq!(rfc3339(at), "2026-11-23T08:05:09.042Z");
        assert_eq!(rfc3339(Timestamp(-1)), "1969-12-31T23:59:59.999Z");
    }
}
