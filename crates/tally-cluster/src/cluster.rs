//! The running cluster: start (initdb if needed, take over or refuse a
//! leftover server, pg_ctl start, ensure the database), use, stop.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::ClusterError;
use crate::bins::{PgBins, find_binaries};
use crate::cmd::{self, RunAs};
use crate::config::{ClusterConfig, DataDir};

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

    fn prepare_dirs(&mut self, config: &ClusterConfig) -> Result<(), ClusterError> {
        let mut made_data_dir = false;
        match &config.data_dir {
            DataDir::Throwaway => {
                let root = make_private_dir(&std::env::temp_dir())?;
                self.remove_on_stop.push(root.clone());
                self.give_to_server(&root)?;
                self.data_dir = root.join("data");
                mkdir_private(&self.data_dir)?;
                made_data_dir = true;
                let sock = root.join("s");
                if socket_path_len(&sock, self.port) <= MAX_SOCKET_PATH {
                    mkdir_private(&sock)?;
                    self.socket_dir = sock;
                }
            }
            DataDir::Persistent(dir) => {
                self.data_dir = std::path::absolute(dir).map_err(ClusterError::io("resolving the data directory"))?;
                if !self.data_dir.exists() {
                    if let Some(parent) = self.data_dir.parent() {
                        fs::create_dir_all(parent)
                            .map_err(ClusterError::io(format!("creating {}", parent.display())))?;
                    }
                    mkdir_private(&self.data_dir)?;
                    made_data_dir = true;
                }
            }
        }
        self.lock_data_dir()?;
        // initdb, running as the server's user, must be able to take over an
        // empty directory we (root) made or were handed.
        if made_data_dir || !self.data_dir.join("PG_VERSION").exists() {
            self.give_to_server(&self.data_dir.clone())?;
        }

        if self.socket_dir.as_os_str().is_empty() {
            match &config.socket_dir {
                Some(dir) => {
                    let dir = std::path::absolute(dir).map_err(ClusterError::io("resolving the socket directory"))?;
                    if !dir.exists() {
                        fs::create_dir_all(&dir).map_err(ClusterError::io(format!("creating {}", dir.display())))?;
                        self.give_to_server(&dir)?;
                    }
                    self.socket_dir = dir;
                }
                None => {
                    let dir = make_private_dir(&socket_parent(self.port))?;
                    self.remove_on_stop.push(dir.clone());
                    self.give_to_server(&dir)?;
                    self.socket_dir = dir;
                }
            }
        } else {
            self.give_to_server(&self.socket_dir.clone())?;
        }
        let len = socket_path_len(&self.socket_dir, self.port);
        if len > MAX_SOCKET_PATH {
            return Err(ClusterError::SocketPathTooLong {
                path: self.socket_dir.join(format!(".s.PGSQL.{}", self.port)),
                len,
                max: MAX_SOCKET_PATH,
            });
        }

        if let Some(user) = &self.run_as {
            for dir in [&self.data_dir, &self.socket_dir] {
                check_access(user, dir)?;
            }
        }
        Ok(())
    }

    fn lock_data_dir(&mut self) -> Result<(), ClusterError> {
        // Locking the directory itself, not a file in it: initdb wants it empty.
        let dir =
            fs::File::open(&self.data_dir).map_err(ClusterError::io(format!("opening {}", self.data_dir.display())))?;
        // A lock just released can look held for a moment: a child process
        // forked by another thread shares the lock's open file until it
        // execs. A real holder keeps it far longer than this retry window.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut attempt = dir.try_lock();
        while matches!(attempt, Err(fs::TryLockError::WouldBlock)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            attempt = dir.try_lock();
        }
        match attempt {
            Ok(()) => {
                self.data_dir_lock = Some(dir);
                Ok(())
            }
            Err(fs::TryLockError::WouldBlock) => Err(ClusterError::AlreadyRunning {
                data_dir: self.data_dir.clone(),
                holder: "another live process (or Cluster) is using it through tally-cluster".to_owned(),
            }),
            // Some network filesystems cannot lock; the owner file still
            // guards against stopping a server someone is using.
            Err(fs::TryLockError::Error(e)) => {
                tracing::warn!(data_dir = %self.data_dir.display(), error = %e, "could not lock the data directory");
                Ok(())
            }
        }
    }

    fn initdb(&self, durable: bool) -> Result<(), ClusterError> {
        tracing::info!(data_dir = %self.data_dir.display(), "initialising a new PostgreSQL cluster");
        let mut initdb = self.server_command(&self.bins.initdb);
        initdb
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "--encoding=UTF8", "--no-locale"])
            // Local (socket) connections are trusted: the socket directory is
            // private to the server's user. TCP is off; should someone turn
            // it on, pg_hba still rejects every TCP connection.
            .args(["--auth-local=trust", "--auth-host=reject"]);
        if !durable {
            initdb.arg("--no-sync");
        }
        cmd::run(&mut initdb, self.timeout * 2)?;
        Ok(())
    }

    fn write_settings(&self, config: &ClusterConfig) -> Result<(), ClusterError> {
        let conf = self.data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&conf).map_err(ClusterError::io(format!("reading {}", conf.display())))?;
        if !text.lines().any(|l| l.trim() == INCLUDE_LINE) {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&conf)
                .map_err(ClusterError::io(format!("opening {}", conf.display())))?;
            writeln!(f, "\n# tally-cluster's settings, rewritten at every start.\n{INCLUDE_LINE}")
                .map_err(ClusterError::io(format!("writing {}", conf.display())))?;
        }

        let durable = if config.durable { "on" } else { "off" };
        let mut settings: Vec<(String, String)> = vec![
            // No TCP at all: the unix socket below is the only way in.
            ("listen_addresses".into(), String::new()),
            ("unix_socket_directories".into(), self.socket_dir.to_string_lossy().into_owned()),
            ("unix_socket_permissions".into(), "0700".into()),
            ("port".into(), self.port.to_string()),
            ("max_connections".into(), config.max_connections.to_string()),
            ("shared_buffers".into(), config.shared_buffers.clone()),
            ("fsync".into(), durable.into()),
            ("synchronous_commit".into(), durable.into()),
            ("full_page_writes".into(), durable.into()),
        ];
        settings.extend(config.extra_settings.iter().cloned());

        let mut text = String::from("# Written by tally-cluster at every start; edits here are overwritten.\n");
        for (name, value) in &settings {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\\', "\\\\").replace('\'', "''")));
        }
        let path = self.data_dir.join(SETTINGS_FILE);
        fs::write(&path, text).map_err(ClusterError::io(format!("writing {}", path.display())))?;
        self.give_to_server(&path)
    }

    /// A server may still run on this data directory: one whose starter was
    /// killed (the server outlives it: pg_ctl detaches it), or one in use.
    ///
    /// Holding the data directory lock, we know no live tally process uses
    /// it, so a server that tally started (it left an owner file) is a
    /// leftover and is stopped. Without the lock (a filesystem that cannot
    /// lock), the owner's pid must be gone too. A server tally did not start
    /// is never ours to stop.
    fn deal_with_leftover_server(&mut self) -> Result<(), ClusterError> {
        match self.server_status()? {
            Status::Running => {
                let holder = read_first_line(&self.data_dir.join("postmaster.pid")).unwrap_or_default();
                let owner = read_first_line(&self.data_dir.join(OWNER_FILE)).and_then(|s| s.parse::<u32>().ok());
                let locked = self.data_dir_lock.is_some();
                match owner {
                    Some(pid) if locked || (pid != std::process::id() && !process_alive(pid)) => {
                        tracing::warn!(
                            data_dir = %self.data_dir.display(),
                            owner = pid,
                            "a server left running by a process that has exited holds the data directory; stopping it"
                        );
                        self.stop_server()
                    }
                    Some(pid) if pid == std::process::id() => Err(ClusterError::AlreadyRunning {
                        data_dir: self.data_dir.clone(),
                        holder: "started by this process, which has not stopped it".to_owned(),
                    }),
                    Some(pid) => Err(ClusterError::AlreadyRunning {
                        data_dir: self.data_dir.clone(),
                        holder: format!("started by process {pid}, which is still running"),
                    }),
                    None => Err(ClusterError::AlreadyRunning {
                        data_dir: self.data_dir.clone(),
                        holder: format!("server process {holder}, not started by tally"),
                    }),
                }
            }
            Status::NotRunning => {
                // A server that died (kill -9, power loss) leaves its pid file.
                // PostgreSQL would usually see it is stale, but not if the pid
                // has been reused by a live process; pg_ctl has just told us
                // no server owns it, so it goes.
                let pid_file = self.data_dir.join("postmaster.pid");
                if pid_file.exists() {
                    tracing::warn!(file = %pid_file.display(), "removing a stale postmaster.pid");
                    fs::remove_file(&pid_file).map_err(ClusterError::io(format!("removing {}", pid_file.display())))?;
                }
                Ok(())
            }
            // Not a data directory pg_ctl can read: `pg_ctl start` says why.
            Status::Unknown => Ok(()),
        }
    }

    fn start_server(&mut self) -> Result<(), ClusterError> {
        let log = self.log_file();
        if fs::metadata(&log).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            let _ = fs::rename(&log, self.data_dir.join(format!("{LOG_FILE}.1")));
        }
        let owner = self.data_dir.join(OWNER_FILE);
        fs::write(&owner, format!("{}\n", std::process::id()))
            .map_err(ClusterError::io(format!("writing {}", owner.display())))?;
        self.wrote_owner = true;
        self.give_to_server(&owner)?;

        let mut start = self.pg_ctl();
        start
            .args(["start", "-w", "-t", &self.timeout.as_secs().max(1).to_string(), "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log);
        self.may_be_running = true;
        let reason = match cmd::run_unchecked(&mut start, self.timeout + Duration::from_secs(10)) {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => cmd::failed(&start, &out).to_string(),
            Err(e) => e.to_string(),
        };
        Err(ClusterError::StartFailed { data_dir: self.data_dir.clone(), reason, log_tail: log_tail(&log), log })
    }

    /// A shell, running as the server's user, that waits for its stdin (a
    /// pipe only we hold) to close. The kernel closes it when this process
    /// exits for any reason, and the shell then stops the server and removes
    /// what a throwaway cluster made. At a normal stop we kill it first.
    fn spawn_watchdog(&mut self) {
        const SCRIPT: &str = r#"trap '' INT HUP TERM QUIT PIPE
read _line
"$1" stop -D "$2" -m fast -w -t 30 >/dev/null 2>&1 || "$1" stop -D "$2" -m immediate -w -t 10 >/dev/null 2>&1
shift 2
[ "$#" -gt 0 ] && rm -rf -- "$@"
exit 0
"#;
        let mut sh = self.server_command(Path::new("/bin/sh"));
        sh.arg("-c").arg(SCRIPT).arg("tally-cluster-watchdog").arg(&self.bins.pg_ctl).arg(&self.data_dir);
        sh.args(&self.remove_on_stop);
        sh.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        match sh.spawn() {
            Ok(child) => self.watchdog = Some(child),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the watchdog; the server outlives a crash of this process")
            }
        }
    }

    /// Stop and clean up, once. Used by [`Cluster::stop`] and `Drop`.
    fn shutdown(&mut self) -> Result<(), ClusterError> {
        if self.shut_down {
            return Ok(());
        }
        self.shut_down = true;
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let mut result = Ok(());
        if self.may_be_running {
            result = self.stop_server();
            if result.is_ok() {
                self.may_be_running = false;
                tracing::info!(data_dir = %self.data_dir.display(), "PostgreSQL cluster stopped");
            }
        }
        // A server we failed to stop keeps the owner file, so the next start
        // sees a dead owner and stops the server then.
        if self.wrote_owner && result.is_ok() {
            let _ = fs::remove_file(self.data_dir.join(OWNER_FILE));
        }
        // Removed even if the stop failed: a server whose data directory is
        // gone notices within a minute and shuts itself down.
        for dir in self.remove_on_stop.drain(..) {
            if let Err(e) = fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a cluster directory");
            }
        }
        self.data_dir_lock = None;
        result
    }

    fn stop_server(&self) -> Result<(), ClusterError> {
        let secs = self.timeout.as_secs().max(1).to_string();
        let mut stop = self.pg_ctl();
        stop.args(["stop", "-m", "fast", "-w", "-t", &secs, "-D"]).arg(&self.data_dir);
        let first = match cmd::run(&mut stop, self.timeout + Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // It may have stopped anyway (or never started): that is success.
        if matches!(self.server_status(), Ok(Status::NotRunning)) {
            return Ok(());
        }
        tracing::warn!(error = %first, "fast shutdown failed; trying immediate shutdown");
        let mut stop = self.pg_ctl();
        stop.args(["stop", "-m", "immediate", "-w", "-t", &secs, "-D"]).arg(&self.data_dir);
        match cmd::run(&mut stop, self.timeout + Duration::from_secs(10)) {
            Ok(_) => Ok(()),
            Err(_) => Err(first),
        }
    }

    fn server_status(&self) -> Result<Status, ClusterError> {
        let mut status = self.pg_ctl();
        status.arg("status").arg("-D").arg(&self.data_dir);
        let out = cmd::run_unchecked(&mut status, SHORT_TIMEOUT)?;
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data dir.
        Ok(match out.status.code() {
            Some(0) => Status::Running,
            Some(3) => Status::NotRunning,
            _ => Status::Unknown,
        })
    }

    fn pg_ctl(&self) -> std::process::Command {
        self.server_command(&self.bins.pg_ctl)
    }

    fn server_command(&self, program: &Path) -> std::process::Command {
        cmd::command(program, self.run_as.as_ref())
    }

    /// Hands a file or directory we made to the server's user, if that is
    /// not us.
    fn give_to_server(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(ClusterError::io(format!(
                "handing {} to user {}",
                path.display(),
                user.name
            )))?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(data_dir = %self.data_dir.display(), error = %e, "could not stop the PostgreSQL cluster");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    NotRunning,
    Unknown,
}

/// Who runs the server programs: us, unless we are root, in which case
/// `user` (PostgreSQL refuses to run as root).
fn server_account(user: &str) -> Result<Option<RunAs>, ClusterError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) if !u.uid.is_root() => Ok(Some(RunAs { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw() })),
        Ok(_) => Err(ClusterError::NoServerUser { user: user.to_owned() }),
        Err(e) => Err(ClusterError::Io { context: format!("looking up user {user}"), source: e.into() }),
    }
}

/// Asks the server's user itself whether it can use `dir`: exact, whatever
/// the parents' modes, ACLs or mounts.
fn check_access(user: &RunAs, dir: &Path) -> Result<(), ClusterError> {
    let mut sh = cmd::command(Path::new("/bin/sh"), Some(user));
    sh.args(["-c", r#"test -d "$1" && test -r "$1" && test -w "$1" && test -x "$1""#, "sh"]).arg(dir);
    let out = cmd::run_unchecked(&mut sh, SHORT_TIMEOUT)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::NotAccessible { user: user.name.clone(), path: dir.to_path_buf() })
    }
}

/// Database names become SQL identifiers and URL path segments; this
/// alphabet needs no quoting rules beyond double quotes.
fn validate_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty() && name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(ClusterError::InvalidDatabaseName { name: name.to_owned() }) }
}

fn mkdir_private(path: &Path) -> Result<(), ClusterError> {
    fs::DirBuilder::new().mode(0o700).create(path).map_err(ClusterError::io(format!("creating {}", path.display())))
}

/// A new directory under `parent`, unique among concurrent clusters in this
/// and other processes (the pid separates processes; a counter, threads).
fn make_private_dir(parent: &Path) -> Result<PathBuf, ClusterError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("tally-pg-{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            // Left by an earlier process that had our pid: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ClusterError::io(format!("creating a directory in {}", parent.display()))(e)),
        }
    }
}

/// The temp dir, unless its path is too long for a socket (macOS's is long),
/// then `/tmp`.
fn socket_parent(port: u16) -> PathBuf {
    let tmp = std::env::temp_dir();
    // Room for "/tally-pg-<pid>-<n>".
    if socket_path_len(&tmp, port) + 30 <= MAX_SOCKET_PATH { tmp } else { PathBuf::from("/tmp") }
}

fn socket_path_len(dir: &Path, port: u16) -> usize {
    dir.as_os_str().len() + format!("/.s.PGSQL.{port}").len()
}

fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    // EPERM means it exists but is someone else's: alive.
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None), Err(nix::errno::Errno::ESRCH))
}

fn read_first_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().next().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty())
}

/// The last lines of the server log, where PostgreSQL says why it stopped.
fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 8 * 1024;
    const MAX_LINES: usize = 40;
    let Ok(mut f) = fs::File::open(path) else {
        return "(no server log was written)".to_owned();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(MAX_LINES)..].join("\n")
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
