//! The Redis store: one round trip per claim or replay, Lua compare-and-set for the rest.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use redis::{
    Script, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

use super::{Claim, IdempotencyStore, StoreFuture};
use crate::{
    error::{StoreError, StoreErrorKind},
    key::{FencingToken, Fingerprint, RecordKey},
    record::{CompletedRecord, Outcome},
};

/// Claim-or-read. A free key becomes a claim (`st=p`) with a fencing token derived from the
/// server clock in microseconds (so a key's tokens only grow, even after it expired) and expires
/// with the lease. Otherwise the record is returned as it is.
///
/// `ARGV[3]` is a nonce unique to the `claim` call: when the reply to a claim is lost and the
/// client sends the same command again (the cluster client does, on a dropped connection), the
/// second run finds its own claim and returns it, instead of an in-flight conflict with itself
/// that would refuse the request (and every retry of it) for a whole lease.
const CLAIM: &str = r"
local r = redis.call('HMGET', KEYS[1], 'st', 'fp', 'res', 'n', 'tok')
if not r[1] then
  local t = redis.call('TIME')
  local tok = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'st', 'p', 'tok', tok, 'fp', ARGV[1], 'n', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'c', tok}
end
if r[1] == 'p' then
  if r[4] == ARGV[3] then
    return {'c', r[5]}
  end
  return {'p', r[2], tostring(redis.call('PTTL', KEYS[1]))}
end
return {'d', r[2], r[3]}
";

const RENEW: &str = r"
local r = redis.call('HMGET', KEYS[1], 'st', 'tok')
if r[1] == 'p' and r[2] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

const COMPLETE: &str = r"
local r = redis.call('HMGET', KEYS[1], 'st', 'tok')
if r[1] == 'p' and r[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'st', 'd', 'res', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

const RELEASE: &str = r"
local r = redis.call('HMGET', KEYS[1], 'st', 'tok')
if r[1] == 'p' and r[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Deletes the claim a `claim` call made (`ARGV[1]` is its nonce) if it is still that claim:
/// sent when the call failed or was dropped before its reply, so nobody will run under it.
const ABANDON: &str = r"
local r = redis.call('HMGET', KEYS[1], 'st', 'n')
if r[1] == 'p' and r[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// The default prefix of record keys.
pub const DEFAULT_PREFIX: &str = "idem:";

struct Scripts {
    claim: Script,
    renew: Script,
    complete: Script,
    release: Script,
}

/// A store shared by every server instance that points at one Redis (single server or Redis
/// Cluster), on the `redis` crate's auto-reconnecting connections.
///
/// * A claim or a replay is **one round trip** (a Lua script: claim the free key, or return the
///   record); completion is one more (a Lua compare-and-set on the fencing token). Scripts are
///   sent by SHA (`EVALSHA`) and loaded on first use or after a server restart.
/// * Each record is one Redis hash `<prefix>{<record key>}`: the hash tag keeps everything about
///   a key in one Cluster slot.
/// * Fencing tokens come from the Redis server clock (microseconds), so they grow across claims
///   of the same key even after a record expired.
/// * A claim whose reply never came (the command timed out — Redis stalled — or the connection
///   broke, or the request was dropped while it waited) may still run when Redis gets to it,
///   and nobody would run under it: the store then sends a compare-and-delete on that call's
///   nonce, on the same connection, so it runs right after the claim and frees the key. (Were
///   that lost too, the claim ends with its lease, as a crashed server's does.)
///
/// # Running Redis for it
///
/// The store remembers what Redis keeps, so Redis's durability is the layer's:
///
/// * **Persistence**: a Redis restarted without it comes back empty. Every key completed
///   before the restart executes again when retried; a request running across the restart
///   loses its claim (its renewals and its completion are refused: its outcome is not
///   recorded, and a duplicate may run beside it). Use AOF: `appendonly yes` with
///   `appendfsync everysec` loses at most about a second of records in a crash (`always`
///   loses none, at a cost on every write); RDB snapshots alone lose everything since the
///   last one.
/// * **Memory**: `maxmemory-policy noeviction`. Any evicting policy (`allkeys-lru`,
///   `volatile-ttl`, …) drops records and claims silently — every record here has a TTL — and
///   their keys execute again; with `noeviction` a full Redis refuses the claim, and the
///   layer's outage policy answers (503 by default). Size `maxmemory` for new keys per second
///   × TTL × response size.
/// * **Replication**: it is asynchronous; a replica promoted after its primary failed may lack
///   the last records written, and their keys execute again when retried.
/// * **Timeouts**: [`connect`](RedisStore::connect) gives up on a command after 2 s, so a
///   stalled Redis (a slow script, a long fork) turns into the outage policy rather than a
///   hung request; the claim is then abandoned as above.
///
/// ```no_run
/// # async fn run() -> Result<(), redis::RedisError> {
/// use tower_idempotency::{IdempotencyLayer, RedisStore};
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = IdempotencyLayer::builder().store(store).build().expect("valid config");
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    conn: C,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore<ConnectionManager> {
    /// Connects to one Redis server through a [`ConnectionManager`] that reconnects by itself,
    /// with short timeouts (1 s to connect, 2 s per command) so an outage reaches the layer's
    /// outage policy quickly. For other settings build the connection and use
    /// [`RedisStore::new`].
    ///
    /// # Errors
    /// The URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::new(conn))
    }
}

impl RedisStore<ClusterConnection> {
    /// Connects to a Redis Cluster given some of its nodes.
    ///
    /// # Errors
    /// The URLs are invalid or no node can be reached.
    pub async fn connect_cluster<I, T>(nodes: I) -> Result<Self, redis::RedisError>
    where
        I: IntoIterator<Item = T>,
        T: redis::IntoConnectionInfo,
    {
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            .retries(2)
            .build()?;
        Ok(Self::new(client.get_async_connection().await?))
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store over an existing connection ([`ConnectionManager`], [`ClusterConnection`], or any
    /// cloneable async connection).
    #[must_use]
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            prefix: DEFAULT_PREFIX.into(),
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM),
                renew: Script::new(RENEW),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
            }),
        }
    }

    /// Sets the prefix of record keys (default `idem:`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// The Redis key of a record: `<prefix>{<record key>}`.
    #[must_use]
    pub fn redis_key(&self, key: &RecordKey) -> String {
        format!("{}{{{}}}", self.prefix, key.as_str())
    }
}

fn backend(err: redis::RedisError) -> StoreError {
    StoreError::new(StoreErrorKind::Backend, err)
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, what)
}

/// The longest expiry sent to Redis (about 30 years): `PEXPIRE` refuses a time that overflows
/// its clock, which would turn a `Duration::MAX` ("forever") setting into a store error on every
/// request.
const MAX_EXPIRE_MS: u64 = tower_fault::time::FAR_FUTURE.as_secs() * 1000;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_EXPIRE_MS)
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn fingerprint(value: Option<&Value>) -> Result<Fingerprint, StoreError> {
    let bytes = value
        .and_then(bulk)
        .ok_or_else(|| corrupt("record without fingerprint"))?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| corrupt("fingerprint is not 32 bytes"))?;
    Ok(Fingerprint::from_bytes(array))
}

fn parse_claim(reply: &[Value]) -> Result<Claim, StoreError> {
    let tag = reply
        .first()
        .and_then(bulk)
        .ok_or_else(|| corrupt("empty claim reply"))?;
    match tag {
        b"c" => {
            let token = reply
                .get(1)
                .and_then(bulk)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt("claim without a token"))?;
            Ok(Claim::Acquired(FencingToken::new(token)))
        }
        b"p" => {
            let ttl = reply
                .get(2)
                .and_then(bulk)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis);
            Ok(Claim::InFlight {
                fingerprint: fingerprint(reply.get(1))?,
                lease_remaining: ttl,
            })
        }
        b"d" => {
            let res = reply
                .get(2)
                .and_then(bulk)
                .ok_or_else(|| corrupt("completed record without outcome"))?;
            let outcome = Outcome::decode(Bytes::copy_from_slice(res))
                .map_err(|e| StoreError::new(StoreErrorKind::Corrupt, e))?;
            Ok(Claim::Completed(Arc::new(CompletedRecord {
                fingerprint: fingerprint(reply.get(1))?,
                outcome,
            })))
        }
        _ => Err(corrupt("unknown claim reply")),
    }
}

/// A `claim` call that has not had its reply: dropped armed (the call failed, or its future was
/// dropped while it waited), it abandons the claim the call may have made.
///
/// Holds borrows only, so an answered claim costs nothing; the owned copies a background
/// abandon needs are made on the failure path.
struct Unanswered<'a, C: ConnectionLike + Clone + Send + Sync + 'static> {
    store: &'a RedisStore<C>,
    redis_key: &'a str,
    nonce: &'a str,
    armed: bool,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Drop for Unanswered<'_, C> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "an unanswered idempotency claim was dropped outside a tokio runtime; its key \
                 stays claimed until its lease ends"
            );
            return;
        };
        let mut conn = self.store.conn.clone();
        // `EVAL` with the script's text, not `EVALSHA`: one command, queued on the connection
        // right behind the claim however long Redis takes to get to them (`EVALSHA` answered
        // `NOSCRIPT` would send the script only after that answer, letting other commands —
        // the client's retry — in between). Rare enough that the text's bytes do not matter.
        let mut abandon = redis::cmd("EVAL");
        abandon
            .arg(ABANDON)
            .arg(1)
            .arg(self.redis_key)
            .arg(self.nonce);
        // In the background: the request is answered (503) or gone.
        runtime.spawn(async move {
            let abandoned: redis::RedisResult<i64> = abandon.query_async(&mut conn).await;
            match abandoned {
                Ok(1) => tracing::debug!("unanswered idempotency claim abandoned"),
                Ok(_) => {}
                // Redis is down: whatever the claim did is gone with it or ends with its lease.
                Err(error) if error.is_connection_refusal() => {
                    tracing::debug!(%error, "could not abandon an unanswered idempotency claim");
                }
                Err(error) => tracing::warn!(%error, "could not abandon an unanswered idempotency claim; its key stays claimed until its lease ends"),
            }
        });
    }
}

impl<C> IdempotencyStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let redis_key = self.redis_key(key);
            // Unique per call (see `CLAIM`); a resend of this command carries the same one.
            let nonce = tower_fault::IdempotencyKey::generate();
            let mut unanswered = Unanswered {
                store: self,
                redis_key: &redis_key,
                nonce: nonce.as_str(),
                armed: true,
            };
            let reply: redis::RedisResult<Vec<Value>> = self
                .scripts
                .claim
                .key(&redis_key)
                .arg(&fingerprint.as_bytes()[..])
                .arg(millis(lease))
                .arg(nonce.as_str())
                .invoke_async(&mut conn)
                .await;
            // A refused connection never carried the command; any other failure may have come
            // after Redis got it. A reply ends the matter: it says what the claim did.
            unanswered.armed = matches!(&reply, Err(e) if !e.is_connection_refusal());
            parse_claim(&reply.map_err(backend)?)
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        lease: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let done: i64 = self
                .scripts
                .renew
                .key(self.redis_key(key))
                .arg(token.get().to_string())
                .arg(millis(lease))
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            Ok(done == 1)
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        token: FencingToken,
        record: &'a CompletedRecord,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let done: i64 = self
                .scripts
                .complete
                .key(self.redis_key(key))
                .arg(token.get().to_string())
                .arg(&record.outcome.encode()[..])
                .arg(millis(ttl))
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            Ok(done == 1)
        })
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: FencingToken) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let done: i64 = self
                .scripts
                .release
                .key(self.redis_key(key))
                .arg(token.get().to_string())
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            Ok(done == 1)
        })
    }
}
