//! The two limits that keep one client from starving the others (SPEC.md's
//! 429 `rate_limited`):
//!
//! - [`RateLimits`]: a token bucket per API key (`--rate-limit N`: N requests
//!   a second, bursts of N). It is checked once the key is known to be valid,
//!   so unknown keys cannot fill its table (they get 401, and the connection
//!   limit bounds how fast they arrive). A request it refuses is answered 429
//!   with `Retry-After` before its body or its `Idempotency-Key` is read, so
//!   the refusal is never stored under the key: the same request retried
//!   after the wait runs.
//! - [`PerAddressLimit`]: at most N open connections per client IP address,
//!   a wrapper around any listener. A connection over the limit is closed at
//!   once, before a byte of it is read.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;
use crate::problem::{ApiError, Code};

/// How many keys the bucket table may hold before idle buckets are dropped
/// (a dropped bucket is full again, which only ever favours the client).
const BUCKETS_MAX: usize = 100_000;

/// One token bucket per API key (by the key's SHA-256).
#[derive(Debug)]
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<[u8; 32]>,
    clock: DefaultClock,
    metrics: Metrics,
}

impl RateLimits {
    /// `per_second` requests a second per key, in bursts of up to `per_second`.
    pub fn new(per_second: NonZeroU32, metrics: Metrics) -> RateLimits {
        let quota = Quota::per_second(per_second).allow_burst(per_second);
        RateLimits { limiter: DefaultKeyedRateLimiter::hashmap(quota), clock: DefaultClock::default(), metrics }
    }

    /// Takes one token from `key`'s bucket, or refuses with 429 and how long
    /// to wait (whole seconds, rounded up: `Retry-After` has no fractions).
    pub fn check(&self, key: &[u8; 32]) -> Result<(), ApiError> {
        if self.limiter.len() >= BUCKETS_MAX {
            self.limiter.retain_recent();
        }
        let Err(not_until) = self.limiter.check_key(key) else {
            return Ok(());
        };
        self.metrics.record_refusal("rate_limited");
        let wait = not_until.wait_time_from(self.clock.now());
        let seconds = u32::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u32::MAX).max(1);
        let mut error = ApiError::new(Code::RateLimited, "too many requests for this API key; retry after the wait");
        error.retry_after = Some(seconds);
        Err(error)
    }
}

/// Open connections per client address, shared by the listener and every
/// connection it handed out.
#[derive(Debug, Default)]
struct OpenConnections {
    by_address: Mutex<HashMap<IpAddr, u32>>,
}

impl OpenConnections {
    /// Counts one more connection from `address`, unless it already has `limit`.
    fn try_open(&self, address: IpAddr, limit: NonZeroU32) -> bool {
        let mut by_address = self.by_address.lock().expect("connection table lock");
        let open = by_address.entry(address).or_insert(0);
        if *open >= limit.get() {
            return false;
        }
        *open += 1;
        true
    }

    fn close(&self, address: IpAddr) {
        let mut by_address = self.by_address.lock().expect("connection table lock");
        let open = by_address.get_mut(&address).expect("a closing connection was counted when it opened");
        *open -= 1;
        if *open == 0 {
            // The table holds only addresses with open connections.
            by_address.remove(&address);
        }
    }
}

/// A TCP listener that keeps at most `limit` connections open per client IP
/// address; the next one is closed as soon as it is accepted.
#[derive(Debug)]
pub struct PerAddressLimit {
    inner: TcpListener,
    limit: NonZeroU32,
    open: Arc<OpenConnections>,
    metrics: Metrics,
}

impl PerAddressLimit {
    pub fn new(inner: TcpListener, limit: NonZeroU32, metrics: Metrics) -> PerAddressLimit {
        PerAddressLimit { inner, limit, open: Arc::default(), metrics }
    }
}

impl axum::serve::Listener for PerAddressLimit {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
            if self.open.try_open(address.ip(), self.limit) {
                let stream = CountedStream { stream, address: address.ip(), open: Arc::clone(&self.open) };
                return (stream, address);
            }
            self.metrics.record_refusal("connection_limit");
            drop(stream);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection [`PerAddressLimit`] counts until it is dropped.
#[derive(Debug)]
pub struct CountedStream {
    stream: TcpStream,
    address: IpAddr,
    open: Arc<OpenConnections>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.close(self.address);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_key_gets_its_burst_then_429_with_a_whole_second_wait() {
        let limits = RateLimits::new(limit(3), Metrics::local());
        let key = [1u8; 32];
        for _ in 0..3 {
            assert!(limits.check(&key).is_ok());
        }
        let refused = limits.check(&key).unwrap_err();
        assert_eq!(refused.code, Code::RateLimited);
        assert_eq!(refused.retry_after, Some(1), "a third of a second rounds up to 1");
        // Another key has its own bucket.
        assert!(limits.check(&[2u8; 32]).is_ok());
    }

    #[test]
    fn an_address_holds_at_most_its_limit_of_connections_and_gets_them_back() {
        let open = OpenConnections::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(open.try_open(a, limit(2)));
        assert!(open.try_open(a, limit(2)));
        assert!(!open.try_open(a, limit(2)), "the third connection of one address");
        assert!(open.try_open(b, limit(2)), "another address is not affected");
        open.close(a);
        assert!(open.try_open(a, limit(2)), "a closed connection frees its place");
        open.close(a);
        open.close(a);
        open.close(b);
        assert!(open.by_address.lock().unwrap().is_empty(), "no address is kept once its connections closed");
    }
}
