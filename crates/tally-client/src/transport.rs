//! How a request reaches the server: the [`Transport`] trait and its
//! implementations.
//!
//! A transport sends one `http::Request<Vec<u8>>` whose URI is a path
//! (`/v1/wallet`) and answers the whole reply, or a [`TransportError`] when
//! there is none. It does not retry, decode or authenticate: the
//! [`Client`](crate::Client) does that, once, whatever the transport is.
//!
//! - [`ReqwestTransport`] (feature `reqwest`): a real connection to a base
//!   URL — the load tool, the end-to-end tests, the chaos harness.
//! - [`ServiceTransport`] (feature `tower`): an in-process tower service,
//!   such as tally-http's router, called with `oneshot` — the API tests.
//! - The simulation implements the trait over turmoil's TCP in its own
//!   crate (`tally-sim`'s `net`), since only it depends on turmoil.

use std::future::Future;

/// A reply as it came: status, headers and the whole body.
pub type RawResponse = http::Response<Vec<u8>>;

/// A request as it goes: method, path (and query), headers and body bytes.
pub type RawRequest = http::Request<Vec<u8>>;

/// Why there is no reply. Either way the request may or may not have been
/// applied: only a retry with the same `Idempotency-Key` can tell.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out")]
    TimedOut,
    /// Refused, reset, or closed before a whole reply arrived.
    #[error("{0}")]
    Broken(String),
}

/// Sends one request and reads its whole reply.
pub trait Transport: Send + Sync {
    fn send(&self, request: RawRequest) -> impl Future<Output = Result<RawResponse, TransportError>> + Send;
}

impl<T: Transport> Transport for std::sync::Arc<T> {
    fn send(&self, request: RawRequest) -> impl Future<Output = Result<RawResponse, TransportError>> + Send {
        (**self).send(request)
    }
}

#[cfg(feature = "reqwest")]
pub use self::reqwest_transport::ReqwestTransport;

#[cfg(feature = "reqwest")]
mod reqwest_transport {
    use super::{RawRequest, RawResponse, Transport, TransportError};

    /// A real HTTP connection (pooled by reqwest) to `base`, e.g.
    /// `http://127.0.0.1:8080`. The reqwest client's own timeout bounds each
    /// attempt; the [`Client`](crate::Client)'s bounds it again.
    #[derive(Clone, Debug)]
    pub struct ReqwestTransport {
        http: reqwest::Client,
        base: String,
    }

    impl ReqwestTransport {
        pub fn new(http: reqwest::Client, base: &str) -> ReqwestTransport {
            ReqwestTransport { http, base: base.trim_end_matches('/').to_owned() }
        }

        /// The base URL requests go to.
        pub fn base(&self) -> &str {
            &self.base
        }
    }

    fn broken(error: &reqwest::Error) -> TransportError {
        if error.is_timeout() { TransportError::TimedOut } else { TransportError::Broken(error.to_string()) }
    }

    impl Transport for ReqwestTransport {
        async fn send(&self, request: RawRequest) -> Result<RawResponse, TransportError> {
            let (parts, body) = request.into_parts();
            let url = format!("{}{}", self.base, parts.uri);
            let response = self
                .http
                .request(parts.method, url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| broken(&e))?;
            let mut reply = http::Response::builder().status(response.status());
            if let Some(headers) = reply.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await.map_err(|e| broken(&e))?;
            reply.body(body.to_vec()).map_err(|e| TransportError::Broken(e.to_string()))
        }
    }
}

#[cfg(feature = "tower")]
pub use self::service_transport::ServiceTransport;

#[cfg(feature = "tower")]
mod service_transport {
    use std::future::Future;
    use std::marker::PhantomData;

    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    use super::{RawRequest, RawResponse, Transport, TransportError};

    /// An in-process tower service (tally-http's `Router`, whose request
    /// body is `B`), each request sent with `oneshot` on a clone of it: no
    /// socket, the same bytes.
    #[derive(Debug)]
    pub struct ServiceTransport<S, B> {
        service: S,
        body: PhantomData<fn() -> B>,
    }

    impl<S: Clone, B> Clone for ServiceTransport<S, B> {
        fn clone(&self) -> Self {
            ServiceTransport { service: self.service.clone(), body: PhantomData }
        }
    }

    impl<S, B> ServiceTransport<S, B> {
        pub fn new(service: S) -> ServiceTransport<S, B> {
            ServiceTransport { service, body: PhantomData }
        }
    }

    /// A service's reply, read whole.
    pub trait ReadWhole: Send {
        fn read_whole(self) -> impl Future<Output = Result<RawResponse, TransportError>> + Send;
    }

    impl<RB> ReadWhole for http::Response<RB>
    where
        RB: http_body::Body + Send,
        RB::Data: Send,
        RB::Error: std::fmt::Display,
    {
        async fn read_whole(self) -> Result<RawResponse, TransportError> {
            let (parts, body) = self.into_parts();
            let body = body.collect().await.map_err(|e| TransportError::Broken(e.to_string()))?.to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        }
    }

    impl<S, B> Transport for ServiceTransport<S, B>
    where
        S: Service<http::Request<B>> + Clone + Send + Sync,
        S::Response: ReadWhole,
        S::Future: Send,
        S::Error: std::fmt::Display,
        B: From<Vec<u8>> + Send,
    {
        async fn send(&self, request: RawRequest) -> Result<RawResponse, TransportError> {
            let service = self.service.clone();
            let response =
                service.oneshot(request.map(B::from)).await.map_err(|e| TransportError::Broken(e.to_string()))?;
            response.read_whole().await
        }
    }
}
