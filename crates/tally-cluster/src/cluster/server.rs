//! The server process on a prepared data directory: `initdb`, our settings
//! file, a leftover server (taken over or refused), `pg_ctl start` and the
//! watchdog, `pg_ctl stop` and cleanup, status, the account the server
//! programs run as, and the server log.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::ClusterError;
use crate::cmd::{self, RunAs};
use crate::config::ClusterConfig;

use super::{Cluster, INCLUDE_LINE, LOG_FILE, LOG_ROTATE_BYTES, OWNER_FILE, SETTINGS_FILE, SHORT_TIMEOUT, SUPERUSER};

impl Cluster {
    pub(super) fn initdb(&self, durable: bool) -> Result<(), ClusterError> {
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

    pub(super) fn write_settings(&self, config: &ClusterConfig) -> Result<(), ClusterError> {
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
    pub(super) fn deal_with_leftover_server(&mut self) -> Result<(), ClusterError> {
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

    pub(super) fn start_server(&mut self) -> Result<(), ClusterError> {
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
    pub(super) fn spawn_watchdog(&mut self) {
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
    pub(super) fn shutdown(&mut self) -> Result<(), ClusterError> {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    NotRunning,
    Unknown,
}

/// Who runs the server programs: us, unless we are root, in which case
/// `user` (PostgreSQL refuses to run as root).
pub(super) fn server_account(user: &str) -> Result<Option<RunAs>, ClusterError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) if !u.uid.is_root() => Ok(Some(RunAs { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw() })),
        Ok(_) => Err(ClusterError::NoServerUser { user: user.to_owned() }),
        Err(e) => Err(ClusterError::Io { context: format!("looking up user {user}"), source: e.into() }),
    }
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
