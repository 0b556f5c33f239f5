//! The fake gateway's HTTP side: routes, the accept loop, and per-connection
//! serving with a kill switch.
//!
//! Why not `axum::serve`: two faults need control that it does not give.
//! `lose_reply_after_commit` must close a connection after the request took
//! effect and before any byte of the reply, and `refuse_connections` must
//! close and later re-open the listening socket. So the accept loop is ours,
//! each connection runs on hyper's HTTP/1 server inside a `select!` with a
//! kill signal the handler can fire, and dropping that future is what closes
//! the socket with no reply. Each connection serves exactly one request
//! (keep-alive off), which makes "the next N connections" mean "the next N
//! calls" and keeps a pooled connection from slipping past a refusal.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener;
use axum::{Extension, Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::faults::{AfterCommit, Endpoint, FaultConfig};
use super::{FakeGateway, Reply, error};
use crate::protocol::{CancelBody, ConfirmBody, IDEMPOTENCY_KEY_HEADER, codes};

/// The fake's routes, with no accept loop. Served this way (say by
/// `axum::serve`), `lose_reply_after_commit` cannot reach the connection;
/// the handler then holds the reply for five minutes, past any sane client
/// timeout, and answers 504. [`serve`] and [`serve_on`] close the connection
/// for real.
pub fn router(gateway: FakeGateway) -> Router {
    Router::new()
        .route("/v1/payments/confirm", post(confirm))
        .route("/v1/payments/{payment_key}", get(lookup))
        .route("/v1/payments/{payment_key}/cancel", post(cancel))
        .route("/__stats", get(stats))
        .route("/__faults", get(get_faults).post(set_faults).delete(clear_faults))
        .route("/__register", post(register))
        .route("/__decline", post(decline))
        .with_state(gateway)
}

/// Serve the fake on a TCP listener until `shutdown` resolves. A refusal
/// ([`FaultPlan::refuse_connections`](super::FaultPlan::refuse_connections))
/// closes the listening socket and binds the same address again when it
/// ends; binding fails only if something else took the port meanwhile. On
/// shutdown, connections still open are closed at once (a fake owes no one a
/// graceful drain).
pub async fn serve(
    listener: TcpListener,
    gateway: FakeGateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    run(TcpAcceptor { listener: Some(listener), addr }, gateway, shutdown).await
}

/// Serve the fake on any axum [`Listener`] (a simulated network's, say)
/// until `shutdown` resolves. Such a listener cannot be closed and re-opened,
/// so a refusal accepts connections and closes them at once instead.
pub async fn serve_on<L: Listener>(
    listener: L,
    gateway: FakeGateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    run(AnyAcceptor(listener), gateway, shutdown).await
}

/// A source of connections that may be able to stop listening.
trait Acceptor: Send {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Only polled while [`is_open`](Self::is_open).
    fn accept(&mut self) -> impl Future<Output = Self::Io> + Send;
    fn is_open(&self) -> bool;
    /// Stop listening, if this acceptor can.
    fn close(&mut self);
    fn reopen(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

struct TcpAcceptor {
    listener: Option<TcpListener>,
    addr: SocketAddr,
}

impl Acceptor for TcpAcceptor {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> Self::Io {
        match &mut self.listener {
            // axum's impl retries transient accept errors (EMFILE and such).
            Some(listener) => Listener::accept(listener).await.0,
            None => std::future::pending().await,
        }
    }

    fn is_open(&self) -> bool {
        self.listener.is_some()
    }

    fn close(&mut self) {
        self.listener = None;
    }

    async fn reopen(&mut self) -> io::Result<()> {
        if self.listener.is_some() {
            return Ok(());
        }
        // The old socket's connections may linger briefly; tokio binds with
        // SO_REUSEADDR, so a few retries cover anything but a stolen port.
        let mut attempts = 0;
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.listener = Some(listener);
                    return Ok(());
                }
                Err(e) if attempts >= 50 => return Err(e),
                Err(_) => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

struct AnyAcceptor<L>(L);

impl<L: Listener> Acceptor for AnyAcceptor<L> {
    type Io = L::Io;

    async fn accept(&mut self) -> Self::Io {
        self.0.accept().await.0
    }

    fn is_open(&self) -> bool {
        true
    }

    fn close(&mut self) {}

    async fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn run<A: Acceptor>(
    mut acceptor: A,
    gateway: FakeGateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(gateway.clone());
    let faults = gateway.faults();
    let mut refusal = faults.watch_refusal();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        if faults.is_refusing() {
            acceptor.close();
        } else {
            acceptor.reopen().await?;
        }
        let refusal_ends = faults.refusal_deadline();
        tokio::select! {
            () = &mut shutdown => break,
            // A refusal started or ended: re-evaluate at the top.
            changed = refusal.changed() => {
                if changed.is_err() {
                    // The plan is gone, which cannot happen while `faults` is
                    // held; stop rather than spin.
                    break;
                }
            }
            () = sleep_until(refusal_ends) => {}
            io = acceptor.accept(), if acceptor.is_open() => {
                // Checked per connection too: between a refusal starting and
                // the listener closing, or when it cannot close at all.
                if faults.admit_connection() {
                    connections.spawn(serve_connection(io, app.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(acceptor);
    connections.shutdown().await;
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Lets a handler close its own connection without a reply.
#[derive(Clone, Debug)]
struct ConnectionKill(Arc<Notify>);

async fn serve_connection<I>(io: I, app: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let handle = ConnectionKill(Arc::clone(&kill));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        app.clone().oneshot(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false).timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    let connection = http.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "fake gateway connection ended with an error");
            }
        }
        // `notify_one` leaves a permit, so a kill fired before this select
        // polls is not missed. Dropping `connection` drops the socket.
        () = kill.notified() => tracing::debug!("fake gateway dropped a connection without replying"),
    }
}

// ---- handlers ----

fn reply((status, body): Reply) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn idempotency_key(headers: &HeaderMap) -> Option<&str> {
    headers.get(IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok())
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

fn unauthorized() -> Response {
    reply(error(401, codes::UNAUTHORIZED_KEY, "missing or wrong secret key"))
}

fn malformed(gateway: &FakeGateway, why: &str) -> Response {
    gateway.note_malformed();
    reply(error(400, codes::INVALID_REQUEST, why))
}

/// What became of a request with effects, decided in its own task.
enum Processed {
    Reply(Reply),
    LoseReply,
}

/// Run a request with effects: latency, `fail_5xx`, the state change, then
/// the after-commit faults. It runs in a task of its own so that a client
/// that hangs up (after its timeout during injected latency, say) cannot
/// cancel it half-way: a real gateway finishes what it has received, and
/// that is the case a client's `Unknown` must cover.
async fn process(
    gateway: FakeGateway,
    endpoint: Endpoint,
    kill: Option<Extension<ConnectionKill>>,
    apply: impl FnOnce(&FakeGateway) -> (Reply, bool) + Send + 'static,
) -> Response {
    let before = gateway.faults().before(endpoint);
    let task = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            if let Some(delay) = before.delay {
                let _delaying = gateway.faults().delaying(endpoint);
                tokio::time::sleep(delay).await;
            }
            if let Some(status) = before.fail_status {
                return Processed::Reply(error(status, codes::FAILED_INTERNAL_SYSTEM_PROCESSING, "injected failure"));
            }
            let (answer, took_effect) = apply(&gateway);
            if !took_effect {
                return Processed::Reply(answer);
            }
            match gateway.faults().after_commit(endpoint) {
                AfterCommit::Reply => Processed::Reply(answer),
                AfterCommit::Fail(status) => Processed::Reply(error(
                    status,
                    codes::FAILED_INTERNAL_SYSTEM_PROCESSING,
                    "injected failure after commit",
                )),
                AfterCommit::LoseReply => Processed::LoseReply,
            }
        })
    };
    match task.await {
        Ok(Processed::Reply(answer)) => reply(answer),
        Ok(Processed::LoseReply) => lose_reply(kill, gateway.lost_reply_hold()).await,
        Err(e) => reply(error(500, codes::FAILED_INTERNAL_SYSTEM_PROCESSING, &format!("the fake failed: {e}"))),
    }
}

async fn lose_reply(kill: Option<Extension<ConnectionKill>>, hold: Duration) -> Response {
    match kill {
        Some(Extension(ConnectionKill(kill))) => {
            kill.notify_one();
            // The connection task drops this future with the socket.
            std::future::pending().await
        }
        None => {
            tokio::time::sleep(hold).await;
            reply(error(504, codes::FAILED_INTERNAL_SYSTEM_PROCESSING, "reply withheld (lose_reply_after_commit)"))
        }
    }
}

async fn confirm(
    State(gateway): State<FakeGateway>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<ConfirmBody>(&body);
    // Counted before anything can refuse it: "arrived" means arrived.
    if let Ok(request) = &parsed {
        gateway.note_confirm_arrival(&request.payment_key, idempotency_key(&headers));
    }
    if !gateway.authorized(authorization(&headers)) {
        return unauthorized();
    }
    let request = match parsed {
        Ok(request) if request.amount > 0 && !request.payment_key.is_empty() && !request.order_id.is_empty() => request,
        Ok(_) => return malformed(&gateway, "paymentKey and orderId must be non-empty and amount positive"),
        Err(e) => return malformed(&gateway, &e.to_string()),
    };
    process(gateway, Endpoint::Confirm, kill, move |g| g.apply_confirm(&request)).await
}

async fn lookup(State(gateway): State<FakeGateway>, Path(payment_key): Path<String>, headers: HeaderMap) -> Response {
    if !gateway.authorized(authorization(&headers)) {
        return unauthorized();
    }
    // No effects, so nothing to protect from a hang-up: faults apply inline.
    let before = gateway.faults().before(Endpoint::Lookup);
    if let Some(delay) = before.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = before.fail_status {
        return reply(error(status, codes::FAILED_INTERNAL_SYSTEM_PROCESSING, "injected failure"));
    }
    reply(gateway.apply_lookup(&payment_key))
}

async fn cancel(
    State(gateway): State<FakeGateway>,
    kill: Option<Extension<ConnectionKill>>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gateway.note_cancel_arrival(&payment_key, idempotency_key(&headers));
    if !gateway.authorized(authorization(&headers)) {
        return unauthorized();
    }
    match serde_json::from_slice::<CancelBody>(&body) {
        Ok(request) if !request.cancel_reason.is_empty() => {}
        Ok(_) => return malformed(&gateway, "cancelReason must be non-empty"),
        Err(e) => return malformed(&gateway, &e.to_string()),
    }
    process(gateway, Endpoint::Cancel, kill, move |g| g.apply_cancel(&payment_key)).await
}

// ---- admin ----

async fn stats(State(gateway): State<FakeGateway>) -> Response {
    Json(gateway.stats()).into_response()
}

async fn get_faults(State(gateway): State<FakeGateway>) -> Response {
    Json(gateway.faults().snapshot()).into_response()
}

async fn set_faults(State(gateway): State<FakeGateway>, body: Bytes) -> Response {
    let config = match serde_json::from_slice::<FaultConfig>(&body) {
        Ok(config) => config,
        Err(e) => return reply(error(400, codes::INVALID_REQUEST, &e.to_string())),
    };
    match gateway.faults().apply(config) {
        Ok(()) => Json(gateway.faults().snapshot()).into_response(),
        Err(why) => reply(error(422, codes::INVALID_REQUEST, &why)),
    }
}

async fn clear_faults(State(gateway): State<FakeGateway>) -> Response {
    gateway.faults().clear();
    Json(gateway.faults().snapshot()).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    payment_key: String,
    amount: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeclineBody {
    payment_key: String,
}

async fn register(State(gateway): State<FakeGateway>, body: Bytes) -> Response {
    match serde_json::from_slice::<RegisterBody>(&body) {
        Ok(RegisterBody { payment_key, amount }) => {
            gateway.register(&payment_key, amount);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => reply(error(400, codes::INVALID_REQUEST, &e.to_string())),
    }
}

async fn decline(State(gateway): State<FakeGateway>, body: Bytes) -> Response {
    match serde_json::from_slice::<DeclineBody>(&body) {
        Ok(DeclineBody { payment_key }) => {
            gateway.decline(&payment_key);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => reply(error(400, codes::INVALID_REQUEST, &e.to_string())),
    }
}
