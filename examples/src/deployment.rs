//! The demo's servers: the payments service twice (primary and standby), each behind a fault
//! injector, both deduplicating with one shared idempotency store and writing one shared
//! ledger — two replicas of one service, as in production.
//!
//! ```text
//! FaultLayer -> IdempotencyLayer -> payments router -> Ledger (shared)
//!                      |
//!                      +--> MemoryStore (shared) or RedisStore (--redis URL)
//! ```

use std::time::Duration;

use tower::ServiceBuilder;
use tower_fault::{BoxError, IdempotencyKey};
use tower_idempotency::{Concurrency, IdempotencyLayer, IdempotencyStore, MemoryStore, RedisStore};

use crate::{
    faults::{FaultCounts, FaultLayer, FaultPlan},
    payments::{Ledger, router},
    server::ChaosServer,
};

/// The `name` label of the servers' idempotency metrics.
pub const IDEMPOTENCY_NAME: &str = "payments";

/// Where the servers keep idempotency records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// One in-process [`MemoryStore`] shared by both servers.
    Memory,
    /// A Redis server (or cluster node) URL; every run uses a fresh key prefix.
    Redis(String),
}

/// Two running servers sharing a ledger and an idempotency store.
#[derive(Debug)]
pub struct Deployment {
    /// The primary (the one with the outage).
    pub primary: ChaosServer,
    /// The standby.
    pub standby: ChaosServer,
    /// The payments both servers recorded.
    pub ledger: Ledger,
    primary_faults: FaultLayer,
    standby_faults: FaultLayer,
}

impl Deployment {
    /// Starts primary and standby, each injecting `plan`'s faults (the standby with another
    /// seed, so the two do not fail in lockstep).
    ///
    /// # Errors
    /// An invalid plan, a listener that could not bind, or a Redis server that cannot be reached.
    pub async fn start(plan: &FaultPlan, store: &StoreChoice) -> Result<Self, BoxError> {
        match store {
            StoreChoice::Memory => {
                Self::start_with(plan, MemoryStore::new(100_000), Ledger::new()).await
            }
            StoreChoice::Redis(url) => {
                let store = RedisStore::connect(url)
                    .await
                    .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?
                    .with_prefix(format!("chaos:{}:", IdempotencyKey::generate().as_str()));
                Self::start_with(plan, store, Ledger::new()).await
            }
        }
    }

    /// Starts primary and standby over a given store and ledger.
    ///
    /// # Errors
    /// An invalid plan or a listener that could not bind.
    pub async fn start_with<St>(
        plan: &FaultPlan,
        store: St,
        ledger: Ledger,
    ) -> Result<Self, BoxError>
    where
        St: IdempotencyStore + Clone,
    {
        let standby_plan = FaultPlan {
            seed: plan.seed.wrapping_add(0x5eed),
            ..plan.clone()
        };
        Self::start_each(plan, &standby_plan, store, ledger).await
    }

    /// Starts primary and standby with a fault plan each.
    ///
    /// # Errors
    /// An invalid plan or a listener that could not bind.
    pub async fn start_each<St>(
        primary_plan: &FaultPlan,
        standby_plan: &FaultPlan,
        store: St,
        ledger: Ledger,
    ) -> Result<Self, BoxError>
    where
        St: IdempotencyStore + Clone,
    {
        let (primary, primary_faults) =
            serve_payments("primary", primary_plan, store.clone(), &ledger).await?;
        let (standby, standby_faults) =
            serve_payments("standby", standby_plan, store, &ledger).await?;
        Ok(Self {
            primary,
            standby,
            ledger,
            primary_faults,
            standby_faults,
        })
    }

    /// The primary's fault counters.
    #[must_use]
    pub fn primary_faults(&self) -> FaultCounts {
        self.primary_faults.stats().snapshot()
    }

    /// The faults both servers injected so far.
    #[must_use]
    pub fn faults(&self) -> FaultCounts {
        let (a, b) = (
            self.primary_faults.stats().snapshot(),
            self.standby_faults.stats().snapshot(),
        );
        FaultCounts {
            unavailable: a.unavailable + b.unavailable,
            throttled: a.throttled + b.throttled,
            reset_after_processing: a.reset_after_processing + b.reset_after_processing,
            reset_unsupported: a.reset_unsupported + b.reset_unsupported,
            spikes: a.spikes + b.spikes,
            outage_resets: a.outage_resets + b.outage_resets,
        }
    }
}

/// One payments server named `name`: `plan`'s faults outside, idempotency over `store` inside,
/// recording into `ledger`. Returns the server and its fault layer (for the counters).
///
/// A duplicate arriving while the first copy is still being processed (a client that timed
/// out an attempt and retried elsewhere) waits for the first and gets its replay.
///
/// # Errors
/// An invalid plan or a listener that could not bind.
pub async fn serve_payments<St>(
    name: &str,
    plan: &FaultPlan,
    store: St,
    ledger: &Ledger,
) -> Result<(ChaosServer, FaultLayer), BoxError>
where
    St: IdempotencyStore + Clone,
{
    let faults = FaultLayer::new(plan.clone())?;
    let idempotency: IdempotencyLayer<St> = IdempotencyLayer::builder()
        .store(store)
        .name(IDEMPOTENCY_NAME)
        .concurrency(Concurrency::Wait {
            max: Duration::from_secs(5),
        })
        .build()?;
    let app = ServiceBuilder::new()
        .layer(faults.clone())
        .layer(idempotency)
        .service(router(name, ledger.clone()));
    let server = ChaosServer::start(app, faults.stats()).await?;
    Ok((server, faults))
}
