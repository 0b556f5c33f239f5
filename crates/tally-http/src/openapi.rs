//! The OpenAPI 3.1 document, generated from the handlers' annotations and the
//! DTOs, served at `/openapi.json` with Swagger UI at `/docs` (its assets are
//! compiled into the binary: nothing is downloaded at build or run time).

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
        dto::CreateUserRequest,
        dto::LimitsInput,
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
