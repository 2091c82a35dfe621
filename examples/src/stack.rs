//! The suite's client stack over reqwest, as the demo and the end-to-end tests use it.
//!
//! ```text
//! RetryLayer "chaos"            retries transient failures, stamps one Idempotency-Key per payment
//!  -> BreakerLayer "chaos-upstream"   stops everything when the whole upstream is failing
//!   -> Failover "chaos"          primary tier, then standby; probes /healthz; ejects on failures
//!      [primary]  BreakerLayer "chaos-primary"  -> ReqwestService
//!      [standby]  BreakerLayer "chaos-standby"  -> ReqwestService
//! ```
//!
//! Every layer reads the same classification (tower-fault's `HttpClassifier`): a 503 or a reset
//! is transient, a 422 permanent, a connect error or an open breaker transient *and not
//! processed*.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_breaker::{Breaker, BreakerLayer, CircuitBreaker, Window, error::BreakerError};
use tower_failover::{Endpoint, Failover, FailoverHandle, HttpProbe, error::NoHealthyEndpoint};
use tower_fault::{BoxError, reqwest::ReqwestService};
use tower_retry_plus::{
    Backoff, Retry, RetryInfo, RetryLayer, RetryOutcome,
    error::{AttemptTimedOut, DeadlineExceeded},
};

use crate::{load::Sent, naive::status_label, payments::Payment};

/// The `name` label of the stack's retry and failover metrics.
pub const NAME: &str = "chaos";

/// The client of one endpoint: its own breaker over a shared reqwest client.
pub type EndpointClient = CircuitBreaker<ReqwestService>;

/// The whole stack's type.
pub type PaymentsStack = Retry<CircuitBreaker<Failover<EndpointClient>>>;

/// Knobs of the stack (the rest are the defaults the demo documents).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// Seed of every jitter generator (retry, breakers, failover).
    pub seed: u64,
    /// Attempts per payment, the first included.
    pub max_attempts: u32,
    /// Time budget of one payment, attempts and waits included.
    pub deadline: Duration,
    /// Time budget of one attempt.
    pub attempt_timeout: Duration,
    /// How often failover probes each endpoint's `/healthz`.
    pub probe_interval: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            seed: 42,
            max_attempts: 8,
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(2),
            probe_interval: Duration::from_millis(200),
        }
    }
}

/// The protected client: the stack, plus handles on its breakers and failover.
#[derive(Debug, Clone)]
pub struct ProtectedClient {
    stack: PaymentsStack,
    failover: FailoverHandle<EndpointClient>,
    breakers: Vec<Breaker>,
}

fn endpoint_breaker(name: &str, seed: u64) -> Result<Breaker, BoxError> {
    Ok(Breaker::builder()
        .name(format!("{NAME}-{name}"))
        .window(Window::count(20))
        .failure_rate_threshold(0.5)
        .minimum_calls(10)
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(500), Duration::from_secs(4))
        .seed(seed)
        .build()?)
}

impl ProtectedClient {
    /// A stack sending to `primary` (e.g. `http://127.0.0.1:8080`) and failing over to `standby`.
    ///
    /// Requests are written with a path only (`/payments`); failover completes the URI.
    ///
    /// # Errors
    /// A configuration the layers reject, or a reqwest client that cannot be built.
    pub fn new(primary: &str, standby: &str, settings: &ClientSettings) -> Result<Self, BoxError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let http = ReqwestService::new(client);
        let primary_breaker = endpoint_breaker("primary", settings.seed)?;
        let standby_breaker = endpoint_breaker("standby", settings.seed.wrapping_add(1))?;
        let upstream = Breaker::builder()
            .name(format!("{NAME}-upstream"))
            .window(Window::time(Duration::from_secs(5)))
            .failure_rate_threshold(0.5)
            .minimum_calls(20)
            .open_duration(Duration::from_millis(250), Duration::from_secs(2))
            .seed(settings.seed.wrapping_add(2))
            .build()?;
        let failover = Failover::builder()
            .name(NAME)
            .tier([Endpoint::new(
                "primary",
                primary,
                primary_breaker.layer().layer(http.clone()),
            )])
            .tier([Endpoint::new(
                "standby",
                standby,
                standby_breaker.layer().layer(http.clone()),
            )])
            .probe(HttpProbe::<_, Full<Bytes>>::shallow(http, "/healthz"))
            .probe_interval(settings.probe_interval)
            .unhealthy_interval(settings.probe_interval)
            .probe_timeout(Duration::from_millis(500))
            .thresholds(2, 2)
            .eject_after(5)
            .ejection_time(Duration::from_millis(250), Duration::from_secs(2))
            .seed(settings.seed.wrapping_add(3))
            .build()?;
        let handle = failover.handle();
        let retry = RetryLayer::builder()
            .name(NAME)
            .max_attempts(settings.max_attempts)
            .backoff(Backoff::exponential(
                Duration::from_millis(20),
                2.0,
                Duration::from_millis(800),
            ))
            .deadline(settings.deadline)
            .attempt_timeout(settings.attempt_timeout)
            .max_retry_after(Duration::from_secs(2))
            .budget_ratio(0.5)
            .idempotency_key(true)
            .seed(settings.seed)
            .build()?;
        let stack = ServiceBuilder::new()
            .layer(retry)
            .layer(BreakerLayer::new(upstream.clone()))
            .service(failover);
        Ok(Self {
            stack,
            failover: handle,
            breakers: vec![upstream, primary_breaker, standby_breaker],
        })
    }

    /// The stack, to call directly.
    #[must_use]
    pub fn stack(&self) -> PaymentsStack {
        self.stack.clone()
    }

    /// The failover's handle (endpoint health, events).
    #[must_use]
    pub const fn failover(&self) -> &FailoverHandle<EndpointClient> {
        &self.failover
    }

    /// The breakers: upstream, primary, standby.
    #[must_use]
    pub fn breakers(&self) -> &[Breaker] {
        &self.breakers
    }

    /// Sends one payment through the stack.
    pub async fn send(&self, payment: &Payment) -> Sent {
        let body = serde_json::to_vec(payment).expect("a payment serializes");
        let req = Request::post("/payments")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        match self.stack.clone().oneshot(req).await {
            Ok(res) => {
                let info = RetryInfo::of(&res);
                let status = res.status();
                // Read the body so the connection goes back to the pool.
                let _ = res.into_body().collect().await;
                let attempts = Some(info.attempts);
                if status.is_success() {
                    return Sent::ok(attempts);
                }
                let label = status_label(status);
                match info.outcome {
                    RetryOutcome::Success | RetryOutcome::Permanent => {
                        Sent::failed(label, attempts)
                    }
                    outcome => {
                        Sent::failed(format!("gave up ({}): {label}", outcome.as_str()), attempts)
                    }
                }
            }
            Err(err) => Sent::failed(error_label(err.as_ref()), None),
        }
    }
}

/// A short label for an error the stack returned.
#[must_use]
pub fn error_label(err: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    // Anywhere in the chain: an endpoint's breaker error comes wrapped in failover's
    // `EndpointError`.
    let err: &(dyn std::error::Error + 'static) = err;
    if tower_fault::find::<BreakerError>(err).is_some() {
        return "breaker open".to_owned();
    }
    if tower_fault::find::<NoHealthyEndpoint>(err).is_some() {
        return "no healthy endpoint".to_owned();
    }
    if tower_fault::find::<DeadlineExceeded>(err).is_some() {
        return "deadline exceeded".to_owned();
    }
    if tower_fault::find::<AttemptTimedOut>(err).is_some() {
        return "attempt timed out".to_owned();
    }
    format!("error: {}", tower_fault::inspect(err).kind.as_str())
}
