//! A private `redis-server`, started from the installed binary: listening
//! only on a Unix socket (mode 700) in a fresh temporary directory, no TCP
//! port, no persistence (the locks are leases; the fence counters never go
//! below the clock, see the crate docs), stopped when the value is dropped.
//!
//! The server runs under a small shell that holds a pipe from this process:
//! when the pipe closes — `stop`, a drop, or this process dying however it
//! dies — the shell stops the server and removes the directory.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The binary, unless `REDIS_SERVER` names another.
const DEFAULT_BINARY: &str = "redis-server";
/// How long the server may take to answer its first PING.
const START_MAX: Duration = Duration::from_secs(10);

#[derive(thiserror::Error, Debug)]
pub enum ServerError {
    #[error("cannot start {binary}: {source} (install redis-server, or set REDIS_SERVER or --redis-url)")]
    Spawn { binary: String, source: std::io::Error },
    #[error("redis-server did not answer within {0:?}: {1}")]
    NotReady(Duration, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    supervisor: Option<Child>,
}

/// Stops the server when its standard input closes, then removes the
/// directory. Signals sent to the process group are ignored (set after the
/// server started, so it does not inherit them): the pipe says when to stop.
const SUPERVISOR: &str = r#""$1" --port 0 --unixsocket "$2/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
  --dir "$2" --pidfile "$2/redis.pid" --logfile "$2/redis.log" </dev/null &
server=$!
trap '' INT HUP TERM QUIT PIPE
read _line
kill "$server" 2>/dev/null
wait "$server"
rm -rf -- "$2"
"#;

impl RedisServer {
    /// Starts a server and waits until it answers.
    pub fn start() -> Result<RedisServer, ServerError> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| DEFAULT_BINARY.to_owned());
        let dir = std::env::temp_dir().join(format!(
            "tally-redis-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let supervisor = Command::new("/bin/sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("tally-redis")
            .arg(&binary)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ServerError::Spawn { binary: binary.clone(), source })?;
        let mut server = RedisServer { dir, supervisor: Some(supervisor) };
        server.wait_ready()?;
        tracing::info!(socket = %server.socket().display(), "private redis-server started");
        Ok(server)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The URL to hand `RedisLocks`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn wait_ready(&mut self) -> Result<(), ServerError> {
        let started = Instant::now();
        loop {
            if ping(&self.socket()).is_ok() {
                return Ok(());
            }
            let exited = self.supervisor.as_mut().and_then(|s| s.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > START_MAX {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(ServerError::NotReady(START_MAX, log.lines().last().unwrap_or("no log").to_owned()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL, as a crash would (tests: "Redis
    /// down"); the supervisor stays, so `stop` still cleans up.
    pub fn kill(&self) -> Result<(), ServerError> {
        let pid = std::fs::read_to_string(self.dir.join("redis.pid"))?;
        let status = Command::new("kill").arg("-9").arg(pid.trim()).status()?;
        if status.success() { Ok(()) } else { Err(ServerError::Io(std::io::Error::other("kill failed"))) }
    }

    /// Stops the server and removes its directory; waits for both.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            // Closing the pipe is the signal.
            drop(supervisor.stdin.take());
            let _ = supervisor.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One PING over the socket, answered `+PONG`.
fn ping(socket: &Path) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut answer = [0_u8; 7];
    stream.read_exact(&mut answer)?;
    if &answer == b"+PONG\r\n" { Ok(()) } else { Err(std::io::Error::other("unexpected answer to PING")) }
}
