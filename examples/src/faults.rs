//! A fault injector for the demo's servers: 503s, 429s with `Retry-After`, latency spikes, and
//! connection resets *after* the request was processed.
//!
//! [`FaultLayer`] wraps a server-side service. For every write request (any method but `GET`;
//! health checks and reads pass untouched) it draws one fault from a seeded generator:
//!
//! | fault | what the client sees | processed? |
//! |---|---|---|
//! | unavailable | `503` problem+json | no |
//! | throttled | `429` with `Retry-After` | no |
//! | spike | the real answer, late | yes |
//! | reset after processing | a TCP reset instead of the answer | **yes** |
//!
//! The last one is the fault that turns naive retries into double charges: the payment is
//! recorded, then the connection dies before the client hears about it. Resetting needs control
//! of the connection, so it works under [`crate::server`], which puts a [`ConnHandle`] in every
//! request's extensions; elsewhere that fault is skipped (and counted as `reset_unsupported`).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Method, Request, Response, StatusCode};
use tokio::sync::Notify;
use tower_fault::{SeededRng, body::ResponseBody, problem::Problem};
use tower_layer::Layer;
use tower_service::Service;

/// Shares of each fault among write requests, and their parameters.
///
/// The shares are probabilities; their sum must not exceed 1 ([`FaultPlan::validate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Share of requests answered `503 Service Unavailable` without being processed.
    pub unavailable: f64,
    /// Share of requests answered `429 Too Many Requests` with `Retry-After`.
    pub throttled: f64,
    /// The `Retry-After` of a 429 (whole seconds on the wire, rounded up).
    pub retry_after: Duration,
    /// Share of requests processed, then answered with a connection reset.
    pub reset_after_processing: f64,
    /// Share of requests delayed before being processed.
    pub spike: f64,
    /// The range of a spike's delay.
    pub spike_delay: (Duration, Duration),
    /// Seed of the generator that draws the faults.
    pub seed: u64,
}

impl Default for FaultPlan {
    /// No faults at all.
    fn default() -> Self {
        Self {
            unavailable: 0.0,
            throttled: 0.0,
            retry_after: Duration::from_secs(1),
            reset_after_processing: 0.0,
            spike: 0.0,
            spike_delay: (Duration::from_millis(100), Duration::from_millis(400)),
            seed: 0,
        }
    }
}

/// Why a [`FaultPlan`] is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPlan(String);

impl fmt::Display for InvalidPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid fault plan: {}", self.0)
    }
}

impl std::error::Error for InvalidPlan {}

impl FaultPlan {
    /// The demo's default mix: 5% 503s, 3% 429s, 3% resets after processing, 3% spikes.
    #[must_use]
    pub fn chaos(seed: u64) -> Self {
        Self {
            unavailable: 0.05,
            throttled: 0.03,
            reset_after_processing: 0.03,
            spike: 0.03,
            seed,
            ..Self::default()
        }
    }

    /// `share` of write requests faulted, split like the issue tracker's reports: two fifths
    /// 503s, one fifth each 429s, resets after processing and latency spikes.
    #[must_use]
    pub fn with_share(share: f64, seed: u64) -> Self {
        Self {
            unavailable: share * 0.4,
            throttled: share * 0.2,
            reset_after_processing: share * 0.2,
            spike: share * 0.2,
            seed,
            ..Self::default()
        }
    }

    /// The share of write requests faulted in some way.
    #[must_use]
    pub fn total_share(&self) -> f64 {
        self.unavailable + self.throttled + self.reset_after_processing + self.spike
    }

    /// Checks that every share is in `[0, 1]`, that they sum to at most 1, and that the spike
    /// range is ordered.
    ///
    /// # Errors
    /// [`InvalidPlan`] naming the offending setting.
    pub fn validate(&self) -> Result<(), InvalidPlan> {
        let shares = [
            ("unavailable", self.unavailable),
            ("throttled", self.throttled),
            ("reset_after_processing", self.reset_after_processing),
            ("spike", self.spike),
        ];
        for (name, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err(InvalidPlan(format!(
                    "share `{name}` is {share}, expected a value between 0 and 1"
                )));
            }
        }
        let sum: f64 = shares.iter().map(|(_, s)| s).sum();
        if sum > 1.0 + f64::EPSILON {
            return Err(InvalidPlan(format!(
                "the fault shares add up to {sum:.3}, more than 1"
            )));
        }
        if self.spike_delay.0 > self.spike_delay.1 {
            return Err(InvalidPlan(format!(
                "spike delay range {:?}..{:?} is reversed",
                self.spike_delay.0, self.spike_delay.1
            )));
        }
        Ok(())
    }
}

/// The fault drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass the request through untouched.
    None,
    /// Answer 503 without processing.
    Unavailable,
    /// Answer 429 with `Retry-After` without processing.
    Throttled,
    /// Process, then reset the connection instead of answering.
    ResetAfterProcessing,
    /// Wait this long, then process.
    Spike(Duration),
}

/// How many faults an injector (or a server) has injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// 503s answered.
    pub unavailable: u64,
    /// 429s answered.
    pub throttled: u64,
    /// Connections reset after the request was processed.
    pub reset_after_processing: u64,
    /// Resets drawn where no [`ConnHandle`] was available (answered normally instead).
    pub reset_unsupported: u64,
    /// Requests delayed by a spike.
    pub spikes: u64,
    /// Connections cut because the server went down (outage).
    pub outage_resets: u64,
}

impl FaultCounts {
    /// The sum of every counter.
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.unavailable
            + self.throttled
            + self.reset_after_processing
            + self.reset_unsupported
            + self.spikes
            + self.outage_resets
    }
}

/// Shared fault counters (cloning shares them).
#[derive(Debug, Clone, Default)]
pub struct FaultStats {
    inner: Arc<[AtomicU64; 6]>,
}

impl FaultStats {
    const UNAVAILABLE: usize = 0;
    const THROTTLED: usize = 1;
    const RESET: usize = 2;
    const RESET_UNSUPPORTED: usize = 3;
    const SPIKES: usize = 4;
    const OUTAGE: usize = 5;

    fn bump(&self, slot: usize) {
        self.inner[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn outage_reset(&self) {
        self.bump(Self::OUTAGE);
    }

    /// The counts so far.
    #[must_use]
    pub fn snapshot(&self) -> FaultCounts {
        let get = |slot: usize| self.inner[slot].load(Ordering::Relaxed);
        FaultCounts {
            unavailable: get(Self::UNAVAILABLE),
            throttled: get(Self::THROTTLED),
            reset_after_processing: get(Self::RESET),
            reset_unsupported: get(Self::RESET_UNSUPPORTED),
            spikes: get(Self::SPIKES),
            outage_resets: get(Self::OUTAGE),
        }
    }
}

/// A handle on the connection a request arrived on, inserted in its extensions by
/// [`crate::server`]; [`ConnHandle::reset`] aborts the connection with a TCP RST.
#[derive(Debug, Clone, Default)]
pub struct ConnHandle {
    kill: Arc<Notify>,
}

impl ConnHandle {
    /// A handle not yet attached to a connection.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the connection's task to reset the connection (idempotent).
    pub fn reset(&self) {
        self.kill.notify_one();
    }

    /// Resolves when [`ConnHandle::reset`] has been called.
    pub async fn reset_requested(&self) {
        self.kill.notified().await;
    }
}

/// A [`Layer`] that injects the faults of a [`FaultPlan`]; the generator and the counters are
/// shared by every service it makes.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    plan: Arc<FaultPlan>,
    rng: Arc<Mutex<SeededRng>>,
    stats: FaultStats,
}

impl FaultLayer {
    /// A layer injecting `plan`'s faults.
    ///
    /// # Errors
    /// [`InvalidPlan`] if the plan does not [validate](FaultPlan::validate).
    pub fn new(plan: FaultPlan) -> Result<Self, InvalidPlan> {
        plan.validate()?;
        Ok(Self {
            rng: Arc::new(Mutex::new(SeededRng::new(plan.seed))),
            plan: Arc::new(plan),
            stats: FaultStats::default(),
        })
    }

    /// The counters of the faults injected so far.
    #[must_use]
    pub fn stats(&self) -> FaultStats {
        self.stats.clone()
    }

    fn draw(&self) -> Fault {
        let plan = &*self.plan;
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let mut u = rng.next_f64();
        let mut pick = |share: f64| {
            let hit = u < share;
            u -= share;
            hit
        };
        if pick(plan.unavailable) {
            Fault::Unavailable
        } else if pick(plan.throttled) {
            Fault::Throttled
        } else if pick(plan.reset_after_processing) {
            Fault::ResetAfterProcessing
        } else if pick(plan.spike) {
            Fault::Spike(rng.duration_between(plan.spike_delay.0, plan.spike_delay.1))
        } else {
            Fault::None
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultInjector<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultInjector {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`FaultLayer`].
#[derive(Debug, Clone)]
pub struct FaultInjector<S> {
    inner: S,
    layer: FaultLayer,
}

const UNAVAILABLE: &str = "https://example.dev/problems/injected-unavailable";
const THROTTLED: &str = "https://example.dev/problems/injected-throttled";

impl<S, B, ResB> Service<Request<B>> for FaultInjector<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    // A test fixture, not a hot path: one box per request keeps the fault logic readable.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fault = if req.method() == Method::GET {
            Fault::None
        } else {
            self.layer.draw()
        };
        let stats = self.layer.stats.clone();
        let retry_after = self.layer.plan.retry_after;
        Box::pin(async move {
            match fault {
                Fault::None => {}
                Fault::Unavailable => {
                    stats.bump(FaultStats::UNAVAILABLE);
                    return Ok(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        UNAVAILABLE,
                        "Injected fault: unavailable",
                    )
                    .into_response());
                }
                Fault::Throttled => {
                    stats.bump(FaultStats::THROTTLED);
                    return Ok(Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        THROTTLED,
                        "Injected fault: throttled",
                    )
                    .retry_after(retry_after)
                    .into_response());
                }
                Fault::Spike(delay) => {
                    stats.bump(FaultStats::SPIKES);
                    tokio::time::sleep(delay).await;
                }
                Fault::ResetAfterProcessing => {
                    let Some(conn) = req.extensions().get::<ConnHandle>().cloned() else {
                        stats.bump(FaultStats::RESET_UNSUPPORTED);
                        return inner
                            .call(req)
                            .await
                            .map(|res| res.map(ResponseBody::inner));
                    };
                    // Process for real (the payment is recorded), then never answer: the
                    // connection task resets the socket and drops this future.
                    let _processed = inner.call(req).await?;
                    stats.bump(FaultStats::RESET);
                    conn.reset();
                    return std::future::pending().await;
                }
            }
            inner
                .call(req)
                .await
                .map(|res| res.map(ResponseBody::inner))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    fn echo() -> impl Service<
        Request<()>,
        Response = Response<http_body_util::Empty<bytes::Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        service_fn(|_req: Request<()>| async { Ok(Response::new(http_body_util::Empty::new())) })
    }

    #[test]
    fn validate_rejects_nonsense() {
        let too_much = FaultPlan {
            unavailable: 0.7,
            throttled: 0.7,
            ..FaultPlan::default()
        };
        assert!(
            too_much
                .validate()
                .unwrap_err()
                .to_string()
                .contains("add up to")
        );
        let negative = FaultPlan {
            spike: -0.1,
            ..FaultPlan::default()
        };
        assert!(
            negative
                .validate()
                .unwrap_err()
                .to_string()
                .contains("`spike`")
        );
        let reversed = FaultPlan {
            spike_delay: (Duration::from_secs(2), Duration::from_secs(1)),
            ..FaultPlan::default()
        };
        assert!(FaultLayer::new(reversed).is_err());
        FaultPlan::chaos(1).validate().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shares_are_roughly_respected_and_counted() {
        let layer = FaultLayer::new(FaultPlan {
            unavailable: 0.2,
            throttled: 0.1,
            retry_after: Duration::from_secs(2),
            spike: 0.1,
            seed: 7,
            ..FaultPlan::default()
        })
        .unwrap();
        let svc = ServiceBuilder::new().layer(layer.clone()).service(echo());
        let (mut ok, mut unavailable, mut throttled) = (0, 0, 0);
        for _ in 0..2000 {
            let res = svc
                .clone()
                .oneshot(Request::post("/").body(()).unwrap())
                .await
                .unwrap();
            match res.status().as_u16() {
                200 => ok += 1,
                503 => unavailable += 1,
                429 => {
                    assert_eq!(res.headers()["retry-after"], "2");
                    throttled += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert!((300..500).contains(&unavailable), "{unavailable}");
        assert!((130..270).contains(&throttled), "{throttled}");
        let counts = layer.stats().snapshot();
        assert_eq!(counts.unavailable, unavailable);
        assert_eq!(counts.throttled, throttled);
        assert!((130..270).contains(&counts.spikes), "{counts:?}");
        assert_eq!(ok + unavailable + throttled, 2000);
    }

    #[tokio::test]
    async fn reads_are_never_faulted() {
        let layer = FaultLayer::new(FaultPlan {
            unavailable: 1.0,
            ..FaultPlan::default()
        })
        .unwrap();
        let svc = ServiceBuilder::new().layer(layer.clone()).service(echo());
        let res = svc
            .clone()
            .oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let res = svc
            .oneshot(Request::post("/").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(layer.stats().snapshot().unavailable, 1);
    }

    #[tokio::test]
    async fn reset_processes_then_signals_the_connection() {
        let processed = Arc::new(AtomicU64::new(0));
        let counter = processed.clone();
        let inner = service_fn(move |_req: Request<()>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            }
        });
        let layer = FaultLayer::new(FaultPlan {
            reset_after_processing: 1.0,
            ..FaultPlan::default()
        })
        .unwrap();
        let svc = ServiceBuilder::new().layer(layer.clone()).service(inner);

        // Without a connection handle the fault is skipped and counted as such.
        let res = svc
            .clone()
            .oneshot(Request::post("/").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(layer.stats().snapshot().reset_unsupported, 1);

        let conn = ConnHandle::new();
        let mut req = Request::post("/").body(()).unwrap();
        req.extensions_mut().insert(conn.clone());
        let call = tokio::spawn(svc.oneshot(req));
        tokio::time::timeout(Duration::from_secs(5), conn.reset_requested())
            .await
            .expect("the injector asks for a reset");
        assert_eq!(
            processed.load(Ordering::SeqCst),
            2,
            "processed before the reset"
        );
        assert!(!call.is_finished(), "no answer is ever sent");
        call.abort();
        assert_eq!(layer.stats().snapshot().reset_after_processing, 1);
    }
}
