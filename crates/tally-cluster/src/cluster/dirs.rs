//! The cluster's directories: the data directory (a throwaway root or the
//! configured one) and its `flock`, the private socket directory, handing
//! what we made to the server's user, and checking that user can enter them.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::ClusterError;
use crate::cmd::{self, RunAs};
use crate::config::{ClusterConfig, DataDir};

use super::{Cluster, MAX_SOCKET_PATH, SHORT_TIMEOUT};

impl Cluster {
    pub(super) fn prepare_dirs(&mut self, config: &ClusterConfig) -> Result<(), ClusterError> {
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

    /// Hands a file or directory we made to the server's user, if that is
    /// not us.
    pub(super) fn give_to_server(&self, path: &Path) -> Result<(), ClusterError> {
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
