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
//! * **Scope**: records are keyed by (principal, key). The default principal is the
//!   `Authorization` header, hashed; requests without one share a single anonymous scope, or get
//!   401 with [`require_principal`](Builder::require_principal). Pick your own with
//!   [`principal`](Builder::principal) (for instance a user id an auth layer put in the
//!   extensions).
//! * **Fingerprint**: SHA-256 over method, path and query, chosen headers (`Content-Type`) and
//!   the body. The same key with another fingerprint gets 422. Request bodies over
//!   `max_request_bytes` (1 MiB) get 413 and the handler does not run.
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
//!   drops the oldest completed records sooner — size it, see its docs). A response body over
//!   `max_response_bytes` (1 MiB) streams through untouched, and one that fails while it is read
//!   (after a status that is not transient: the handler ran) reaches the client as it failed;
//!   both leave a record whose replays get [`problems::NOT_REPLAYABLE`] (409) — never a second
//!   execution.
//! * **Leases and fencing**: a claim has a lease (60 s) renewed every third of it while the
//!   handler runs; if the process dies, the next request executes once it expires. If the
//!   client goes away and the handler future is dropped, the claim is left to expire the same
//!   way (the handler may or may not have had its effect). Completion is a compare-and-set on
//!   the claim's [`FencingToken`], which the handler finds in its request extensions.
//! * **Store outage**: [`OutagePolicy::FailClosed`] (503 + `Retry-After`, the default) or
//!   [`OutagePolicy::FailOpen`] (execute without deduplication, logged and counted).
//!   That policy is about the claim. If the store fails *after* the handler ran — recording
//!   the outcome (`complete`) or releasing the key after a transient outcome (`release`) — the
//!   client gets the handler's response as it is (it did execute, once; an error answer would
//!   invite a retry), the failure is logged and counted as `store_error` (on top of
//!   `executed`), and the key stays claimed until its lease expires: duplicates meanwhile get
//!   409, and one arriving after that executes again (the store could not remember the first
//!   execution). No response is ever marked replayed unless it came from a stored record.
//!
//! Every error answer is an RFC 9457 `application/problem+json` document with a stable `type`
//! (see [`problems`]).
//!
//! # Stores
//!
//! [`MemoryStore`] (the default; bounded, sharded, TTL) for one server instance;
//! [`RedisStore`] (feature `redis`, on by default) for many: a claim or a replay is one round
//! trip, completion one more, on a single server or a Redis Cluster. Implement
//! [`IdempotencyStore`] for anything else.
//!
//! # Observability
//!
//! * `idempotency_requests_total{name,result}` with `result` one of `executed`, `replayed`,
//!   `conflict`, `mismatch`, `missing_key`, `invalid_key`, `missing_principal`, `too_large`
//!   (request over the limit, or a replay of a response that was not kept), `store_error`
//!   (the claim failed, or `complete`/`release` failed after an execution, which then also
//!   counts as `executed`).
//! * `idempotency_store_seconds{name,op}` with `op` one of `claim`, `renew`, `complete`,
//!   `release`.
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
pub use telemetry::{REQUESTS_TOTAL, STORE_SECONDS};
