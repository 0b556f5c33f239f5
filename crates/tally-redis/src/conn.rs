//! The connection to Redis and the lock scripts: one multiplexed
//! connection, made on first use and made again after any failure, every
//! call (connecting included) bounded by `call_timeout`.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tally_core::store::{LockError, LockKey};

/// The channel every release in `namespace` is published on (the lock's
/// key as message).
pub(crate) fn released_channel(namespace: &str) -> String {
    format!("{namespace}:released")
}

/// Grants `KEYS[1]` (the lock) to `ARGV[1]` for `ARGV[2]` ms if it is free,
/// and returns the grant's fencing token from `KEYS[2]`, never below the
/// server's clock in microseconds (see the crate docs); 0 if the lock is held.
/// Lua numbers are doubles: exact up to 2^53, far above a clock in µs.
const GRANT: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local token = redis.call('INCR', KEYS[2])
if token < floor then
  redis.call('SET', KEYS[2], string.format('%.0f', floor))
  token = redis.call('GET', KEYS[2])
end
return tonumber(token)
";

/// Frees each of `KEYS` still held by `ARGV[1]`; publishes each freed key
/// on channel `ARGV[3]` when `ARGV[2]` is `1`. Returns how many it freed.
const RELEASE: &str = r"
local freed = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    freed = freed + 1
    if ARGV[2] == '1' then redis.call('PUBLISH', ARGV[3], key) end
  end
end
return freed
";

/// A lock's Redis key in `namespace`. The name sits in a hash tag, so the
/// lock and its fence counter share a key slot.
pub(crate) fn lock_key(namespace: &str, key: &LockKey) -> String {
    format!("{namespace}:lock:{{{}}}", key.name())
}

fn fence_key(namespace: &str, key: &LockKey) -> String {
    format!("{namespace}:fence:{{{}}}", key.name())
}

pub(crate) struct Conn {
    client: redis::Client,
    cached: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    call_timeout: Duration,
    namespace: String,
    grant: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("call_timeout", &self.call_timeout).finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(client: redis::Client, call_timeout: Duration, namespace: String) -> Conn {
        Conn {
            client,
            cached: tokio::sync::Mutex::new(None),
            call_timeout,
            namespace,
            grant: redis::Script::new(GRANT),
            release: redis::Script::new(RELEASE),
        }
    }

    /// The shared connection, made now if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, LockError> {
        let mut cached = self.cached.lock().await;
        if let Some(connection) = cached.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.call_timeout))
            .set_response_timeout(Some(self.call_timeout));
        let made =
            tokio::time::timeout(self.call_timeout, self.client.get_multiplexed_async_connection_with_config(&config))
                .await;
        match made {
            Ok(Ok(connection)) => {
                *cached = Some(connection.clone());
                Ok(connection)
            }
            Ok(Err(error)) => Err(unavailable(&error.to_string())),
            Err(_) => Err(unavailable("connecting timed out")),
        }
    }

    /// Runs one call on the shared connection within `call_timeout`; any
    /// failure drops the connection, so the next call connects afresh.
    async fn call<T, F>(&self, call: impl FnOnce(MultiplexedConnection) -> F) -> Result<T, LockError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        let result = match tokio::time::timeout(self.call_timeout, call(connection)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => unavailable(&error.to_string()),
            Err(_) => unavailable("call timed out"),
        };
        *self.cached.lock().await = None;
        Err(result)
    }

    /// Tries to grant `lock` (the Redis key of `key`) to `owner` for
    /// `lease`: its fencing token, or `None` if another owner holds it.
    pub(crate) async fn grant(
        &self,
        key: &LockKey,
        lock: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<u64>, LockError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let fence = fence_key(&self.namespace, key);
        let token: i64 = self
            .call(|mut connection| async move {
                self.grant.key(lock).key(fence).arg(owner).arg(lease_ms).invoke_async(&mut connection).await
            })
            .await?;
        // Tokens start at the clock in µs, so 0 only ever means "held".
        Ok(u64::try_from(token).ok().filter(|&t| t > 0))
    }

    /// Frees `locks` still held by `owner`.
    pub(crate) async fn release(&self, locks: &[String], owner: &str, publish: bool) -> Result<(), LockError> {
        let publish = if publish { "1" } else { "0" };
        let channel = released_channel(&self.namespace);
        let _freed: i64 = self
            .call(|mut connection| async move {
                let mut invocation = self.release.prepare_invoke();
                for lock in locks {
                    invocation.key(lock);
                }
                invocation.arg(owner).arg(publish).arg(channel).invoke_async(&mut connection).await
            })
            .await?;
        Ok(())
    }

    pub(crate) async fn ping(&self) -> Result<(), LockError> {
        self.call(|mut connection| async move { redis::cmd("PING").query_async::<String>(&mut connection).await })
            .await
            .map(drop)
    }
}

fn unavailable(why: &str) -> LockError {
    tracing::warn!(why, "Redis lock call failed");
    LockError::Unavailable
}
