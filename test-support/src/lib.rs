//! Test fixtures shared by the suite's crates (not published).
//!
//! * [`fault`] — a raw-TCP HTTP/1.1 server scriptable per request: statuses, resets (RST),
//!   closes, truncated responses, hangs, refused connections; it counts and records what it got.
//! * [`redis`] — a real `redis-server` (or `REDIS_URL`) on a free loopback port, and a local
//!   3-node Redis Cluster.
//! * [`postgres`] — a real PostgreSQL server for the redrive queue.
//! * [`metrics`] — capture `metrics` emitted by the code under test.
//! * [`chromium`] — headless Chromium screenshots of a page, decoded for pixel checks.
//! * [`prometheus`] — `promtool` for alert rules, and a real Prometheus server scraping a test's
//!   targets.
#![forbid(unsafe_code)]

pub mod chromium;
pub mod fault;
pub mod metrics;
pub mod postgres;
pub mod prometheus;
pub mod redis;

mod process;
