//! What a cluster should look like: where its data lives, how it is reached,
//! and the server settings tally wants.

use std::path::PathBuf;
use std::time::Duration;

use crate::bins::BinSearch;

/// Where the cluster's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// This directory, kept across runs: a second start reuses the data.
    /// Created if missing; initialised if it holds no cluster yet.
    Persistent(PathBuf),
    /// A fresh private directory under the system temp dir, removed when the
    /// cluster stops (or, if the process dies first, by the watchdog).
    Throwaway,
}

/// How to start a [`Cluster`](crate::Cluster).
///
/// Build one with [`ClusterConfig::persistent`] or [`ClusterConfig::throwaway`]
/// and adjust the public fields or the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Where the data lives.
    pub data_dir: DataDir,
    /// The database [`Cluster::start`](crate::Cluster::start) makes sure
    /// exists, and that [`Cluster::url`](crate::Cluster::url) points at.
    /// Default `tally`.
    pub database: String,
    /// Use the PostgreSQL programs in exactly this directory; `None` searches
    /// with [`ClusterConfig::search`].
    pub bin_dir: Option<PathBuf>,
    /// Where to look for the programs when `bin_dir` is `None`.
    pub search: BinSearch,
    /// The account the server runs as when this process is root (PostgreSQL
    /// refuses to run as root). Ignored otherwise. Default `postgres`.
    pub server_user: String,
    /// The directory for the server's unix socket; `None` makes a fresh
    /// private one under the temp dir, removed at stop.
    pub socket_dir: Option<PathBuf>,
    /// The port number. With no TCP listener it only names the socket file
    /// (`.s.PGSQL.<port>`), so the default 5432 never collides with anything.
    pub port: u16,
    /// `max_connections`. Default 200: the end-to-end tests open a pool per
    /// test database.
    pub max_connections: u32,
    /// `shared_buffers`, in PostgreSQL's units (`128MB`). Modest by default:
    /// the machines this runs on are small and may hold several clusters.
    pub shared_buffers: String,
    /// `true` (the default) keeps `fsync`, `synchronous_commit` and
    /// `full_page_writes` on: a committed payment survives a power cut.
    /// [`ClusterConfig::fast_unsafe`] turns all three off.
    pub durable: bool,
    /// Deadline for starting and for stopping the server (`pg_ctl -w -t`), and
    /// twice this for `initdb`. Default 60 s.
    pub timeout: Duration,
    /// Stop the server (and, for a throwaway cluster, remove its data) when
    /// this process exits, however it exits — even by `SIGKILL`, through a
    /// small watchdog process. Default `true`.
    pub stop_with_process: bool,
    /// More `postgresql.conf` settings, written after ours (so they win).
    pub extra_settings: Vec<(String, String)>,
}

impl ClusterConfig {
    fn new(data_dir: DataDir) -> Self {
        Self {
            data_dir,
            database: "tally".to_owned(),
            bin_dir: None,
            search: BinSearch::default(),
            server_user: "postgres".to_owned(),
            socket_dir: None,
            port: 5432,
            max_connections: 200,
            shared_buffers: "128MB".to_owned(),
            durable: true,
            timeout: Duration::from_secs(60),
            stop_with_process: true,
            extra_settings: Vec::new(),
        }
    }

    /// A cluster whose data stays in `dir` across runs.
    pub fn persistent(dir: impl Into<PathBuf>) -> Self {
        Self::new(DataDir::Persistent(dir.into()))
    }

    /// A cluster in a fresh temp directory, removed at stop. For tests.
    pub fn throwaway() -> Self {
        Self::new(DataDir::Throwaway)
    }

    /// Trades durability for speed: `fsync`, `synchronous_commit` and
    /// `full_page_writes` off, and `initdb --no-sync`.
    ///
    /// A crash of the machine (not just of PostgreSQL) can then lose or
    /// corrupt committed data. Meant for throwaway test clusters, whose data
    /// nobody wants after the run; never for `tally serve`.
    #[must_use]
    pub fn fast_unsafe(mut self) -> Self {
        self.durable = false;
        self
    }

    /// Sets [`ClusterConfig::database`].
    #[must_use]
    pub fn with_database(mut self, name: impl Into<String>) -> Self {
        self.database = name.into();
        self
    }

    /// Sets [`ClusterConfig::max_connections`].
    #[must_use]
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`ClusterConfig::bin_dir`].
    #[must_use]
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Sets [`ClusterConfig::search`].
    #[must_use]
    pub fn with_search(mut self, search: BinSearch) -> Self {
        self.search = search;
        self
    }

    /// Adds one `postgresql.conf` setting, e.g. `("log_min_duration_statement", "200ms")`.
    #[must_use]
    pub fn with_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_settings.push((name.into(), value.into()));
        self
    }
}

/// A sensible data directory for `tally serve` when the user names none.
///
/// As root, `/var/lib/tally/postgres`: the server runs as the `postgres`
/// user, which cannot enter `/root`. Otherwise `$XDG_DATA_HOME/tally/postgres`,
/// else `~/.local/share/tally/postgres`, else `./tally-data/postgres`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/tally/postgres");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/share")));
    match base {
        Some(b) => b.join("tally").join("postgres"),
        None => PathBuf::from("tally-data").join("postgres"),
    }
}
