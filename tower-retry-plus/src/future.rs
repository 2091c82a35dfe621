//! The response future of [`Retry`](crate::Retry).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Buf;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_fault::{
    AttemptContext, BoxError, Class, Classify, IDEMPOTENCY_KEY, IdempotencyKey, SeededRng, SentTo,
    ServedBy,
};
use tower_service::Service;
use tracing::{Span, field};

use crate::{
    ReplayBody, RetryInfo, RetryOutcome,
    error::{AttemptTimedOut, BodyNotReplayable, DeadlineExceeded},
    head::KeptHead,
    layer::Config,
};

/// At most this many bytes of a discarded response are read (while sleeping before the next
/// attempt) so its connection can be reused; a larger body is dropped. Every frame counts as at
/// least one byte, so a body of endless empty frames cannot keep the task spinning.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Frames read from a discarded body per poll, so an endless body cannot hog the task.
const DRAIN_FRAMES_PER_POLL: usize = 32;
/// The granularity of tokio's timers.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Whether an `Idempotency-Key` value is one a server can use (see [`IdempotencyKey::parse`]):
/// an empty or malformed key does not make a non-idempotent request safe to retry.
pub(crate) fn valid_key(value: Option<&[u8]>) -> bool {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| IdempotencyKey::parse_str(v).is_ok())
}

/// `now + d`, saturating instead of panicking on overflow, so `Duration::MAX` (as "no limit")
/// in a deadline, a timeout or a backoff is safe.
fn after(d: Duration) -> Instant {
    tower_fault::time::saturating_after(Instant::now(), d)
}

/// A sleep created on first use and reset after that.
///
/// Boxed on purpose: a `Sleep` is 112 bytes and the happy path (a first attempt answered in its
/// first poll, no attempt timeout) never needs one; inline, two of them would be copied with
/// every move of the response future. A request that does sleep pays one allocation per timer,
/// once.
#[derive(Default)]
struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Fires at `at` (replacing any earlier instant).
    fn arm(&mut self, at: Instant) {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Polls the timer: `Ready` once it fired, `Pending` if it has not or was never armed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    fn fired(&mut self, cx: &mut Context<'_>) -> bool {
        self.poll(cx).is_ready()
    }
}

pin_project! {
    /// The deadline's sleep, created on first use.
    ///
    /// Inline, unlike [`Timer`]: every request whose first attempt is pending (any real network
    /// call) arms it, so a box would be an allocation and a free per request, against copying
    /// 112 more bytes with the response future the few times it moves.
    struct Deadline {
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl Deadline {
    fn new() -> Self {
        Self { sleep: None }
    }

    /// Fires at `at` (replacing any earlier instant).
    fn arm(self: Pin<&mut Self>, at: Instant) {
        let mut sleep = self.project().sleep;
        match sleep.as_mut().as_pin_mut() {
            Some(armed) => armed.reset(at),
            None => sleep.set(Some(tokio::time::sleep_until(at))),
        }
    }

    /// Whether it was armed and has fired.
    fn fired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        self.project()
            .sleep
            .as_pin_mut()
            .is_some_and(|sleep| sleep.poll(cx).is_ready())
    }
}

/// What is kept of a request for its retries.
pub(crate) struct Kept<B> {
    /// The request head as the caller made it.
    head: KeptHead,
    body: ReplayBody<B>,
    /// The context the next attempt carries: built from the endpoints failover reported
    /// ([`ServedBy`]), starting from the caller's own context if it had one (a retry layer
    /// nested in another). Made at the first retry: the happy path never needs it.
    ctx: Option<AttemptContext>,
    /// With an attempt timeout: where each attempt was sent, for the one that times out.
    pub(crate) sent_to: Option<SentTo>,
}

impl<B> Kept<B> {
    pub(crate) fn new(head: KeptHead, body: ReplayBody<B>) -> Self {
        Self {
            head,
            body,
            ctx: None,
            sent_to: None,
        }
    }

    fn ctx(&mut self) -> &mut AttemptContext {
        let head = &self.head;
        self.ctx.get_or_insert_with(|| {
            head.extensions
                .get::<AttemptContext>()
                .cloned()
                .unwrap_or_default()
        })
    }
}

/// The per-request bookkeeping that needs no pinning.
pub(crate) struct Attempts<B, C> {
    config: Arc<Config<C>>,
    /// The request kept for retries (`None` when no retry is possible).
    kept: Option<Kept<B>>,
    attempt: u32,
    max_attempts: u32,
    /// Whether a failure that may have been processed can be retried (idempotent method or an
    /// `Idempotency-Key`); `None`: look for the key in the kept head when it matters.
    retry_maybe_processed: Option<bool>,
    total_delay: Duration,
    last_delay: Duration,
    rng: Option<SeededRng>,
    /// When the deadline passes; `None` until its clock starts (see [`start_deadline`]).
    deadline_at: Option<Instant>,
    drained: usize,
    span: Span,
}

enum Decision {
    Return(RetryOutcome),
    Retry(Duration),
}

/// Counts an attempt and opens its tracing span.
fn attempt_span<C>(config: &Config<C>, attempt: u32, delay: Duration) -> Span {
    config.metrics.attempt();
    // Asked first so that, with no subscriber interested in DEBUG at all, a span costs one
    // atomic load: built and then disabled, it would still format its fields for the `log`
    // crate whenever tracing's `log` feature is on (axum's default `tower-log` turns it on).
    // Filters on the span's name or target still apply: the span's own callsite decides next.
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return Span::none();
    }
    tracing::debug_span!(
        "retry_attempt",
        retry.name = %config.name,
        attempt,
        http.request.resend_count = attempt - 1,
        delay_ms = delay.as_millis() as u64,
        class = field::Empty,
        http.response.status_code = field::Empty,
    )
}

impl<B, C> Attempts<B, C> {
    fn may_retry_processed(&self) -> bool {
        self.retry_maybe_processed.unwrap_or_else(|| {
            self.kept
                .as_ref()
                .is_some_and(|kept| valid_key(kept.head.header_value(&IDEMPOTENCY_KEY)))
        })
    }

    /// Tells the budget a retry was answered (a success or a permanent failure), which earns
    /// further retries; a first attempt's answer earns nothing.
    fn answered(&self) {
        if self.attempt > 1
            && let Some(budget) = &self.config.budget
        {
            budget.record_answered();
        }
    }

    fn decide<ResB>(
        &mut self,
        class: &Class,
        result: Result<&Response<ResB>, &BoxError>,
    ) -> Decision {
        let config = &*self.config;
        match class {
            Class::Success => {
                self.answered();
                return Decision::Return(RetryOutcome::Success);
            }
            Class::Permanent => {
                self.answered();
                return Decision::Return(RetryOutcome::Permanent);
            }
            Class::Transient { .. } => {}
        }
        if class.possibly_processed() && !self.may_retry_processed() {
            return Decision::Return(RetryOutcome::UnsafeMethod);
        }
        if self.attempt >= self.max_attempts {
            return Decision::Return(RetryOutcome::Exhausted);
        }
        match &self.kept {
            Some(kept) if kept.body.is_replayable() => {}
            _ => return Decision::Return(RetryOutcome::NotReplayable),
        }
        let rng = self.rng.get_or_insert_with(|| config.rng());
        let backoff = config
            .backoff
            .delay(config.jitter, self.attempt, self.last_delay, rng);
        let delay = match class.retry_after() {
            // A local layer's hint (a breaker's open time, failover's "no healthy endpoint"):
            // see `RetryLayerBuilder::max_local_rejection_wait`.
            Some(hint) if class.is_local_rejection() => {
                if ServedBy::of(result).is_some() {
                    // One endpoint's own layer refused: its hint is about that endpoint, and
                    // the next attempt goes to another one.
                    backoff
                } else if hint > config.max_local_rejection_wait {
                    return Decision::Return(RetryOutcome::Rejected);
                } else {
                    backoff.max(hint)
                }
            }
            Some(hint) if hint > config.max_retry_after => {
                return Decision::Return(RetryOutcome::Deadline);
            }
            Some(hint) => backoff.max(hint),
            None => backoff,
        };
        if let Some(at) = self.deadline_at {
            // A timer tick of margin: tokio fires timers on millisecond ticks, so a sleep that
            // ends less than a tick before the deadline can fire with it, and the caller would
            // get `DeadlineExceeded` after sleeping instead of the last outcome at once.
            if after(delay.saturating_add(TIMER_TICK)) >= at {
                return Decision::Return(RetryOutcome::Deadline);
            }
        }
        if let Some(budget) = &config.budget
            && !budget.try_withdraw()
        {
            return Decision::Return(RetryOutcome::BudgetExhausted);
        }
        if let Some(kept) = &self.kept {
            // The attempt is given up: a client still sending its body (hyper keeps writing
            // it from the connection task) must not read on while this one sleeps.
            kept.body.fence();
        }
        config.metrics.backoff(delay);
        self.last_delay = delay;
        self.total_delay = self.total_delay.saturating_add(delay);
        Decision::Retry(delay)
    }

    /// Remembers which endpoint the attempt that is about to be retried went to, if an
    /// endpoint selector below (failover) reported it.
    fn note_endpoint<ResB>(&mut self, result: Result<&Response<ResB>, &BoxError>) {
        let Some(kept) = self.kept.as_mut() else {
            return;
        };
        // A timed-out attempt returned nothing; the slot says where it was sent.
        let endpoint = ServedBy::of(result).or_else(|| kept.sent_to.as_ref().and_then(SentTo::get));
        if let Some(endpoint) = endpoint {
            kept.ctx().record_endpoint(endpoint);
        }
    }

    /// The next attempt's request, or `None` if the body stopped being replayable meanwhile
    /// (or the head could not be rebuilt, which only a header value made with `unsafe`, unchecked,
    /// can cause).
    fn next_request(&mut self) -> Option<Request<ReplayBody<B>>> {
        let kept = self.kept.as_mut()?;
        let body = kept.body.try_clone()?;
        let mut head = kept.head.to_parts()?;
        let ctx = kept.ctx();
        ctx.advance();
        let ctx = ctx.clone();
        // Replaces the caller's own context, if it had one.
        head.extensions.insert(ctx);
        if let Some(sent_to) = &kept.sent_to {
            head.extensions.insert(sent_to.clone());
        }
        self.attempt += 1;
        Some(Request::from_parts(head, body))
    }

    /// [`finish`](Self::finish) for a success.
    fn finish_success<ResB>(&self, res: &mut Response<ResB>) {
        self.config.metrics.outcome(RetryOutcome::Success);
        if self.attempt > 1 {
            self.answered();
            self.insert_info(res, RetryOutcome::Success);
        } else {
            // An inner retry layer's info would otherwise speak for this one (no map, no
            // cost on the happy path).
            res.extensions_mut().remove::<RetryInfo>();
        }
    }

    fn insert_info<ResB>(&self, res: &mut Response<ResB>, outcome: RetryOutcome) {
        res.extensions_mut().insert(RetryInfo {
            attempts: self.attempt,
            total_delay: self.total_delay,
            outcome,
        });
    }

    fn finish<ResB>(
        &self,
        mut result: Result<Response<ResB>, BoxError>,
        outcome: RetryOutcome,
    ) -> Result<Response<ResB>, BoxError> {
        self.config.metrics.outcome(outcome);
        if outcome != RetryOutcome::Success {
            tracing::debug!(
                parent: &self.span,
                retry.name = %self.config.name,
                attempts = self.attempt,
                outcome = outcome.as_str(),
                "retry layer gave up"
            );
        }
        // A first attempt's success carries nothing (see `RetryInfo::of`): inserting into an
        // empty extensions map costs three allocations on every happy-path request.
        if (self.attempt > 1 || outcome != RetryOutcome::Success)
            && let Ok(res) = &mut result
        {
            self.insert_info(res, outcome);
        }
        result
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, ResB> {
        // An attempt is in flight.
        Calling { #[pin] future: F },
        // Sleeping before the next attempt, reading what is left of the discarded response.
        Sleeping { #[pin] discarded: Option<ResB> },
        // Waiting for the inner service to be ready for the next attempt.
        Waiting,
        Done,
    }
}

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    pub struct ResponseFuture<S, B, ResB, C>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future, ResB>,
        // The per-attempt timeout, then the backoff sleep; they never overlap.
        timer: Timer,
        #[pin]
        deadline: Deadline,
        service: S,
        attempts: Attempts<B, C>,
    }
}

impl<S, B, ResB, C> fmt::Debug for ResponseFuture<S, B, ResB, C>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempts.attempt)
            .field("max_attempts", &self.attempts.max_attempts)
            .field("total_delay", &self.attempts.total_delay)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResB, C> ResponseFuture<S, B, ResB, C>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// Sends the first attempt and returns the future of the whole request, built in one
    /// piece (the future is large: every intermediate value would be one more copy of it).
    #[inline]
    pub(crate) fn start(
        mut service: S,
        parts: http::request::Parts,
        body: ReplayBody<B>,
        kept: Option<Kept<B>>,
        config: Arc<Config<C>>,
        max_attempts: u32,
        retry_maybe_processed: Option<bool>,
    ) -> Self {
        let mut timer = Timer::default();
        if let Some(timeout) = config.attempt_timeout {
            timer.arm(after(timeout));
        }
        let span = attempt_span(&config, 1, Duration::ZERO);
        let future = {
            let _entered = span.enter();
            service.call(Request::from_parts(parts, body))
        };
        Self {
            state: State::Calling { future },
            timer,
            deadline: Deadline::new(),
            service,
            attempts: Attempts {
                config,
                kept,
                attempt: 1,
                max_attempts,
                retry_maybe_processed,
                total_delay: Duration::ZERO,
                last_delay: Duration::ZERO,
                rng: None,
                deadline_at: None,
                drained: 0,
                span,
            },
        }
    }
}

impl<S, B, ResB, C> Future for ResponseFuture<S, B, ResB, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
    C: Classify<Response<ResB>, S::Error>,
{
    type Output = Result<Response<ResB>, BoxError>;

    /// One request's life: an attempt is in flight (`Calling`), then either its answer is
    /// returned or the layer sleeps (`Sleeping`) and waits for the inner service (`Waiting`)
    /// before the next attempt. Each state's work is a step of its own below; this loop only
    /// moves between them.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let mut polled = {
                        let _entered = this.attempts.span.enter();
                        future.poll(cx)
                    };
                    let mut response_class = None;
                    if let Poll::Ready(Ok(res)) = &mut polled {
                        let class = this.attempts.classify_response(res);
                        if class == Class::Success {
                            // The happy path: the response is answered where the inner future
                            // wrote it, not moved through the retry bookkeeping (each move of
                            // a freshly written response is a visible share of this path).
                            this.attempts.finish_success(res);
                            this.state.set(State::Done);
                            return polled.map_err(Into::into);
                        }
                        response_class = Some(class);
                    }
                    let (class, result) = match polled {
                        // Classified above (every response is); the fallback is unreachable.
                        Poll::Ready(Ok(res)) => {
                            (response_class.unwrap_or(Class::TRANSIENT), Ok(res))
                        }
                        Poll::Ready(Err(err)) => {
                            let class = this.attempts.config.classifier.classify(Err(&err));
                            (class, Err(err.into()))
                        }
                        Poll::Pending => {
                            match this
                                .attempts
                                .in_flight(this.timer, this.deadline.as_mut(), cx)
                            {
                                InFlight::Running => return Poll::Pending,
                                InFlight::DeadlinePassed => {
                                    this.state.set(State::Done);
                                    return Poll::Ready(this.attempts.deadline_exceeded());
                                }
                                InFlight::TimedOut => {
                                    // Cancel the attempt: dropping its future drops its request.
                                    this.state.set(State::Done);
                                    (Class::TRANSIENT, Err(AttemptTimedOut::new().into()))
                                }
                            }
                        }
                    };
                    let next =
                        this.attempts
                            .failed(class, result, this.timer, this.deadline.as_mut());
                    if let Some(polled) = this.state.as_mut().go(next, cx) {
                        return polled;
                    }
                }
                StateProj::Sleeping { mut discarded } => {
                    drain(discarded.as_mut(), &mut this.attempts.drained, cx);
                    ready!(this.timer.poll(cx));
                    this.state.set(State::Waiting);
                }
                StateProj::Waiting => {
                    let sent = this.attempts.send_next(
                        this.service,
                        this.timer,
                        this.deadline.as_mut(),
                        cx,
                    );
                    match ready!(sent) {
                        Ok(future) => this.state.set(State::Calling { future }),
                        Err(output) => {
                            this.state.set(State::Done);
                            return Poll::Ready(output);
                        }
                    }
                }
                StateProj::Done => panic!("retry ResponseFuture polled after completion"),
            }
        }
    }
}

/// The answer of a whole request: what the response future returns.
type Answer<ResB> = Result<Response<ResB>, BoxError>;

/// What an attempt that has not answered yet is up to (see [`Attempts::in_flight`]).
enum InFlight {
    /// Still running: wait for it.
    Running,
    /// The request's deadline passed while it ran.
    DeadlinePassed,
    /// Its own attempt timeout passed.
    TimedOut,
}

/// Where a request goes after an attempt that failed (see [`Attempts::failed`]).
enum Next<ResB> {
    /// Give this to the caller.
    Return(Answer<ResB>),
    /// Sleep before the next attempt (the timer is armed), reading what is left of the
    /// discarded response.
    Sleep(Option<ResB>),
    /// Send the next attempt without sleeping, after yielding to the runtime.
    Yield,
}

impl<F, ResB> State<F, ResB> {
    /// Moves to the state `next` asks for: `Some` is what `poll` returns now, `None` goes on
    /// to the new state.
    fn go(
        mut self: Pin<&mut Self>,
        next: Next<ResB>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Answer<ResB>>> {
        match next {
            Next::Return(output) => {
                self.set(State::Done);
                Some(Poll::Ready(output))
            }
            Next::Sleep(discarded) => {
                self.set(State::Sleeping { discarded });
                None
            }
            Next::Yield => {
                self.set(State::Waiting);
                // Back to the runtime between attempts: with no delay, an inner service that
                // fails at once would otherwise keep this poll (and its worker thread) for
                // every attempt.
                cx.waker().wake_by_ref();
                Some(Poll::Pending)
            }
        }
    }
}

impl<B, C> Attempts<B, C> {
    /// Classifies a response, noting its status and class in the attempt's span.
    #[inline]
    fn classify_response<ResB, E>(&self, res: &Response<ResB>) -> Class
    where
        C: Classify<Response<ResB>, E>,
    {
        let class = self.config.classifier.classify(Ok(res));
        if !self.span.is_disabled() {
            self.span
                .record("http.response.status_code", res.status().as_u16());
            if class == Class::Success {
                self.span.record("class", class.as_str());
            }
        }
        class
    }

    /// The attempt in flight did not answer this poll: starts the deadline's clock and tells
    /// whether the deadline or the attempt timeout has passed.
    fn in_flight(
        &mut self,
        timer: &mut Timer,
        mut deadline: Pin<&mut Deadline>,
        cx: &mut Context<'_>,
    ) -> InFlight {
        start_deadline(self, deadline.as_mut());
        if deadline.fired(cx) {
            InFlight::DeadlinePassed
        } else if self.config.attempt_timeout.is_some() && timer.fired(cx) {
            InFlight::TimedOut
        } else {
            InFlight::Running
        }
    }

    /// The request's answer when its deadline passed with no outcome to return.
    fn deadline_exceeded<ResB>(&self) -> Answer<ResB> {
        self.finish(Err(DeadlineExceeded::new().into()), RetryOutcome::Deadline)
    }

    /// An attempt ended without a success: decides whether to return its outcome or retry,
    /// and prepares the retry (the backoff timer, the endpoint it went to).
    fn failed<ResB>(
        &mut self,
        class: Class,
        result: Result<Response<ResB>, BoxError>,
        timer: &mut Timer,
        deadline: Pin<&mut Deadline>,
    ) -> Next<ResB> {
        if !self.span.is_disabled() {
            self.span.record("class", class.as_str());
        }
        start_deadline(self, deadline);
        let delay = match self.decide(&class, result.as_ref()) {
            Decision::Return(outcome) => return Next::Return(self.finish(result, outcome)),
            Decision::Retry(delay) => delay,
        };
        self.note_endpoint(result.as_ref());
        tracing::debug!(
            parent: &self.span,
            delay_ms = delay.as_millis() as u64,
            "retrying"
        );
        if delay.is_zero() {
            return Next::Yield;
        }
        self.drained = 0;
        timer.arm(after(delay));
        Next::Sleep(result.ok().map(Response::into_body))
    }

    /// Sends the next attempt once the inner service is ready (arming its attempt timeout), or
    /// gives the request's final answer: the deadline passed, the service failed, or the body
    /// can no longer be replayed.
    fn send_next<S, ResB>(
        &mut self,
        service: &mut S,
        timer: &mut Timer,
        deadline: Pin<&mut Deadline>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Future, Answer<ResB>>>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
    {
        if deadline.fired(cx) {
            return Poll::Ready(Err(self.deadline_exceeded()));
        }
        if let Err(err) = ready!(service.poll_ready(cx)) {
            return Poll::Ready(Err(self.finish(Err(err.into()), RetryOutcome::Permanent)));
        }
        let Some(req) = self.next_request() else {
            let err = Err(BodyNotReplayable::new().into());
            return Poll::Ready(Err(self.finish(err, RetryOutcome::NotReplayable)));
        };
        self.span = attempt_span(&self.config, self.attempt, self.last_delay);
        let future = self.span.in_scope(|| service.call(req));
        if let Some(timeout) = self.config.attempt_timeout {
            timer.arm(after(timeout));
        }
        Poll::Ready(Ok(future))
    }
}

/// Starts the deadline's clock, once, if the layer has a deadline: at the first poll that does
/// not answer the request successfully (the first attempt is pending, or it failed).
///
/// Started here rather than when the request is made, so the happy path — a first attempt
/// answered in its first poll — reads no clock and arms no timer for it; in between, the future
/// has only been created, and the first poll starts the clock as soon as it would have been
/// needed.
///
/// A request whose first attempt waits (any real network call) pays for one tokio timer: the
/// `Sleep` (the runtime handle it clones), a clock read, and its entry in the timer wheel,
/// whose registration may wake the runtime's driver (a syscall) when it is the earliest timer
/// — ~740 instructions per request in the end-to-end bench, about what a `tower::timeout`
/// layer pays. It is the price of the default deadline (no request hangs forever);
/// `no_deadline()` removes it.
fn start_deadline<B, C>(attempts: &mut Attempts<B, C>, timer: Pin<&mut Deadline>) {
    if attempts.deadline_at.is_none()
        && let Some(deadline) = attempts.config.deadline
    {
        let at = after(deadline);
        timer.arm(at);
        attempts.deadline_at = Some(at);
    }
}

/// Reads (and drops) what is left of a discarded response, up to [`DRAIN_LIMIT`] bytes (or
/// frames).
fn drain<ResB: Body>(mut body: Pin<&mut Option<ResB>>, drained: &mut usize, cx: &mut Context<'_>) {
    for _ in 0..DRAIN_FRAMES_PER_POLL {
        let Some(inner) = body.as_mut().as_pin_mut() else {
            return;
        };
        match inner.poll_frame(cx) {
            Poll::Pending => return,
            Poll::Ready(Some(Ok(frame))) => {
                *drained += frame.data_ref().map_or(1, |data| data.remaining().max(1));
                if *drained > DRAIN_LIMIT {
                    body.set(None);
                }
            }
            Poll::Ready(None | Some(Err(_))) => body.set(None),
        }
    }
    // Still frames to read: come back for them rather than hogging the task.
    if body.is_some() {
        cx.waker().wake_by_ref();
    }
}
