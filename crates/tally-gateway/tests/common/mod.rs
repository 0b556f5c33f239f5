//! Start a fake gateway on a loopback port and build clients for it.

#![allow(dead_code)] // each test binary uses a different part

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tally_gateway::fake::{self, FakeGateway};
use tally_gateway::{GatewayClient, GatewayConfig, LookupOutcome};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test_sk_tally";

/// A fake gateway served on `127.0.0.1:0`; stops when dropped.
pub struct Running {
    pub gateway: FakeGateway,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client with the given timeouts.
    pub fn client_with(&self, connect_timeout: Duration, request_timeout: Duration) -> GatewayClient {
        client(&self.base_url(), SECRET, connect_timeout, request_timeout)
    }

    /// A client with generous timeouts, for calls that should not time out.
    pub fn client(&self) -> GatewayClient {
        self.client_with(Duration::from_secs(2), Duration::from_secs(10))
    }

    /// The confirms the fake counted for `payment_key`: `(requests, effects)`.
    pub fn confirms(&self, payment_key: &str) -> (u64, u64) {
        let stats = self.gateway.payment_stats(payment_key);
        (stats.confirm_requests, stats.confirm_effects)
    }

    /// The cancels the fake counted for `payment_key`: `(requests, effects)`.
    pub fn cancels(&self, payment_key: &str) -> (u64, u64) {
        let stats = self.gateway.payment_stats(payment_key);
        (stats.cancel_requests, stats.cancel_effects)
    }

    /// Stop the server and check it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task panicked").expect("server failed");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn client(base_url: &str, secret: &str, connect_timeout: Duration, request_timeout: Duration) -> GatewayClient {
    GatewayClient::new(GatewayConfig {
        base_url: base_url.to_owned(),
        secret_key: secret.to_owned(),
        connect_timeout,
        request_timeout,
    })
    .expect("valid client config")
}

/// Serve `gateway` with [`fake::serve`] (a real TCP listener that can refuse).
pub async fn start(gateway: FakeGateway) -> Running {
    start_with(gateway, |listener, gateway, stopped| tokio::spawn(fake::serve(listener, gateway, stopped))).await
}

/// Serve `gateway` with [`fake::serve_on`] (the generic-listener path).
pub async fn start_generic(gateway: FakeGateway) -> Running {
    start_with(gateway, |listener, gateway, stopped| tokio::spawn(fake::serve_on(listener, gateway, stopped))).await
}

/// What a server is stopped by: the `Running` handle's stop signal.
type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds a local port and starts `serve` on it, until the handle stops it.
async fn start_with(
    gateway: FakeGateway,
    serve: impl FnOnce(TcpListener, FakeGateway, Stopped) -> JoinHandle<io::Result<()>>,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped: Stopped = Box::pin(async move {
        let _ = stopped.await;
    });
    let task = serve(listener, gateway.clone(), stopped);
    Running { gateway, addr, stop: Some(stop), task: Some(task) }
}

/// Look `payment_key` up until the answer is not `NotFound`, for at most `within`.
pub async fn lookup_until_found(client: &GatewayClient, payment_key: &str, within: Duration) -> LookupOutcome {
    let deadline = Instant::now() + within;
    loop {
        let outcome = client.lookup(payment_key).await;
        if outcome != LookupOutcome::NotFound || Instant::now() >= deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait until a TCP connect to `addr` succeeds (`true`) or is refused (`false`).
pub async fn wait_for_listener(addr: SocketAddr, open: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let connected = tokio::net::TcpStream::connect(addr).await.is_ok();
        if connected == open {
            return;
        }
        assert!(Instant::now() < deadline, "listener never became {}", if open { "open" } else { "closed" });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
