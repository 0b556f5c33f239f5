//! The OpenAPI 3.1 document, generated from the handlers' annotations and the
//! DTOs, served at `/openapi.json` with Swagger UI at `/docs` (its assets are
//! compiled into the binary: nothing is downloaded at build or run time).

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::problem::Problem;
// Each path's tag is the name its module is listed under in `paths(...)`
// (utoipa's default), so a module's routes share their tag without each
// naming it; two modules go by the tag's longer name here.
use crate::routes::{catalog as catalogue, ops as operations, orders, payments, queue, users, wallet};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "Payments that never double-charge.\n\n\
            Amounts are integers in minor units; ids are UUID strings; timestamps are RFC 3339 UTC.\n\n\
            **Authentication**: `Authorization: Bearer <api key>`. A missing or unknown key is 401; \
            another user's payment, order or queue token is 404. Reading products, showtimes and seats needs \
            no key.\n\n\
            **Idempotency** (IETF draft *The Idempotency-Key HTTP Header Field*): every POST that moves money \
            or inventory (top-ups, payments, orders, restocks) requires `Idempotency-Key`, 1 to 255 printable ASCII characters (bare, or quoted as an RFC 8941 \
            string), scoped to the caller, kept 24 hours. The fingerprint of a request is the SHA-256 of its \
            method, path and exact body bytes. Same key and same request after completion: the first response, \
            byte for byte, with `Idempotent-Replayed: true` (business refusals included). Same key while the \
            first request runs: 409 `idempotency_key_in_use`. Same key with a different request: 422 \
            `idempotency_key_reused`. 400/401/403/409-in-use/5xx answers are not stored.\n\n\
            **Errors** are `application/problem+json` (RFC 9457) with a stable `code`."
    ),
    paths(
        users::create_user,
        wallet::get_wallet,
        wallet::top_up,
        wallet::ledger,
        payments::create_payment,
        payments::get_payment,
        payments::confirm_payment,
        payments::cancel_payment,
        catalogue::create_product,
        catalogue::get_product,
        catalogue::restock,
        catalogue::create_event,
        catalogue::showtimes,
        catalogue::seats,
        queue::join_queue,
        queue::queue_token,
        orders::create_order,
        orders::get_order,
        orders::cancel_order,
        operations::healthz,
        operations::readyz,
        operations::metrics,
        operations::openapi_json,
        operations::docs,
    ),
    components(schemas(
        Problem,
        dto::Label,
        dto::CreateUserRequest,
        dto::LimitsInput,
        dto::LimitInput,
        dto::UserCreated,
        dto::WalletBody,
        dto::LimitsBody,
        dto::TopUpRequest,
        dto::TopUpBody,
        dto::LedgerBody,
        dto::LedgerEntryBody,
        dto::CreatePaymentRequest,
        dto::EmptyRequest,
        dto::ConfirmRequest,
        dto::PaymentBody,
        dto::CreateProductRequest,
        dto::RestockRequest,
        dto::ProductBody,
        dto::CreateEventRequest,
        dto::NewShowtimeInput,
        dto::NewSeatInput,
        dto::EventBody,
        dto::ShowtimeCreatedBody,
        dto::SeatBody,
        dto::ShowtimeBody,
        dto::ShowtimesBody,
        dto::SeatsBody,
        dto::TokenBody,
        dto::CreateOrderRequest,
        dto::OrderItemInput,
        dto::OrderBody,
        dto::OrderItemBody,
        dto::OrderSeatBody,
        dto::StatusBody,
    )),
    modifiers(&BearerKeys),
    tags(
        (name = "users", description = "Admin: users and their keys"),
        (name = "wallet", description = "The caller's wallet and ledger"),
        (name = "payments", description = "The caller's payments"),
        (name = "catalogue", description = "Products with stock; events with showtimes and seats (admin writes, anyone reads)"),
        (name = "queue", description = "An event's waiting queue: a token, then seats"),
        (name = "orders", description = "The caller's orders: products and seats reserved together"),
        (name = "operations", description = "Health, readiness, metrics, documentation"),
    )
)]
pub struct ApiDoc;

/// Declares the two bearer schemes the paths refer to.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            ("user_key", "A user's API key (`tly_…`), issued by POST /v1/users"),
            ("admin_key", "The admin key (TALLY_ADMIN_KEY)"),
        ] {
            let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// The document `/openapi.json` serves: [`ApiDoc`] with what the derive
/// cannot say added to it — the rules across fields of one body, the bounds
/// of arrays and the formats of strings, each restated from the one place
/// that enforces it (mostly the core's constants), and the links from each
/// create operation to the operations that read or act on what it created,
/// so that a client generator (or schemathesis's stateful phase) can follow
/// them. `scripts/contract.sh` checks that the server accepts exactly what
/// this document allows. It is JSON, not utoipa's types: those have no
/// place for `oneOf` or `not` beside an object's properties.
pub fn document() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
    constrain(&mut document["components"]["schemas"]);
    link(&mut document["paths"]);
    document
}

/// Adds each constraint to its schema (keys merged into the schema object).
fn constrain(schemas: &mut Value) {
    use tally_core::catalog::{SEATS_PER_SHOWTIME_MAX, SHOWTIMES_MAX};
    use tally_core::order::{ORDER_ITEMS_MAX, ORDER_SEATS_MAX};
    let constraints = [
        // Exactly one of `amount` and `order_id` (a `null` is no value), and
        // `confirm: true` only for wallet payments.
        (
            "CreatePaymentRequest",
            json!({
                "oneOf": [
                    {"properties": {"amount": {"type": "integer"}, "order_id": {"type": "null"}}, "required": ["amount"]},
                    {"properties": {"order_id": {"type": "string"}, "amount": {"type": "null"}}, "required": ["order_id"]},
                ],
                "not": {"properties": {"confirm": {"const": true}, "method": {"const": "gateway"}}, "required": ["confirm", "method"]},
            }),
        ),
        ("CreatePaymentRequest/method", json!({"enum": ["wallet", "gateway"]})),
        // At least one product line or seat; bounded lists without repeats.
        (
            "CreateOrderRequest",
            json!({"anyOf": [
                {"properties": {"items": {"type": "array", "minItems": 1}}, "required": ["items"]},
                {"properties": {"seats": {"type": "array", "minItems": 1}}, "required": ["seats"]},
            ]}),
        ),
        ("CreateOrderRequest/items", json!({"maxItems": ORDER_ITEMS_MAX, "uniqueItems": true})),
        (
            "CreateOrderRequest/seats",
            json!({"maxItems": ORDER_SEATS_MAX, "uniqueItems": true, "items": {"type": "string", "format": "uuid"}}),
        ),
        ("CreateEventRequest/showtimes", json!({"minItems": 1, "maxItems": SHOWTIMES_MAX})),
        ("NewShowtimeInput/seats", json!({"minItems": 1, "maxItems": SEATS_PER_SHOWTIME_MAX, "uniqueItems": true})),
        ("NewShowtimeInput/starts_at", json!({"format": "date-time"})),
    ];
    for (target, constraint) in constraints {
        let (schema, property) = target.split_once('/').map_or((target, None), |(s, p)| (s, Some(p)));
        let mut object = &mut schemas[schema];
        assert!(object.is_object(), "no schema {schema}");
        if let Some(property) = property {
            object = &mut object["properties"][property];
            assert!(object.is_object(), "no property {target}");
        }
        let object = object.as_object_mut().expect("checked above");
        for (key, value) in constraint.as_object().expect("constraints are objects") {
            object.insert(key.clone(), value.clone());
        }
    }
}

/// Adds the links of each create operation's success answer.
fn link(paths: &mut Value) {
    let id = json!({"id": "$response.body#/id"});
    let links = [
        ("/v1/payments", "post", "201", "get_payment", id.clone()),
        ("/v1/payments", "post", "201", "confirm_payment", id.clone()),
        ("/v1/payments", "post", "201", "cancel_payment", id.clone()),
        ("/v1/orders", "post", "201", "get_order", id.clone()),
        ("/v1/orders", "post", "201", "cancel_order", id.clone()),
        ("/v1/products", "post", "201", "get_product", id.clone()),
        ("/v1/products", "post", "201", "restock", id.clone()),
        ("/v1/events", "post", "201", "showtimes", id.clone()),
        ("/v1/events", "post", "201", "join_queue", id),
        ("/v1/events", "post", "201", "seats", json!({"id": "$response.body#/showtimes/0/id"})),
        ("/v1/events/{id}/queue", "post", "201", "queue_token", json!({"token": "$response.body#/token"})),
    ];
    for (path, method, status, operation, parameters) in links {
        let response = &mut paths[path][method]["responses"][status];
        assert!(response.is_object(), "no {status} answer of {method} {path}");
        response["links"][operation] = json!({"operationId": operation, "parameters": parameters});
    }
}
