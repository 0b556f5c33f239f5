//! Releasing a grant when its guard drops, and waiting for it there.
//!
//! The locks must be free once the guard is gone, as an in-process lock's
//! are: the next request (a replay of the same key, which probes its key
//! without waiting; a sweeper, which never waits) must not find them still
//! held. A `Drop` cannot await, and lending a runtime worker to a nested
//! `block_on` (`block_in_place`) starves the runtime of workers under a
//! burst of drops (each takes a thread of the blocking pool). So releases
//! go to one thread of their own, with its own runtime and connection, and
//! the dropping thread waits for the answer, at most `call_timeout` and a
//! little: a Redis round trip, as any synchronous call would block.

use std::sync::mpsc;
use std::time::Duration;

use crate::conn::Conn;

/// How much longer than one call the dropping thread waits.
const SLACK: Duration = Duration::from_millis(100);

struct Release {
    locks: Vec<String>,
    owner: String,
    done: mpsc::SyncSender<()>,
}

#[derive(Debug)]
pub(crate) struct Releaser {
    jobs: mpsc::Sender<Release>,
    wait: Duration,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release").field("locks", &self.locks).finish_non_exhaustive()
    }
}

impl Releaser {
    /// The release thread; it ends when the lock manager is dropped.
    pub(crate) fn start(conn: Conn, publish: bool, call_timeout: Duration) -> std::io::Result<Releaser> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (jobs, queue) = mpsc::channel::<Release>();
        std::thread::Builder::new().name("tally-redis-release".into()).spawn(move || {
            while let Ok(job) = queue.recv() {
                if let Err(error) = runtime.block_on(conn.release(&job.locks, &job.owner, publish)) {
                    tracing::debug!(?error, "releasing Redis locks failed; their leases will expire");
                }
                // The dropper may have stopped waiting.
                let _ = job.done.try_send(());
            }
        })?;
        Ok(Releaser { jobs, wait: call_timeout + SLACK })
    }

    /// Frees `locks` still held by `owner`; returns once done, or once the
    /// wait is over (the leases then expire by themselves).
    pub(crate) fn release(&self, locks: Vec<String>, owner: String) {
        let (done, finished) = mpsc::sync_channel(1);
        if self.jobs.send(Release { locks, owner, done }).is_ok() {
            let _ = finished.recv_timeout(self.wait);
        }
    }
}
