//! The fault proxy: one per `tally serve` instance, between its connection
//! pool (TCP on localhost) and PostgreSQL (the private cluster's Unix
//! socket). It forwards bytes both ways and, when the schedule says so,
//! adds latency, stalls every connection, partitions the instance from the
//! database (connections hang, or are reset and new ones refused), and loses
//! COMMIT acknowledgements.
//!
//! # The lost commit acknowledgement
//!
//! The proxy reads the frontend protocol's framing on the way to the server
//! (a type byte and a length, after the untyped startup message) to find
//! simple-query `COMMIT`s, which is how sqlx commits. When one is drawn to
//! lose its answer, the proxy forwards it, waits for the server's reply
//! (so the transaction has committed, or failed, on the server), drops that
//! reply and closes both connections. The service sees an I/O error during
//! COMMIT: it cannot know whether its transaction committed, which is
//! `StoreError::Ambiguous`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_sim::rng::SimRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

/// What the proxy does to the traffic right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Partition {
    #[default]
    None,
    /// Nothing moves: open connections hang, new ones wait.
    Hang,
    /// Open connections are closed, new ones refused.
    Reset,
}

/// Counters the report shows.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub connections: AtomicU64,
    pub commits: AtomicU64,
    pub lost_acks: AtomicU64,
    pub resets: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    /// The server's Unix socket (it moves when PostgreSQL restarts).
    target: Mutex<PathBuf>,
    latency_ms: AtomicU64,
    partition: Mutex<Partition>,
    /// Chance per mille that a COMMIT's answer is lost.
    lost_ack_per_mille: AtomicU64,
    rng: Mutex<SimRng>,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    counts: ProxyCounts,
}

/// One instance's proxy; cloning shares it.
#[derive(Clone, Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    port: u16,
}

/// The most a connection waits for the server's socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a stalled direction looks again.
const STALL_POLL: Duration = Duration::from_millis(10);
/// Protocol codes of the untyped requests that precede a startup message.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// Listens on a free localhost port and forwards to `target`.
    pub async fn start(target: PathBuf, seed: u64) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            latency_ms: AtomicU64::new(0),
            partition: Mutex::new(Partition::None),
            lost_ack_per_mille: AtomicU64::new(0),
            rng: Mutex::new(SimRng::new(seed)),
            generation: watch::Sender::new(0),
            counts: ProxyCounts::default(),
        });
        let accepting = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(STALL_POLL).await;
                    continue;
                };
                let _ = client.set_nodelay(true);
                tokio::spawn(connection(Arc::clone(&accepting), client));
            }
        });
        Ok(Proxy { shared, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn counts(&self) -> &ProxyCounts {
        &self.shared.counts
    }

    pub fn retarget(&self, target: PathBuf) {
        *lock(&self.shared.target) = target;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_ms.store(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn set_lost_acks(&self, per_mille: u64) {
        self.shared.lost_ack_per_mille.store(per_mille, Ordering::Relaxed);
    }

    /// Starts or heals a partition; a reset also closes what is open.
    pub fn set_partition(&self, partition: Partition) {
        *lock(&self.shared.partition) = partition;
        if partition == Partition::Reset {
            self.reset_all();
        }
    }

    /// Closes every open connection (the server and the pool see them drop).
    pub fn reset_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
        self.shared.counts.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Back to a healthy link.
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO);
        self.set_partition(Partition::None);
    }
}

impl Shared {
    fn partition(&self) -> Partition {
        *lock(&self.partition)
    }

    /// Waits out a hang, then the link's latency.
    async fn pass(&self) {
        while self.partition() == Partition::Hang {
            tokio::time::sleep(STALL_POLL).await;
        }
        let latency = self.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
    }

    fn lose_this_ack(&self) -> bool {
        let per_mille = self.lost_ack_per_mille.load(Ordering::Relaxed);
        per_mille > 0 && lock(&self.rng).chance(per_mille)
    }
}

async fn connection(shared: Arc<Shared>, client: TcpStream) {
    shared.counts.connections.fetch_add(1, Ordering::Relaxed);
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    if shared.partition() == Partition::Reset {
        return;
    }
    shared.pass().await;
    let target = lock(&shared.target).clone();
    let Ok(Ok(server)) = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&target)).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let doomed = AtomicBool::new(false);
    // Whichever direction ends first ends the connection: dropping every
    // half closes both sockets.
    tokio::select! {
        () = upstream(&shared, client_read, server_write, &doomed) => {}
        () = downstream(&shared, server_read, client_write, &doomed) => {}
        _ = generation.changed() => {}
    }
}

/// Client → server, message by message, to see COMMITs.
async fn upstream(
    shared: &Shared,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    doomed: &AtomicBool,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    let mut untyped = true;
    loop {
        let Ok(n) = from.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut forward_until = 0;
        let mut commit_at = None;
        while let Some((length, kind, body)) = frame(&buffer[forward_until..], untyped) {
            if untyped {
                let code = body.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                untyped = matches!(code, Some(SSL_REQUEST | GSSENC_REQUEST));
            } else if kind == b'Q' && is_commit(body) {
                shared.counts.commits.fetch_add(1, Ordering::Relaxed);
                if shared.lose_this_ack() {
                    commit_at = Some(forward_until + length);
                    forward_until += length;
                    break;
                }
            }
            forward_until += length;
        }
        shared.pass().await;
        if commit_at.is_some() {
            // Set before the COMMIT leaves: everything the server sends from
            // now on is its answer, which the client must never see.
            doomed.store(true, Ordering::SeqCst);
        }
        if to.write_all(&buffer[..forward_until]).await.is_err() {
            return;
        }
        buffer.drain(..forward_until);
        if commit_at.is_some() {
            // Forward nothing more; the other direction ends the connection.
            std::future::pending::<()>().await;
        }
    }
}

/// Server → client, in chunks; a doomed connection's next bytes (the
/// COMMIT's answer) are dropped with the connection.
async fn downstream(
    shared: &Shared,
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    doomed: &AtomicBool,
) {
    let mut chunk = vec![0u8; 16384];
    loop {
        let Ok(n) = from.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        if doomed.load(Ordering::SeqCst) {
            shared.counts.lost_acks.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.pass().await;
        if to.write_all(&chunk[..n]).await.is_err() {
            return;
        }
    }
}

/// One complete frontend message at the start of `bytes`: its whole length,
/// its type byte (0 for an untyped one) and its body.
fn frame(bytes: &[u8], untyped: bool) -> Option<(usize, u8, &[u8])> {
    let (kind, header) = if untyped { (0, 0) } else { (*bytes.first()?, 1) };
    let length = bytes.get(header..header + 4)?;
    let length = usize::try_from(u32::from_be_bytes([length[0], length[1], length[2], length[3]])).ok()?;
    if length < 4 {
        return None;
    }
    let total = header + length;
    let body = bytes.get(header + 4..total)?;
    Some((total, kind, body))
}

/// A simple query that commits: `COMMIT` (any case, any spacing, `;`).
fn is_commit(query: &[u8]) -> bool {
    let text = String::from_utf8_lossy(query);
    let text = text.trim_end_matches('\0').trim().trim_end_matches(';').trim();
    text.eq_ignore_ascii_case("commit") || text.eq_ignore_ascii_case("end")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_simple_query_commit_is_framed_and_recognised() {
        let bytes = message(b'Q', b"COMMIT\0");
        let (length, kind, body) = frame(&bytes, false).unwrap();
        assert_eq!((length, kind), (bytes.len(), b'Q'));
        assert!(is_commit(body));
        assert!(!is_commit(b"SELECT 1\0"));
        assert!(!is_commit(b"COMMIT PREPARED 'x'\0"));
    }

    #[test]
    fn a_partial_message_waits_for_the_rest() {
        let bytes = message(b'Q', b"COMMIT\0");
        assert_eq!(frame(&bytes[..bytes.len() - 1], false), None);
        let startup = [0, 0, 0, 8, 0, 3, 0, 0];
        assert_eq!(frame(&startup, true), Some((8, 0, &startup[4..])));
    }
}

/// `map_commit` on purpose: a real I/O error during a real COMMIT.
#[cfg(test)]
mod lost_commit {
    use std::time::Duration;

    use tally_cluster::{Cluster, ClusterConfig};
    use tally_core::ids::UserId;
    use tally_core::store::{Store, StoreError, Tx, User};
    use tally_core::time::Timestamp;
    use tally_pg::{PgConfig, PgStore};

    use super::Proxy;

    fn store(url: &str) -> PgStore {
        PgStore::connect_lazy(url, PgConfig { max_connections: 1, ..PgConfig::default() }).expect("a pool")
    }

    /// Invariant 2's premise on the shipped store: a COMMIT whose answer is
    /// lost is `Ambiguous` (never a failure, which a caller could retry as
    /// if nothing happened) — and it did commit, which is why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_io_error_during_commit_is_ambiguous_and_the_commit_may_have_landed() {
        let cluster = tokio::task::spawn_blocking(|| Cluster::start(ClusterConfig::throwaway().fast_unsafe()))
            .await
            .unwrap()
            .expect("a throwaway cluster");
        let direct = store(&cluster.url());
        direct.migrate().await.expect("migrations");
        let socket = cluster.socket_dir().join(format!(".s.PGSQL.{}", cluster.port()));
        let proxy = Proxy::start(socket, 1).await.unwrap();
        let proxied =
            store(&format!("postgres://postgres@127.0.0.1:{}/{}?sslmode=disable", proxy.port(), cluster.database()));
        // Every COMMIT from now on loses its answer.
        proxy.set_lost_acks(1000);
        let user = User { id: UserId(42), name: "lost ack".into(), key_hash: [7; 32], created_at: Timestamp(1) };
        let mut tx = proxied.begin().await.expect("begin");
        tx.insert_user(&user).await.expect("insert");
        let committed = tokio::time::timeout(Duration::from_secs(10), tx.commit()).await.expect("no hang");
        assert_eq!(committed, Err(StoreError::Ambiguous));
        assert_eq!(proxy.counts().lost_acks.load(std::sync::atomic::Ordering::Relaxed), 1);
        let mut read = direct.begin().await.expect("begin");
        assert_eq!(read.user(user.id).await.expect("read"), Some(user), "the commit landed");
        read.rollback().await;
        tokio::task::spawn_blocking(move || cluster.stop()).await.unwrap().expect("stop");
    }
}
