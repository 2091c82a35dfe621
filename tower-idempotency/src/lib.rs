//! Server-side `Idempotency-Key` deduplication for tower and axum: each keyed request executes
//! once, on one server or many; duplicates get the recorded response.
//!
//! ```
//! use axum::{Router, routing::post};
//! use tower_idempotency::IdempotencyLayer;
//!
//! # async fn demo() {
//! let app: Router = Router::new()
//!     .route("/payments", post(|| async { "charged" }))
//!     .layer(IdempotencyLayer::memory());
//! # let _ = app;
//! # }
//! ```
//!
//! # Behaviour (the IETF Idempotency-Key draft, then beyond it)
//!
//! * **Key**: the `Idempotency-Key` header (configurable), an RFC 8941 sf-string or a bare
//!   token of 1–255 printable ASCII characters, on POST and PATCH (configurable). A request
//!   without a key passes through (`missing_key`) or gets 400 with
//!   [`require_key`](Builder::require_key); an invalid key, or two key headers, get 400.
//! * **Who may see a record**: a stored response is never replayed to another caller.
//!   - With the app's own principal ([`principal`](Builder::principal), for instance the user
//!     id an authentication layer put in the request's extensions), records are keyed by
//!     (principal, key): each principal has its keys to itself, and its retries get their
//!     replay whatever credentials they carry (a refreshed token, a changed cookie jar). This
//!     is the recommended setup.
//!   - Without one (the default), records are keyed by the key alone and **bound to the
//!     caller's credentials**: the `Authorization`, `Proxy-Authorization` and `Cookie` headers
//!     ([`credential_headers`](Builder::credential_headers)) are part of the fingerprint. A
//!     request with other credentials — another user reusing the key, or the same user whose
//!     credentials changed between an attempt and its retry — is refused with 422, never
//!     replayed the first caller's response and never run again. The trade-off: such an
//!     honest retry gets 422 instead of its replay, and two callers who pick the same key
//!     (keys should be random, e.g. UUIDs) refuse each other until the record expires. Keying
//!     by the credentials instead would run that retry a second time.
//!   - [`require_principal`](Builder::require_principal) answers 401 to a request without a
//!     principal (without [`principal`](Builder::principal): without any credential header).
//!     [`authorization_principal`] keys records by the raw `Authorization` header, for APIs
//!     where it is a stable per-caller credential.
//! * **Fingerprint**: SHA-256 over method, path and query, chosen headers (`Content-Type`),
//!   the credentials (without a principal, see above) and the body. The same key with another
//!   fingerprint gets 422. Request bodies over `max_request_bytes` (1 MiB) get 413 and the
//!   handler does not run.
//! * **In flight**: the first request claims the key atomically. A duplicate gets 409 with
//!   `Retry-After`, or with [`Concurrency::Wait`] waits (woken on the same server, polling with
//!   backoff across servers) and gets the replay.
//! * **Replay**: status, headers (every value of multi-valued headers), body and trailers, plus
//!   `Idempotent-Replayed: true`. `Set-Cookie`, authentication and hop-by-hop headers are never
//!   replayed. The first response reaches its client with its trailers intact (the layer buffers
//!   the body to store it, then hands on the body and the trailers).
//! * **What is kept**: outcomes the [`HttpClassifier`](tower_fault::HttpClassifier) calls
//!   `Transient` (5xx, 408, 429) and inner-service errors release the key, so the client's
//!   retry executes again; everything else is kept for the TTL (24 h; a full [`MemoryStore`]
//!   drops the completed records closest to expiry sooner — it is bounded by records and by
//!   bytes, see its docs). A response body over `max_response_bytes` (1 MiB) streams through
//!   untouched, one still unfinished `response_body_timeout` (60 s) after the handler answered
//!   streams on as it comes, and one that fails while it is read (after a status that is not
//!   transient: the handler ran) reaches the client as it failed; all three leave a record
//!   whose replays get [`problems::NOT_REPLAYABLE`] (409) — never a second execution.
//! * **A client that goes away**: once the handler has answered, its outcome is recorded
//!   whatever the client does — if the client closes its connection while the layer reads the
//!   response body, the layer finishes reading and storing it in a background task, and the
//!   client's retry gets the replay. A client that goes away while the handler runs cancels
//!   it, as it would without the layer; the claim then ends with its lease (the handler may or
//!   may not have had its effect).
//! * **Leases and fencing**: a claim has a lease (60 s) renewed every third of it while the
//!   handler runs and while its body is read; if the process dies, the next request executes
//!   once it expires. Completion is a compare-and-set on the claim's [`FencingToken`], which
//!   the handler finds in its request extensions.
//! * **Store outage**: [`OutagePolicy::FailClosed`] (503 + `Retry-After`, the default) or
//!   [`OutagePolicy::FailOpen`] (execute without deduplication, logged and counted).
//!   That policy is about the claim. A claim the layer gave up on (the store timed out, or the
//!   client left while it waited) does not hold its key: [`RedisStore`] deletes the claim such
//!   a call may still have made when Redis gets to it, so the client's retry executes as soon
//!   as Redis is back. If the store fails *after* the handler ran — recording
//!   the outcome (`complete`) or releasing the key after a transient outcome (`release`) — the
//!   client gets the handler's response as it is (it did execute, once; an error answer would
//!   invite a retry), the failure is logged and counted as `store_error` (on top of
//!   `executed`), and the key stays claimed until its lease expires: duplicates meanwhile get
//!   409, and one arriving after that executes again (the store could not remember the first
//!   execution). No response is ever marked replayed unless it came from a stored record.
//! * **A full memory store**: a [`MemoryStore`] full of live claims (every slot or byte held by
//!   a request still running) refuses the next claim rather than evict one: the outage policy
//!   applies (503 by default), counted as `store_full`.
//!
//! Every error answer is an RFC 9457 `application/problem+json` document with a stable `type`
//! (see [`problems`]).
//!
//! # Stores
//!
//! [`MemoryStore`] (the default; sharded, TTL, bounded by 100 000 records and 256 MiB) for one
//! server instance; [`RedisStore`] (feature `redis`, on by default) for many: a claim or a
//! replay is one round trip, completion one more, on a single server or a Redis Cluster.
//! Implement [`IdempotencyStore`] for anything else.
//!
//! What Redis keeps is what the layer remembers. A Redis restarted without persistence has
//! lost every record: keys completed before the restart execute again when retried, and a
//! request running across the restart loses its claim (a duplicate may then run beside it;
//! its own outcome is not recorded). Run it with AOF (`appendonly yes`, `appendfsync
//! everysec`: a crash loses about a second of records) and `maxmemory-policy noeviction` (an
//! evicting policy drops records and claims silently, and their keys execute again; with
//! `noeviction` a full Redis refuses the claim and the outage policy answers). A replica
//! promoted after a failover may lack the last records written to its primary (replication is
//! asynchronous). See [`RedisStore`].
//!
//! # Observability
//!
//! With the default `metrics` feature (names, label values and help text in [`metrics`]):
//!
//! * `idempotency_requests_total{name,result}` with `result` one of `executed`, `replayed`,
//!   `conflict`, `mismatch`, `missing_key`, `invalid_key`, `missing_principal`, `too_large`
//!   (request over the limit, or a replay of a response that was not kept because of its
//!   size), `not_replayable` (a replay of a response whose body failed or did not end in
//!   time), `store_error` (the claim failed, or `complete`/`release` failed after an
//!   execution, which then also counts as `executed`), `store_full` (a [`MemoryStore`] full of
//!   live claims refused the claim).
//! * `idempotency_store_seconds{name,op}` with `op` one of `claim`, `renew`, `complete`,
//!   `release`.
//! * `idempotency_memory_evictions_total`: completed records a [`MemoryStore`] dropped before
//!   their TTL to stay within its bounds.
//! * `tracing`: replays at DEBUG, conflicts and mismatches at INFO, store failures at
//!   WARN/ERROR; keys appear only as a prefix of their digest.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
mod config;
mod detach;
pub mod error;
mod flow;
pub mod future;
mod key;
mod layer;
pub mod metrics;
pub mod problems;
pub mod record;
mod service;
pub mod store;
mod telemetry;
mod waiters;

pub use config::{
    Builder, Concurrency, DEFAULT_CREDENTIAL_HEADERS, DEFAULT_LEASE, DEFAULT_MAX_BYTES,
    DEFAULT_RESPONSE_BODY_TIMEOUT, DEFAULT_TTL, OutagePolicy,
};
pub use flow::REPLAYED_HEADER;
pub use key::{FencingToken, Fingerprint, RecordKey, Scope, authorization_principal};
pub use layer::IdempotencyLayer;
pub use service::Idempotency;
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{IdempotencyStore, MemoryStore};
