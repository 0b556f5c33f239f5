//! One method per operation of the API (SPEC.md "HTTP API (v1)"), named
//! after it: its path, method, headers and body types in one place. Keyed
//! operations take the `Idempotency-Key` as their first argument; a caller
//! that retries by hand must pass the same one.

use http::Method;
use tally_api::dto::{
    ConfirmRequest, CreateEventRequest, CreateOrderRequest, CreatePaymentRequest, CreateProductRequest,
    CreateUserRequest, EmptyRequest, EventBody, JsonInteger, LedgerBody, OrderBody, PaymentBody, ProductBody,
    RestockRequest, SeatsBody, ShowtimesBody, StatusBody, TokenBody, TopUpBody, TopUpRequest, UserCreated, WalletBody,
};
use tally_api::headers;

use crate::{Client, Error, Reply, Transport};

/// Where a ledger page starts: the first page, or a `next` cursor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LedgerCursor<'a> {
    #[default]
    First,
    After(&'a str),
}

impl<T: Transport> Client<T> {
    /// `POST /v1/users` (admin).
    pub async fn create_user(&self, request: &CreateUserRequest) -> Result<Reply<UserCreated>, Error> {
        self.call(self.request(Method::POST, "/v1/users").json(request)).await
    }

    /// `GET /v1/wallet`.
    pub async fn wallet(&self) -> Result<Reply<WalletBody>, Error> {
        self.call(self.request(Method::GET, "/v1/wallet")).await
    }

    /// `POST /v1/wallet/top-ups` of `amount` minor units.
    pub async fn top_up(&self, key: &str, amount: i64) -> Result<Reply<TopUpBody>, Error> {
        let body = TopUpRequest { amount: JsonInteger::from(amount) };
        self.call(self.request(Method::POST, "/v1/wallet/top-ups").idempotency_key(key).json(&body)).await
    }

    /// `GET /v1/wallet/ledger`: one page of at most `limit` entries.
    pub async fn ledger(&self, limit: u32, cursor: LedgerCursor<'_>) -> Result<Reply<LedgerBody>, Error> {
        let path = match cursor {
            LedgerCursor::First => format!("/v1/wallet/ledger?limit={limit}"),
            LedgerCursor::After(after) => format!("/v1/wallet/ledger?limit={limit}&after={after}"),
        };
        self.call(self.request(Method::GET, &path)).await
    }

    /// `POST /v1/payments`.
    pub async fn create_payment(&self, key: &str, request: &CreatePaymentRequest) -> Result<Reply<PaymentBody>, Error> {
        self.call(self.request(Method::POST, "/v1/payments").idempotency_key(key).json(request)).await
    }

    /// `POST /v1/payments/{id}/confirm`; `payment_key` for a gateway payment.
    pub async fn confirm_payment(
        &self,
        key: &str,
        payment: &str,
        payment_key: Option<&str>,
    ) -> Result<Reply<PaymentBody>, Error> {
        let body = ConfirmRequest { payment_key: payment_key.map(str::to_owned) };
        let path = format!("/v1/payments/{payment}/confirm");
        self.call(self.request(Method::POST, &path).idempotency_key(key).json(&body)).await
    }

    /// `POST /v1/payments/{id}/cancel`.
    pub async fn cancel_payment(&self, key: &str, payment: &str) -> Result<Reply<PaymentBody>, Error> {
        let path = format!("/v1/payments/{payment}/cancel");
        self.call(self.request(Method::POST, &path).idempotency_key(key).json(&EmptyRequest {})).await
    }

    /// `GET /v1/payments/{id}`.
    pub async fn payment(&self, payment: &str) -> Result<Reply<PaymentBody>, Error> {
        self.call(self.request(Method::GET, &format!("/v1/payments/{payment}"))).await
    }

    /// `POST /v1/products` (admin).
    pub async fn create_product(&self, request: &CreateProductRequest) -> Result<Reply<ProductBody>, Error> {
        self.call(self.request(Method::POST, "/v1/products").json(request)).await
    }

    /// `POST /v1/products/{id}/restock` (admin).
    pub async fn restock(&self, key: &str, product: &str, quantity: u64) -> Result<Reply<ProductBody>, Error> {
        let body = RestockRequest { quantity: JsonInteger::from(quantity) };
        let path = format!("/v1/products/{product}/restock");
        self.call(self.request(Method::POST, &path).idempotency_key(key).json(&body)).await
    }

    /// `GET /v1/products/{id}`.
    pub async fn product(&self, product: &str) -> Result<Reply<ProductBody>, Error> {
        self.call(self.request(Method::GET, &format!("/v1/products/{product}"))).await
    }

    /// `POST /v1/events` (admin).
    pub async fn create_event(&self, request: &CreateEventRequest) -> Result<Reply<EventBody>, Error> {
        self.call(self.request(Method::POST, "/v1/events").json(request)).await
    }

    /// `GET /v1/events/{id}/showtimes`.
    pub async fn showtimes(&self, event: &str) -> Result<Reply<ShowtimesBody>, Error> {
        self.call(self.request(Method::GET, &format!("/v1/events/{event}/showtimes"))).await
    }

    /// `GET /v1/showtimes/{id}/seats`.
    pub async fn seats(&self, showtime: &str) -> Result<Reply<SeatsBody>, Error> {
        self.call(self.request(Method::GET, &format!("/v1/showtimes/{showtime}/seats"))).await
    }

    /// `POST /v1/events/{id}/queue`: joins (or answers the live token).
    pub async fn join_queue(&self, event: &str) -> Result<Reply<TokenBody>, Error> {
        self.call(self.request(Method::POST, &format!("/v1/events/{event}/queue"))).await
    }

    /// `GET /v1/queue/{token}`.
    pub async fn queue_token(&self, token: &str) -> Result<Reply<TokenBody>, Error> {
        self.call(self.request(Method::GET, &format!("/v1/queue/{token}"))).await
    }

    /// `POST /v1/orders`; seats need `token`, an active queue token.
    pub async fn create_order(
        &self,
        key: &str,
        request: &CreateOrderRequest,
        token: Option<&str>,
    ) -> Result<Reply<OrderBody>, Error> {
        let mut call = self.request(Method::POST, "/v1/orders").idempotency_key(key).json(request);
        if let Some(token) = token {
            call = call.header(headers::QUEUE_TOKEN, token);
        }
        self.call(call).await
    }

    /// `GET /v1/orders/{id}`.
    pub async fn order(&self, order: &str) -> Result<Reply<OrderBody>, Error> {
        self.call(self.request(Method::GET, &format!("/v1/orders/{order}"))).await
    }

    /// `POST /v1/orders/{id}/cancel`.
    pub async fn cancel_order(&self, key: &str, order: &str) -> Result<Reply<OrderBody>, Error> {
        let path = format!("/v1/orders/{order}/cancel");
        self.call(self.request(Method::POST, &path).idempotency_key(key).json(&EmptyRequest {})).await
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Reply<StatusBody>, Error> {
        self.call(self.request(Method::GET, "/healthz")).await
    }

    /// `GET /readyz`.
    pub async fn ready(&self) -> Result<Reply<StatusBody>, Error> {
        self.call(self.request(Method::GET, "/readyz")).await
    }
}
