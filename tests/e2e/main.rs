//! End-to-end tests: the suite's client stack against real servers with injected faults.
//!
//! * `exactly_once` — a reset after the server recorded a payment: retried with the same key,
//!   replayed by the server, recorded once;
//! * `failover` — an outage of the primary loses nothing, and traffic returns after it;
//! * `breaker` — an open breaker keeps retries off a dead upstream;
//! * `stack` — the full stack against wiremock and the raw-TCP fault server;
//! * `redis` — deduplication across two server instances sharing Redis;
//! * `metrics` — every layer reports through the `metrics` facade;
//! * `one_client` — one hyper client serves retried requests and failover's health probes.
//! * `alerts` — the alert rules in `alerts/`: promtool checks and unit tests, and only metric
//!   names and label values the crates export.

mod alerts;
mod breaker;
mod exactly_once;
mod failover;
mod metrics;
mod one_client;
mod redis;
mod stack;
