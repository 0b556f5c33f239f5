//! How a busy key is waited for: the spin flavour's backoff, and the pub/sub
//! flavour's release messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::RedisLockConfig;
use crate::conn::released_channel;

/// Capped exponential backoff with full jitter: the n-th pause is drawn
/// from `[0, min(backoff_max, backoff_min · 2ⁿ)]`, so waiters that collided
/// once spread out instead of colliding again in step.
pub(crate) struct Backoff {
    ceiling: Duration,
    max: Duration,
    state: u64,
}

impl Backoff {
    pub(crate) fn new(config: &RedisLockConfig) -> Backoff {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| u64::from(d.subsec_nanos()));
        Backoff { ceiling: config.backoff_min, max: config.backoff_max, state: seed | 1 }
    }

    pub(crate) fn next(&mut self) -> Duration {
        // xorshift64: jitter needs spread, not unpredictability.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let ceiling_us = u64::try_from(self.ceiling.as_micros()).unwrap_or(u64::MAX).max(1);
        let pause = Duration::from_micros(self.state % (ceiling_us + 1));
        self.ceiling = (self.ceiling * 2).min(self.max);
        pause
    }
}

/// How many release messages a slow waiter may fall behind before it
/// skips some (it then simply tries again).
const RELEASES_BUFFERED: usize = 4_096;

/// The release messages of every lock, from one subscription per lock
/// manager (a task that reconnects after a failure), fanned out to the
/// waiters in this process.
#[derive(Debug)]
pub(crate) struct Releases {
    sender: broadcast::Sender<String>,
    task: JoinHandle<()>,
}

impl Releases {
    pub(crate) fn start(client: redis::Client, config: &RedisLockConfig) -> Releases {
        let (sender, _) = broadcast::channel(RELEASES_BUFFERED);
        let channel = released_channel(&config.namespace);
        let task = tokio::spawn(subscribe(client, channel, sender.clone(), config.call_timeout));
        Releases { sender, task }
    }

    pub(crate) fn subscribe(&self) -> Waiter {
        Waiter { receiver: self.sender.subscribe() }
    }
}

impl Drop for Releases {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps a subscription to the release channel, forever: the fallback poll
/// covers the gaps while it reconnects.
async fn subscribe(client: redis::Client, channel: String, sender: broadcast::Sender<String>, call_timeout: Duration) {
    loop {
        let connected = tokio::time::timeout(call_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match connected {
            Ok(Ok(pubsub)) => {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(lock) = message.get_payload::<String>() {
                        // No waiter at all is fine.
                        let _ = sender.send(lock);
                    }
                }
                tracing::warn!("the Redis release subscription ended; subscribing again");
            }
            Ok(Err(error)) => tracing::warn!(%error, "subscribing to Redis releases failed"),
            Err(_) => tracing::warn!("subscribing to Redis releases timed out"),
        }
        tokio::time::sleep(call_timeout).await;
    }
}

/// One waiter's view of the release messages.
pub(crate) struct Waiter {
    receiver: broadcast::Receiver<String>,
}

impl Waiter {
    /// Returns when `lock` is released, when messages were missed (the
    /// caller tries again either way), or at `until`.
    pub(crate) async fn wait(&mut self, lock: &str, until: Instant) {
        let released = async {
            loop {
                match self.receiver.recv().await {
                    Ok(released) if released == lock => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let _ = tokio::time::timeout_at(until, released).await;
    }
}
