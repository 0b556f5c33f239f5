//! Request extractors that fail only with [`ApiError`]s, so none of axum's
//! own plain-text rejections can reach a client.
//!
//! - [`JsonBody`]: content type, size limit, JSON shape (`deny_unknown_fields`).
//! - [`KeyedJson`]: the same, plus the `Idempotency-Key` header and the
//!   request fingerprint, for the routes that move money.
//! - [`PaymentPath`], [`OrderPath`], …: an id from the path; a malformed id
//!   is simply "not found", like an unknown one.
//! - [`QueueTokenHeader`]: the `Queue-Token` header of an order with seats.
//!
//! Each header and path extractor also documents itself for the OpenAPI
//! document ([`IntoParams`]), so a route's `params(...)` names the
//! extractors it takes instead of spelling their parameters out again.
//!
//! Checks run in the order a client can act on them: the key header first
//! (400), then the body's size (413), media type (415) and shape (400).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tally_core::idempotency::{Fingerprint, IdemKey};
use tally_core::ids::{EventId, OrderId, PaymentId, ProductId, ShowtimeId, TokenId};
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{RefOr, Required, Schema};

use crate::dto::{
    ConfirmRequest, CreateEventRequest, CreateOrderRequest, CreatePaymentRequest, CreateProductRequest,
    CreateUserRequest, EmptyRequest, RestockRequest, TopUpRequest,
};
use crate::problem::{ApiError, Code};
use crate::state::{AppState, Backend};

/// The header that makes a POST safe to retry.
pub use tally_api::headers::IDEMPOTENCY_KEY;

/// A request body type, and whether it may be sent empty.
pub trait RequestBody: DeserializeOwned {
    /// `confirm` and `cancel` need no body: an empty one (with any or no
    /// content type) reads as `{}`.
    const EMPTY_ALLOWED: bool = false;
}

impl RequestBody for CreateUserRequest {}
impl RequestBody for TopUpRequest {}
impl RequestBody for CreatePaymentRequest {}
impl RequestBody for CreateProductRequest {}
impl RequestBody for RestockRequest {}
impl RequestBody for CreateEventRequest {}
impl RequestBody for CreateOrderRequest {}
impl RequestBody for ConfirmRequest {
    const EMPTY_ALLOWED: bool = true;
}
impl RequestBody for EmptyRequest {
    const EMPTY_ALLOWED: bool = true;
}

/// A parsed JSON body and its raw bytes.
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: RequestBody, B: Backend> FromRequest<AppState<B>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState<B>) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        read_json(&parts.headers, body, state.shared.body_limit_bytes).await
    }
}

async fn read_json<T: RequestBody>(headers: &HeaderMap, body: Body, limit: usize) -> Result<JsonBody<T>, ApiError> {
    let raw = read_limited(body, limit).await?;
    if raw.is_empty() && T::EMPTY_ALLOWED {
        let value = serde_json::from_slice(b"{}").expect("an empty-body type reads {}");
        return Ok(JsonBody { value, raw });
    }
    if !is_json(headers) {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "the request body must be sent as Content-Type: application/json",
        ));
    }
    let malformed = |error: serde_json::Error| ApiError::malformed(error.to_string());
    // Every body is a JSON object (or, where a body is optional, `null`):
    // serde would also read a struct from an array of its fields in order.
    match raw.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'n') if T::EMPTY_ALLOWED => {}
        _ => return Err(ApiError::malformed("the request body must be a JSON object")),
    }
    if T::EMPTY_ALLOWED {
        // The schema marks an optional body nullable: JSON `null` is "no
        // body" too.
        let value = match serde_json::from_slice::<Option<T>>(&raw).map_err(malformed)? {
            Some(value) => value,
            None => serde_json::from_slice(b"{}").expect("an empty-body type reads {}"),
        };
        return Ok(JsonBody { value, raw });
    }
    let value = serde_json::from_slice(&raw).map_err(malformed)?;
    Ok(JsonBody { value, raw })
}

/// Reads the whole body, refusing (413) as soon as it passes `limit`, so a
/// huge body costs at most `limit` bytes of memory.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            // The limit may have been hit here or in the body-limit layer,
            // whose error arrives wrapped: look through the whole chain.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
            while let Some(current) = source {
                if current.is::<LengthLimitError>() {
                    return Err(ApiError::new(
                        Code::PayloadTooLarge,
                        format!("the request body exceeds {limit} bytes"),
                    ));
                }
                source = current.source();
            }
            Err(ApiError::malformed("the request body could not be read"))
        }
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

/// A keyed request: its idempotency key, its fingerprint, and its body.
#[derive(Debug)]
pub struct KeyedJson<T> {
    pub key: IdemKey,
    pub fingerprint: Fingerprint,
    pub value: T,
}

impl<T: RequestBody, B: Backend> FromRequest<AppState<B>> for KeyedJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState<B>) -> Result<Self, ApiError> {
        // The key is checked first (400), then the body as for `JsonBody`.
        let key = idempotency_key(request.headers())?;
        let method = request.method().clone();
        let path = match request.extensions().get::<OriginalUri>() {
            Some(OriginalUri(uri)) => uri.path().to_owned(),
            None => request.uri().path().to_owned(),
        };
        let body = JsonBody::<T>::from_request(request, state).await?;
        Ok(KeyedJson { key, fingerprint: fingerprint(method.as_str(), &path, &body.raw), value: body.value })
    }
}

/// The `Idempotency-Key` header, for the OpenAPI document: [`KeyedJson`]
/// reads it, but a body extractor cannot list a header among a route's
/// parameters.
pub struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let description = "Required: 1 to 255 printable ASCII characters, scoped to the caller, kept 24 h (see the API \
                           description); bare, or quoted as an RFC 8941 string";
        let mut parameter = string_parameter(IDEMPOTENCY_KEY_NAME, ParameterIn::Header, true, None, description);
        if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
            schema.pattern = Some(IDEMPOTENCY_KEY_PATTERN.to_owned());
        }
        vec![parameter]
    }
}

/// The header's name as the OpenAPI document spells it.
const IDEMPOTENCY_KEY_NAME: &str = "Idempotency-Key";

/// Exactly the header values [`idempotency_key`] accepts, for clients and
/// generators: a bare key (not both starting and ending with `"`, not
/// starting with a space), or an RFC 8941 string (`"…"`, with `\"` and `\\`
/// escapes) of 1 to 255 characters once unquoted. Trailing spaces and tabs
/// are allowed: HTTP strips them before the server sees the value.
pub const IDEMPOTENCY_KEY_PATTERN: &str = concat!(
    r#"^([\x21\x23-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?"#,
    r#"|"([\x20-\x7e]{0,253}[\x21\x23-\x7e])?"#,
    r#"|"([\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]){1,255}")[\t ]*$"#,
);

/// One string parameter of a route (a header or a path segment).
fn string_parameter(
    name: &str,
    location: ParameterIn,
    required: bool,
    format: Option<KnownFormat>,
    description: &str,
) -> Parameter {
    // A header or a path segment is never JSON `null`: an optional one is
    // absent, which `required` says.
    let schema =
        ObjectBuilder::new().schema_type(SchemaType::new(Type::String)).format(format.map(SchemaFormat::KnownFormat));
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .description(Some(description))
        .required(if required { Required::True } else { Required::False })
        .schema(Some(schema))
        .build()
}

/// The `Idempotency-Key` header. The IETF draft makes it a structured-field
/// string, sent quoted (`"abc"`); Stripe-style clients send it bare (`abc`).
/// Both name the same key.
pub fn idempotency_key(headers: &HeaderMap) -> Result<IdemKey, ApiError> {
    let invalid = || {
        ApiError::new(
            Code::IdempotencyKeyInvalid,
            "the Idempotency-Key header must be one value of 1 to 255 printable ASCII characters",
        )
    };
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::new(
            Code::IdempotencyKeyMissing,
            "this request moves money and requires an Idempotency-Key header",
        ));
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let text = std::str::from_utf8(value.as_bytes()).map_err(|_| invalid())?;
    let text = unquote(text).ok_or_else(invalid)?;
    IdemKey::new(&text).map_err(|_| invalid())
}

/// The content of an RFC 8941 string (`"…"` with `\"` and `\\` escapes), or
/// the text itself when it is not quoted. `None` for a broken quoted string.
fn unquote(text: &str) -> Option<String> {
    let Some(inner) = text.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) else {
        return Some(text.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// SHA-256 over the method, the path and the raw body bytes. Byte-exact on
/// purpose: the same retry sends the same bytes, and any difference at all
/// means a different request (422 on key reuse), never a silent replay of
/// something the client did not send.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> Fingerprint {
    let mut hasher = Sha256::new();
    // NUL separators: neither a method nor a path contains one, so no two
    // different requests hash the same bytes.
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    Fingerprint(hasher.finalize().into())
}

/// The `{id}` of a route as a typed id. Not a UUID → 404, as for any
/// unknown object: a path names something, and this names nothing. Each
/// is declared with the name of its path segment and its description in
/// the OpenAPI document.
macro_rules! path_ids {
    ($($(#[$doc:meta])* $name:ident($id:ty) as $param:literal: $description:literal;)+) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name(pub $id);

        impl<St: Send + Sync> FromRequestParts<St> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, ApiError> {
                let Path(id) =
                    Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found())?;
                <$id>::parse(&id).map($name).ok_or_else(ApiError::not_found)
            }
        }

        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                vec![string_parameter($param, ParameterIn::Path, true, Some(KnownFormat::Uuid), $description)]
            }
        }
    )+};
}

path_ids! {
    /// `{id}` of a payment route.
    PaymentPath(PaymentId) as "id": "The payment";
    /// `{id}` of a product route.
    ProductPath(ProductId) as "id": "The product";
    /// `{id}` of an event route.
    EventPath(EventId) as "id": "The event";
    /// `{id}` of a showtime route.
    ShowtimePath(ShowtimeId) as "id": "The showtime";
    /// `{id}` of an order route.
    OrderPath(OrderId) as "id": "The order";
    /// `{token}` of a queue route.
    TokenPath(TokenId) as "token": "The token";
}

/// The header that carries an active queue token when an order books seats.
pub use tally_api::headers::QUEUE_TOKEN;

/// The `Queue-Token` header: absent is `None` (the core refuses seats
/// without one, 403); present but not one UUID is 400, since the client sent
/// something that cannot be a token at all.
#[derive(Clone, Copy, Debug)]
pub struct QueueTokenHeader(pub Option<TokenId>);

impl<St: Send + Sync> FromRequestParts<St> for QueueTokenHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(QUEUE_TOKEN).iter();
        let Some(value) = values.next() else { return Ok(QueueTokenHeader(None)) };
        let token =
            value.to_str().ok().filter(|_| values.next().is_none()).and_then(|text| TokenId::parse(text.trim()));
        token
            .map(|token| QueueTokenHeader(Some(token)))
            .ok_or_else(|| ApiError::malformed("the Queue-Token header must be one token (a UUID)"))
    }
}

impl IntoParams for QueueTokenHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let description = "Required for seats: the caller's active token for their event (`POST /v1/events/{id}/queue`). \
                           Not part of the request fingerprint";
        vec![string_parameter("Queue-Token", ParameterIn::Header, false, Some(KnownFormat::Uuid), description)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key(values: &[&[u8]]) -> Result<String, Code> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).unwrap());
        }
        idempotency_key(&headers).map(|k| k.as_str().to_owned()).map_err(|e| e.code)
    }

    #[test]
    fn keys_bare_and_quoted() {
        assert_eq!(key(&[]), Err(Code::IdempotencyKeyMissing));
        assert_eq!(key(&[b"abc"]).as_deref(), Ok("abc"));
        assert_eq!(key(&[b"\"abc\""]).as_deref(), Ok("abc"));
        assert_eq!(key(&[br#""a\"b\\c""#]).as_deref(), Ok(r#"a"b\c"#));
        assert_eq!(key(&[b"\"\""]), Err(Code::IdempotencyKeyInvalid));
        assert_eq!(key(&[br#""a"b""#]), Err(Code::IdempotencyKeyInvalid));
        assert_eq!(key(&[b"a", b"b"]), Err(Code::IdempotencyKeyInvalid));
        assert_eq!(key(&[&[b'k'; 256]]), Err(Code::IdempotencyKeyInvalid));
        assert_eq!(key(&["é".as_bytes()]), Err(Code::IdempotencyKeyInvalid));
        assert_eq!(key(&[b"tab\there"]), Err(Code::IdempotencyKeyInvalid));
    }

    #[test]
    fn fingerprints_separate_method_path_and_body() {
        let base = fingerprint("POST", "/v1/wallet/top-ups", b"{\"amount\":1}");
        assert_eq!(base, fingerprint("POST", "/v1/wallet/top-ups", b"{\"amount\":1}"));
        assert_ne!(base, fingerprint("POST", "/v1/wallet/top-ups", b"{\"amount\": 1}"));
        assert_ne!(base, fingerprint("POST", "/v1/payments", b"{\"amount\":1}"));
        assert_ne!(base, fingerprint("PUT", "/v1/wallet/top-ups", b"{\"amount\":1}"));
    }
}
