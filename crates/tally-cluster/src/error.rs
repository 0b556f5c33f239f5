//! The one error type of this crate.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong finding, starting, using or stopping a cluster.
///
/// Each message says what to do about it where there is something to do,
/// because the person reading it ran `tally serve` and did not ask for a
/// database server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No directory with `initdb`, `pg_ctl` and `psql` was found.
    #[error(
        "PostgreSQL is not installed, or its server programs (initdb, pg_ctl) and psql are not where \
         tally looks for them (searched: {}). Install it (Debian/Ubuntu: `apt-get install postgresql`; \
         Fedora/RHEL: `dnf install postgresql-server`; macOS: `brew install postgresql`), put its bin \
         directory on PATH, or set DATABASE_URL to use a PostgreSQL server you already run",
        list_paths(searched)
    )]
    NotInstalled {
        /// Every directory looked in, in order.
        searched: Vec<PathBuf>,
    },

    /// Running as root, and the unprivileged user to run the server as is missing.
    #[error(
        "PostgreSQL refuses to run as root, and the user `{user}` to run it as does not exist; \
         create it (`useradd --system --create-home {user}`) or run tally as a normal user"
    )]
    NoServerUser {
        /// The user name looked up.
        user: String,
    },

    /// The user the server runs as cannot reach a directory it needs.
    #[error(
        "PostgreSQL runs as user `{user}`, which cannot read and write {path}; choose a directory \
         whose parents that user can enter (for example under /var/lib or /tmp)"
    )]
    NotAccessible {
        /// The server's user.
        user: String,
        /// The directory it cannot use.
        path: PathBuf,
    },

    /// A database name outside what this crate accepts.
    #[error("invalid database name {name:?}: use 1 to 63 ASCII letters, digits or underscores")]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },

    /// The unix socket path would exceed what the OS allows.
    #[error("unix socket path {path} is too long ({len} bytes, at most {max}); use a shorter socket directory")]
    SocketPathTooLong {
        /// The full socket file path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A live server already owns the data directory.
    #[error(
        "a PostgreSQL server is already running on {data_dir} ({holder}); stop that process, or stop \
         the server with `pg_ctl stop -D {data_dir}`, or use another data directory",
        data_dir = data_dir.display()
    )]
    AlreadyRunning {
        /// The data directory.
        data_dir: PathBuf,
        /// Who holds it, as far as we can tell.
        holder: String,
    },

    /// `pg_ctl start` failed or timed out.
    #[error(
        "PostgreSQL did not start on {data_dir}: {reason}\n--- last lines of {log} ---\n{log_tail}",
        data_dir = data_dir.display(),
        log = log.display()
    )]
    StartFailed {
        /// The data directory.
        data_dir: PathBuf,
        /// What `pg_ctl` said.
        reason: String,
        /// The server log file.
        log: PathBuf,
        /// The end of the server log, where the server says why.
        log_tail: String,
    },

    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr (or stdout when stderr was empty), trimmed.
        output: String,
    },

    /// An external command ran past its deadline and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The deadline it missed.
        timeout: Duration,
    },

    /// A filesystem or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ClusterError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing: the search was empty".to_owned();
    }
    let mut out = String::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", p.display());
    }
    out
}
