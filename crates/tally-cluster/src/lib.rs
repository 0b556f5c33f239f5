//! A private PostgreSQL cluster, started from the PostgreSQL installed on the
//! machine.
//!
//! This crate owns the life of that cluster and nothing else: finding the
//! programs ([`find_binaries`]), `initdb` when the data directory is new,
//! `pg_ctl start`/`stop`, the server settings tally wants, making databases,
//! and the connection URLs. `tally serve` uses it when no `DATABASE_URL` is
//! given; the end-to-end tests use a throwaway one when `DATABASE_URL` is
//! unset, with a database per test. It knows nothing of tally's schema.
//!
//! # Access: unix socket only, trust
//!
//! The server has no TCP listener (`listen_addresses = ''`) and its unix
//! socket sits in a directory of mode 0700 owned by the server's user, so
//! only that user (and root) can connect at all. Within that, `trust`
//! authentication is safe, and it spares us generating, storing and passing
//! around a password. The alternative (TCP on 127.0.0.1 with a password)
//! would expose the server to every local user and need a free port, which
//! races between parallel test runs; a socket in a fresh directory cannot
//! collide. `pg_hba.conf` also rejects all TCP, in case TCP is ever enabled.
//!
//! URLs look like `postgres://postgres@localhost:5432/tally?host=/tmp/tally-pg-42-0/s`;
//! sqlx and libpq both read `host=<directory>` as "connect to the socket there".
//!
//! # Root
//!
//! PostgreSQL refuses to run as root. As root, the server programs run as
//! [`ClusterConfig::server_user`] (default `postgres`) through
//! `std::os::unix::process::CommandExt::{uid, gid}`, and the directories we
//! make are handed to that user; client programs (`psql`) run as us. As
//! anyone else, everything runs as us.
//!
//! # Lifetime
//!
//! [`Cluster::stop`] or dropping the [`Cluster`] stops the server. Because
//! `pg_ctl` detaches the server, a killed process would leave it running, so
//! a small watchdog shell stops it when this process exits however it exits
//! (see [`ClusterConfig::stop_with_process`]). If a server is nonetheless
//! found running on the data directory at start, it is stopped when the
//! process that started it is gone, and refused ([`ClusterError::AlreadyRunning`])
//! when that process still lives. A stale `postmaster.pid` is removed.
//!
//! All calls block; wrap them in `spawn_blocking` from async code. Every
//! external command has a deadline and is killed past it.

mod bins;
mod cluster;
mod cmd;
mod config;
mod error;

pub use bins::{BinSearch, PgBins, default_install_dirs, find_binaries};
pub use cluster::{Cluster, SUPERUSER};
pub use config::{ClusterConfig, DataDir, default_data_dir};
pub use error::ClusterError;
