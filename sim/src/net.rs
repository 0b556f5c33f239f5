//! HTTP over turmoil's simulated TCP: the listener axum serves on, and the
//! one-request-per-connection client the simulated clients (as
//! `tally-client`'s [`Transport`], [`SimTransport`]) and the servers'
//! gateway client use.
//!
//! reqwest cannot run on turmoil's sockets, so requests go through hyper's
//! HTTP/1 connection API directly. Each exchange opens a fresh connection,
//! bounded as a whole by one timeout (connect, send, whole reply), and closes
//! it when it ends or is given up — so a server sees a client that timed out
//! hang up, exactly as it would in production.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tally_client::headers::IDEMPOTENT_REPLAYED;
use tally_client::{RawRequest, RawResponse, Transport, TransportError};

/// The port every simulated service listens on.
pub const PORT: u16 = 80;

/// turmoil's listener as an axum [`Listener`](axum::serve::Listener).
pub struct SimListener(pub turmoil::net::TcpListener);

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SimListener").field(&self.0.local_addr().ok()).finish()
    }
}

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // turmoil reports no transient accept errors today; if one
                // appears, waiting a tick beats spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A complete HTTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub replayed: bool,
}

/// Why there is no reply: the client crate's transport error, so the
/// simulation and the chaos harness (over reqwest) fail alike.
pub type Failure = TransportError;

impl Reply {
    /// What the workload reads of a transport's whole reply.
    pub fn of(response: RawResponse) -> Reply {
        let replayed = response.headers().get(IDEMPOTENT_REPLAYED).is_some_and(|v| v.as_bytes() == b"true");
        Reply { status: response.status().as_u16(), body: response.into_body(), replayed }
    }
}

/// Tally's API on simulated host `host`, for `tally-client`: each request
/// on a new connection, bounded by `timeout`, as [`exchange`].
#[derive(Clone, Debug)]
pub struct SimTransport {
    pub host: String,
    pub timeout: Duration,
}

impl Transport for SimTransport {
    async fn send(&self, request: RawRequest) -> Result<RawResponse, TransportError> {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(header::HOST, header::HeaderValue::from_str(&self.host).expect("host names are ASCII"));
        let request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        match tokio::time::timeout(self.timeout, exchange_raw(&self.host, request)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::TimedOut),
        }
    }
}

/// Aborts the connection task when the exchange ends or is dropped, which
/// drops the socket (a FIN, or a RST with unread data) right away.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `request` to `host` on a new connection and reads the whole reply,
/// all within `timeout`.
pub async fn exchange(host: &str, request: Request<Full<Bytes>>, timeout: Duration) -> Result<Reply, Failure> {
    match tokio::time::timeout(timeout, exchange_inner(host, request)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::TimedOut),
    }
}

async fn exchange_inner(host: &str, request: Request<Full<Bytes>>) -> Result<Reply, Failure> {
    exchange_raw(host, request).await.map(Reply::of)
}

async fn exchange_raw(host: &str, request: Request<Full<Bytes>>) -> Result<RawResponse, Failure> {
    let broken = |what: &str, e: &dyn std::fmt::Display| Failure::Broken(format!("{what}: {e}"));
    let stream = turmoil::net::TcpStream::connect((host, PORT)).await.map_err(|e| broken("connect", &e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| broken("handshake", &e))?;
    let _driver = Driver(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await.map_err(|e| broken("request", &e))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| broken("body", &e))?.to_bytes().to_vec();
    Ok(RawResponse::from_parts(parts, body))
}

/// A request with a JSON body (or none) and the given headers.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, host);
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("simulated requests are well-formed")
}
