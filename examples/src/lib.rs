//! Runnable programs of the tower resilience suite, and the pieces they share.
//!
//! The `chaos` binary is the suite's demo: it starts a payments service twice (primary and
//! standby) behind a fault injector and sends payments through the suite's client stack, then
//! (with `--naive`) through a plain reqwest retry loop, and compares lost and duplicated payments.
//!
//! The modules are the demo's parts, public so the end-to-end suite can reuse them:
//!
//! * [`payments`] — the axum service and its ledger;
//! * [`faults`] — the fault injector (503, 429 + `Retry-After`, spikes, resets after processing);
//! * [`server`] — a loopback server that can reset connections and go down for an outage;
//! * [`deployment`] — primary and standby with a shared idempotency store;
//! * [`stack`] — the suite's client stack over reqwest; [`naive`] — the plain retry loop;
//! * [`load`] — the traffic; [`report`] — the numbers and the table;
//! * [`run`] — one run (scenario, profiles, the two clients); [`matrix`] — the fault-share
//!   matrix;
//! * [`timeline`] — what happened during a run, over time; [`html`] — the report page
//!   (`chaos --report FILE.html`) that draws it.
#![forbid(unsafe_code)]

pub mod deployment;
pub mod faults;
pub mod html;
pub mod load;
pub mod matrix;
pub mod naive;
pub mod payments;
pub mod report;
pub mod run;
pub mod server;
pub mod stack;
pub mod timeline;
