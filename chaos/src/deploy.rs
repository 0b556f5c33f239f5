//! The deployment under test: one private PostgreSQL cluster (fsync on), and
//! per strategy a fresh database, the fake gateway (served in this process,
//! so its books can be read at the end), and N `tally serve` processes, each
//! reaching the database through its own fault proxy. Kills are `kill -9`:
//! of an instance (then restarted), or of PostgreSQL's whole process tree
//! (then restarted on the same data directory, through crash recovery).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tally_cluster::{Cluster, ClusterConfig};
use tally_pg::{PgConfig, PgStore, Strategy};
use tokio::process::{Child, Command};

use crate::proxy::Proxy;

/// Errors setting up or driving the deployment.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("PostgreSQL cluster: {0}")]
    Cluster(#[from] tally_cluster::ClusterError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("instance {0} did not become ready within {1:?} (log: {2})")]
    NotReady(usize, Duration, PathBuf),
    #[error("{0}")]
    Other(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DeployError {
    let what = what.into();
    move |source| DeployError::Io { what, source }
}

/// How long an instance may take to answer `/readyz` after a (re)start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `kill -9` may take to make a process disappear.
const DEATH_TIMEOUT: Duration = Duration::from_secs(10);

/// The private cluster, restartable after a crash.
#[derive(Debug)]
pub struct Database {
    cluster: Mutex<Option<Cluster>>,
    data_dir: PathBuf,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Database {
    /// Starts a durable cluster in `dir` (blocking).
    pub fn start(dir: &Path) -> Result<Database, DeployError> {
        let data_dir = dir.join("postgres");
        let cluster = Cluster::start(Self::config(&data_dir))?;
        Ok(Database { cluster: Mutex::new(Some(cluster)), data_dir })
    }

    fn config(data_dir: &Path) -> ClusterConfig {
        // Durable (fsync, synchronous_commit, full pages: the default), so
        // that a kill -9 followed by crash recovery must keep every commit.
        ClusterConfig::persistent(data_dir).with_max_connections(200)
    }

    fn with<T>(&self, f: impl FnOnce(&Cluster) -> T) -> Result<T, DeployError> {
        let guard = lock(&self.cluster);
        let cluster = guard.as_ref().ok_or_else(|| DeployError::Other("PostgreSQL is down".into()))?;
        Ok(f(cluster))
    }

    pub fn create_database(&self, name: &str) -> Result<(), DeployError> {
        self.with(|c| c.create_database(name))?.map_err(DeployError::from)
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> Result<PathBuf, DeployError> {
        self.with(|c| c.socket_dir().join(format!(".s.PGSQL.{}", c.port())))
    }

    /// A direct URL (no proxy) for the harness's own reads.
    pub fn url(&self, database: &str) -> Result<String, DeployError> {
        self.with(|c| c.url_for(database))
    }

    /// `kill -9` of the postmaster and every process it started, then a
    /// restart on the same data directory (crash recovery). Blocking.
    pub fn crash_and_restart(&self) -> Result<Duration, DeployError> {
        let started = Instant::now();
        let mut guard = lock(&self.cluster);
        let pid_file = self.data_dir.join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(io(format!("reading {}", pid_file.display())))?
            .lines()
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok())
            .ok_or_else(|| DeployError::Other("postmaster.pid names no process".into()))?;
        let mut victims = children_of(pid);
        victims.push(pid);
        kill9(&victims);
        wait_gone(&victims)?;
        // Its stop finds nothing running; dropping it releases the data
        // directory's lock for the next start.
        if let Some(old) = guard.take() {
            let _ = old.stop();
        }
        *guard = Some(Cluster::start(Self::config(&self.data_dir))?);
        Ok(started.elapsed())
    }

    pub fn stop(&self) {
        if let Some(cluster) = lock(&self.cluster).take() {
            let _ = cluster.stop();
        }
    }
}

/// Processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).ok().is_some_and(|stat| {
                // `pid (comm) state ppid …`: comm may hold spaces, so
                // read after its closing parenthesis.
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

fn kill9(pids: &[u32]) {
    let mut command = std::process::Command::new("kill");
    command.arg("-9").args(pids.iter().map(u32::to_string)).stdout(Stdio::null()).stderr(Stdio::null());
    let _ = command.status();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .is_some_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn wait_gone(pids: &[u32]) -> Result<(), DeployError> {
    let deadline = Instant::now() + DEATH_TIMEOUT;
    while pids.iter().any(|&pid| alive(pid)) {
        if Instant::now() > deadline {
            return Err(DeployError::Other(format!("processes {pids:?} survived kill -9")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// What every instance of one run shares.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    pub strategy: Strategy,
    pub database: String,
    pub admin_key: String,
    pub gateway_url: String,
    pub order_ttl: Duration,
    pub payback_bps: u32,
    pub gateway_give_up: Duration,
    pub dir: PathBuf,
}

/// One `tally serve` process and its proxy.
#[derive(Debug)]
pub struct Instance {
    pub index: usize,
    pub port: u16,
    pub proxy: Proxy,
    /// How far its clock lags (the test-only offset).
    pub behind: Duration,
    config: InstanceConfig,
    child: tokio::sync::Mutex<Option<Child>>,
    pub starts: std::sync::atomic::AtomicU64,
}

impl Instance {
    pub fn new(index: usize, port: u16, proxy: Proxy, behind: Duration, config: InstanceConfig) -> Instance {
        Instance {
            index,
            port,
            proxy,
            behind,
            config,
            child: tokio::sync::Mutex::new(None),
            starts: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.config.dir.join(format!("tally-{}.log", self.index + 1))
    }

    /// Starts the process (this binary's `serve`, which is `tally serve`)
    /// and waits until it answers `/readyz`.
    pub async fn start(&self, http: &reqwest::Client) -> Result<(), DeployError> {
        let mut slot = self.child.lock().await;
        let config = &self.config;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(io(format!("opening {}", self.log().display())))?;
        let err = log.try_clone().map_err(io("duplicating the log handle"))?;
        let database_url =
            format!("postgres://postgres@127.0.0.1:{}/{}?sslmode=disable", self.proxy.port(), config.database);
        let behind = i64::try_from(self.behind.as_millis()).unwrap_or(0);
        let exe = std::env::current_exe().map_err(io("finding this executable"))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--strategy", config.strategy.as_str()])
            .args(["--database-url", &database_url])
            .args(["--data-dir", &config.dir.display().to_string()])
            .args(["--gateway-url", &config.gateway_url])
            .args(["--order-ttl-seconds", &config.order_ttl.as_secs().max(1).to_string()])
            .args(["--payback-bps", &config.payback_bps.to_string()])
            .args(["--completer-after-seconds", "1"])
            .args(["--gateway-give-up-seconds", &config.gateway_give_up.as_secs().to_string()])
            .args(["--max-connections", "8"])
            .args(["--acquire-timeout-ms", "2000"])
            .args(["--test-clock-offset-ms", &(-behind).to_string()])
            .env(tally::serve::ALLOW_TEST_HOOKS_ENV, "1")
            .env("TALLY_ADMIN_KEY", &config.admin_key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = command.spawn().map_err(io("spawning tally serve"))?;
        *slot = Some(child);
        drop(slot);
        self.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + READY_TIMEOUT;
        let api = tally_client::Client::new(tally_client::ReqwestTransport::new(http.clone(), &self.url()))
            .with_retry(tally_client::Retry::NEVER)
            .with_attempt_timeout(Duration::from_secs(1));
        loop {
            if api.ready().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DeployError::NotReady(self.index + 1, READY_TIMEOUT, self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether its process is alive.
    pub async fn running(&self) -> bool {
        match self.child.lock().await.as_mut() {
            Some(child) => child.try_wait().is_ok_and(|exited| exited.is_none()),
            None => false,
        }
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill(&self) {
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(DEATH_TIMEOUT, child.wait()).await;
        }
    }
}

/// The harness's own connection to the database (direct, no proxy).
pub fn direct_store(database: &Database, name: &str) -> Result<PgStore, DeployError> {
    let url = database.url(name)?;
    let config = PgConfig { max_connections: 2, ..PgConfig::default() };
    PgStore::connect_lazy(&url, config).map_err(|e| DeployError::Other(e.to_string()))
}

/// A free localhost port for an instance to listen on.
pub fn free_port() -> Result<u16, DeployError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io("finding a free port"))?;
    Ok(listener.local_addr().map_err(io("finding a free port"))?.port())
}
