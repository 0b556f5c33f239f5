//! The running cluster: [`Cluster`], its start (initdb if needed, take over
//! or refuse a leftover server, pg_ctl start, ensure the database), its
//! public use (URLs, databases, psql) and its stop. The directories it makes
//! are in [`dirs`]; the server process it drives is in [`server`].

use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::ClusterError;
use crate::bins::{PgBins, find_binaries};
use crate::cmd::{self, RunAs};
use crate::config::ClusterConfig;

mod dirs;
mod server;

use server::server_account;

/// The superuser `initdb -U` creates. Fixed, rather than the OS user's name,
/// so URLs look the same for root (server runs as `postgres`) and for a
/// developer running as themselves.
pub const SUPERUSER: &str = "postgres";

/// Our settings, included from `postgresql.conf` and rewritten at each start
/// so a changed [`ClusterConfig`] applies to an existing data directory.
const SETTINGS_FILE: &str = "tally-cluster.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'tally-cluster.conf'";
/// The pid of the process that last started the server on this data
/// directory: tells a leftover of a dead process (safe to stop) from a server
/// someone is still using (not ours to stop).
const OWNER_FILE: &str = "tally-cluster.owner";
/// The server log, inside the data directory.
const LOG_FILE: &str = "tally-cluster.log";
/// Past this size the log is moved aside at start, so it cannot grow forever.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// `sun_path` is 108 bytes on Linux and 104 on macOS, counting the NUL.
const MAX_SOCKET_PATH: usize = 103;
/// Deadline for the quick commands (status checks, psql).
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);

/// A private PostgreSQL cluster started by this process.
///
/// The server listens on a unix socket only, in a directory only its own
/// user can enter, and trusts every local connection: see the crate docs for
/// why. [`Cluster::stop`] stops it; dropping it stops it too (best effort).
#[derive(Debug)]
pub struct Cluster {
    bins: PgBins,
    run_as: Option<RunAs>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    database: String,
    timeout: Duration,
    /// From just before `pg_ctl start` until a stop succeeds: a failed or
    /// timed-out start may still have left a server to stop.
    may_be_running: bool,
    wrote_owner: bool,
    /// Directories this cluster made and removes at stop: a throwaway
    /// cluster's whole root, and a private socket directory.
    remove_on_stop: Vec<PathBuf>,
    /// Stops the server if this process dies without stopping it; see
    /// [`ClusterConfig::stop_with_process`].
    watchdog: Option<Child>,
    shut_down: bool,
    /// An exclusive `flock` on the data directory for as long as this value
    /// lives: two tally processes (or two `Cluster`s in one) never drive the
    /// same data directory, and the kernel drops it when the process dies, so
    /// whoever gets it next knows any server still running there is a leftover.
    data_dir_lock: Option<fs::File>,
}

impl Cluster {
    /// Starts a cluster as `config` says, initialising its data directory
    /// first if it holds no cluster, and makes sure `config.database` exists.
    ///
    /// Blocking: it runs `initdb`, `pg_ctl` and `psql` and waits for them
    /// (each with a deadline). From async code, call it in `spawn_blocking`.
    pub fn start(config: ClusterConfig) -> Result<Self, ClusterError> {
        validate_name(&config.database)?;
        let bins = find_binaries(config.bin_dir.as_deref(), &config.search)?;
        let run_as = server_account(&config.server_user)?;
        tracing::debug!(bin_dir = %bins.dir.display(), run_as = ?run_as.as_ref().map(|u| &u.name), "found PostgreSQL");

        // From here on, `cluster` owns what has been made, and its Drop undoes
        // it if a later step fails.
        let mut cluster = Cluster {
            bins,
            run_as,
            data_dir: PathBuf::new(),
            socket_dir: PathBuf::new(),
            port: config.port,
            database: config.database.clone(),
            timeout: config.timeout,
            may_be_running: false,
            wrote_owner: false,
            remove_on_stop: Vec::new(),
            watchdog: None,
            shut_down: false,
            data_dir_lock: None,
        };
        cluster.prepare_dirs(&config)?;
        if !cluster.data_dir.join("PG_VERSION").is_file() {
            cluster.initdb(config.durable)?;
        }
        cluster.deal_with_leftover_server()?;
        cluster.write_settings(&config)?;
        cluster.start_server()?;
        if config.stop_with_process {
            cluster.spawn_watchdog();
        }
        cluster.ensure_database(&config.database)?;
        tracing::info!(
            data_dir = %cluster.data_dir.display(),
            socket_dir = %cluster.socket_dir.display(),
            database = %cluster.database,
            "PostgreSQL cluster started"
        );
        Ok(cluster)
    }

    /// Stops the server (`pg_ctl stop -m fast -w`) and removes what this
    /// cluster made: its socket directory and, for a throwaway cluster, all
    /// its data.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.shutdown()
    }

    /// A URL for sqlx (or libpq) to reach `database` as the superuser over
    /// the unix socket: `postgres://postgres@localhost:5432/<db>?host=<socket dir>`.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{}/{}?host={}",
            self.port,
            percent_encode(database.as_bytes()),
            percent_encode(self.socket_dir.as_os_str().as_bytes())
        )
    }

    /// The URL of the configured database ([`ClusterConfig::database`]).
    pub fn url(&self) -> String {
        self.url_for(&self.database)
    }

    /// The URL of the `postgres` maintenance database, as the superuser: the
    /// one to connect to for `CREATE DATABASE` and `DROP DATABASE`.
    pub fn superuser_url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates database `name`; an error if it exists. `name` must be 1 to 63
    /// ASCII letters, digits or underscores.
    pub fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        validate_name(name)?;
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(())
    }

    /// Creates database `name` unless it exists.
    pub fn ensure_database(&self, name: &str) -> Result<(), ClusterError> {
        validate_name(name)?;
        let found = self.psql("postgres", &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"))?;
        if found.trim() != "1" {
            self.create_database(name)?;
        }
        Ok(())
    }

    /// Drops database `name` if it exists, disconnecting its sessions.
    pub fn drop_database(&self, name: &str) -> Result<(), ClusterError> {
        validate_name(name)?;
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
        Ok(())
    }

    /// Runs `sql` with `psql` in `database` as the superuser, stopping at the
    /// first error, and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        validate_name(database)?;
        // Client programs run as us: they only need the socket, and root can
        // enter the server user's private socket directory.
        let mut psql = cmd::command(&self.bins.psql, None);
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database, "-c", sql]);
        let out = cmd::run(&mut psql, SHORT_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// The database [`Cluster::url`] points at.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The port (which, with no TCP listener, only names the socket file).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log file.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The PostgreSQL programs in use.
    pub fn bins(&self) -> &PgBins {
        &self.bins
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(data_dir = %self.data_dir.display(), error = %e, "could not stop the PostgreSQL cluster");
        }
    }
}

/// Database names become SQL identifiers and URL path segments; this
/// alphabet needs no quoting rules beyond double quotes.
fn validate_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty() && name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(ClusterError::InvalidDatabaseName { name: name.to_owned() }) }
}

/// Percent-encodes all but the unreserved characters and `/`.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["tally", "t_1", "ABC", &"a".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a-b", "a b", "é", "x\"y", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn socket_paths_are_encoded() {
        assert_eq!(percent_encode(b"/tmp/tally-pg-1-0"), "/tmp/tally-pg-1-0");
        assert_eq!(percent_encode(b"/a b/&c"), "/a%20b/%26c");
    }

    #[test]
    fn cluster_is_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<Cluster>();
    }
}
