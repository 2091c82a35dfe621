//! The shared state machine behind a [`Breaker`](crate::Breaker) handle.
//!
//! The closed path reads one word (state + generation) to admit a call and, to record it,
//! touches the window (one `fetch_add` and one load for a success after a success) plus, on a
//! failure, one counter. Everything that changes state happens under a mutex that only
//! transitions take, so transitions are serialised and their events are published in order.

use std::{
    num::NonZeroU64,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release},
    },
    time::Duration,
};

use tower_fault::{
    Class, SeededRng,
    events::Publisher,
    evidence::{background_rate, required_streak, wilson_lower_bound},
};

use crate::{
    Outcome, State,
    clock::{Timebase, nanos},
    config::Config,
    error::BreakerError,
    events::{Cause, Transition, Transitions},
    guard::FleetGuard,
    state::{half_open, pack, unpack},
    telemetry::{CallResult, Telemetry},
    window::{CALL, FAILURE, SLOW, Window, WindowCounts},
};

const NEVER: u64 = u64::MAX;
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// How a permit's outcome is to be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Closed: recorded in the window, evaluated by the trip rules.
    Tracked,
    /// A half-open probe.
    Probe,
    /// Disabled: recorded in the window and metrics, never trips.
    MetricsOnly,
    /// Forced closed: only counted in metrics.
    Untracked,
}

impl Kind {
    const fn code(self) -> u64 {
        match self {
            Kind::Tracked => 1,
            Kind::Probe => 2,
            Kind::MetricsOnly => 3,
            Kind::Untracked => 4,
        }
    }

    const fn from_code(code: u64) -> Kind {
        match code {
            1 => Kind::Tracked,
            2 => Kind::Probe,
            3 => Kind::MetricsOnly,
            _ => Kind::Untracked,
        }
    }
}

/// The admission ticket of one call (no reference to the breaker: the holder has one).
///
/// Two plain words, so that it travels in registers and `Option<RawPermit>` (niche in the
/// non-zero ticket) stays 16 bytes: the permit is moved through the response future on every
/// call, and a wider struct of mixed-size fields would be copied with stores and loads of
/// different widths, which stalls store-to-load forwarding (a third of the call's time on a
/// multi-threaded runtime).
#[derive(Clone, Copy)]
pub(crate) struct RawPermit {
    /// `generation << 3 | kind code` (codes 1..=4, so never zero).
    ticket: NonZeroU64,
    /// Nanoseconds since the breaker's start at admission; only read when a slow-call rule is
    /// set (0 otherwise: no clock read at admission).
    start: u64,
}

impl RawPermit {
    #[inline]
    fn new(generation: u64, kind: Kind, start: u64) -> Self {
        let ticket = NonZeroU64::new((generation << 3) | kind.code()).unwrap_or(NonZeroU64::MIN);
        Self { ticket, start }
    }

    #[inline]
    fn generation(self) -> u64 {
        self.ticket.get() >> 3
    }

    #[inline]
    fn kind(self) -> Kind {
        Kind::from_code(self.ticket.get() & 0b111)
    }
}

impl std::fmt::Debug for RawPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPermit")
            .field("generation", &self.generation())
            .field("kind", &self.kind())
            .field("start", &self.start)
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) name: Arc<str>,
    cfg: Config,
    window: Window,
    /// What `now_nanos` counts from; every instant below is nanoseconds since its start.
    clock: Timebase,
    /// `generation << 3 | state`.
    state: AtomicU64,
    /// See [`half_open`].
    half_open: AtomicU64,
    /// Nanoseconds since `start` at which an open breaker lets probes through.
    open_until: AtomicU64,
    /// Nanoseconds since `start` at which the breaker went half-open.
    half_open_since: AtomicU64,
    consecutive: AtomicU64,
    /// How many consecutive re-opens the current open duration is for.
    streak: AtomicU64,
    /// Nanoseconds of the last open period (what a decorrelated open backoff grows from).
    last_open: AtomicU64,
    /// When the breaker last closed after having been open ([`NEVER`] if never).
    closed_at: AtomicU64,
    /// Nanoseconds since `start` until which the latest-reaching `Retry-After` of a failure
    /// since the last transition asked to be left alone (0: none). An instant, not a duration:
    /// a hint received long before the trip must not stretch the open period from the trip on.
    retry_hint: AtomicU64,
    rng: AtomicU64,
    /// Taken by transitions only, so they are serialised and their events published in order.
    lock: Mutex<()>,
    /// The transition events' subscribers (published to under `lock`).
    events: Publisher<Transition>,
    telemetry: Telemetry,
    guard: Option<Arc<FleetGuard>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("window", &self.counts())
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn new(
        name: Arc<str>,
        cfg: Config,
        window: Window,
        seed: u64,
        guard: Option<Arc<FleetGuard>>,
        telemetry: Telemetry,
    ) -> Self {
        let clock = Timebase::start(cfg.clock);
        Self {
            telemetry,
            name,
            cfg,
            window,
            clock,
            state: AtomicU64::new(pack(0, State::Closed)),
            half_open: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            half_open_since: AtomicU64::new(0),
            consecutive: AtomicU64::new(0),
            streak: AtomicU64::new(0),
            last_open: AtomicU64::new(0),
            closed_at: AtomicU64::new(NEVER),
            retry_hint: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
            lock: Mutex::new(()),
            events: Publisher::default(),
            guard,
        }
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        self.clock.now_nanos()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn state(&self) -> State {
        unpack(self.state.load(Acquire)).1
    }

    pub(crate) fn counts(&self) -> WindowCounts {
        let now = if self.window.needs_clock() {
            self.now_nanos()
        } else {
            0
        };
        self.settled_snapshot(now).unwrap_or_default()
    }

    /// The window's counts, read again while a count window is momentarily inconsistent
    /// (records racing each other); it settles within a few of them.
    fn settled_snapshot(&self, now: u64) -> Option<WindowCounts> {
        (0..64).find_map(|_| {
            let counts = self.window.snapshot(now);
            if counts.is_none() {
                std::hint::spin_loop();
            }
            counts
        })
    }

    /// Whether the breaker is open and its open period is over: it only waits for a call to
    /// go half-open. Such a breaker of a key nobody calls holds its fleet-guard slot for
    /// nothing, so an idle one may be dropped like an idle closed one.
    pub(crate) fn open_period_over(&self) -> bool {
        self.state() == State::Open && self.now_nanos() >= self.open_until.load(Acquire)
    }

    /// The remaining open time, if the breaker is open.
    pub(crate) fn remaining_open(&self) -> Option<Duration> {
        if self.state() != State::Open {
            return None;
        }
        let until = self.open_until.load(Acquire);
        Some(Duration::from_nanos(until.saturating_sub(self.now_nanos())))
    }

    pub(crate) fn subscribe(&self) -> Transitions {
        self.events.subscribe()
    }

    /// A uniform draw in `[0, 1)` from the breaker's seeded SplitMix64 sequence (lock-free).
    pub(crate) fn random_f64(&self) -> f64 {
        SeededRng::new(self.rng.fetch_add(GOLDEN_GAMMA, Relaxed)).next_f64()
    }

    /// The admission time a slow-call rule needs (one clock read), else 0 without reading it.
    #[inline]
    fn start_time(&self) -> u64 {
        if self.cfg.slow_call_duration.is_some() {
            self.now_nanos()
        } else {
            0
        }
    }

    // ----- admission -------------------------------------------------------------------------

    // `always`: see `Guarded::acquire`.
    #[inline(always)]
    pub(crate) fn try_acquire(&self) -> Result<RawPermit, BreakerError> {
        let word = self.state.load(Acquire);
        let (generation, state) = unpack(word);
        if state == State::Closed {
            return Ok(RawPermit::new(generation, Kind::Tracked, self.start_time()));
        }
        self.acquire_slow(word)
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, mut word: u64) -> Result<RawPermit, BreakerError> {
        // Each pass either answers or follows a transition; a breaker cannot change state more
        // than a few times while one caller looks at it, but bound the loop anyway.
        for _ in 0..16 {
            let (generation, state) = unpack(word);
            let permit = |kind| RawPermit::new(generation, kind, self.start_time());
            match state {
                State::Closed => return Ok(permit(Kind::Tracked)),
                State::ForcedClosed => return Ok(permit(Kind::Untracked)),
                State::Disabled => return Ok(permit(Kind::MetricsOnly)),
                State::ForcedOpen => return Err(self.reject(State::ForcedOpen, None)),
                State::Open => {
                    let now = self.now_nanos();
                    let until = self.open_until.load(Acquire);
                    if now < until {
                        let remaining = Duration::from_nanos(until - now);
                        return Err(self.reject(State::Open, Some(remaining)));
                    }
                    self.open_elapsed(word, now);
                }
                State::HalfOpen => match self.admit_probe(generation) {
                    Ok(()) => return Ok(permit(Kind::Probe)),
                    Err(Full::Stale) => {}
                    Err(Full::Full { in_flight }) => {
                        let timed_out = self.cfg.half_open_timeout.is_some_and(|timeout| {
                            in_flight > 0
                                && self
                                    .now_nanos()
                                    .saturating_sub(self.half_open_since.load(Relaxed))
                                    >= nanos(timeout)
                        });
                        if !timed_out {
                            return Err(self.reject(State::HalfOpen, None));
                        }
                        self.reopen(word, Cause::HalfOpenTimeout, true);
                    }
                },
            }
            word = self.state.load(Acquire);
        }
        let state = unpack(word).1;
        Err(self.reject(state, None))
    }

    fn reject(&self, state: State, retry_after: Option<Duration>) -> BreakerError {
        self.telemetry.call(CallResult::Rejected);
        BreakerError::new(state, retry_after)
    }

    fn admit_probe(&self, generation: u64) -> Result<(), Full> {
        let permits = self.cfg.half_open_permits;
        let mut word = self.half_open.load(Acquire);
        loop {
            if !half_open::generation_matches(word, generation) {
                return Err(Full::Stale);
            }
            if half_open::admitted(word) >= permits {
                return Err(Full::Full {
                    in_flight: half_open::in_flight(word),
                });
            }
            match self
                .half_open
                .compare_exchange_weak(word, word + 1, AcqRel, Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// Ends one probe of the half-open period `generation` with `verdict` (a success or
    /// failure is counted; an ignored probe frees its slot for another one). The half-open word
    /// after it, or `None` if the period is over or the probe was already released.
    fn release_probe(&self, generation: u64, verdict: Probe) -> Option<u64> {
        let mut word = self.half_open.load(Acquire);
        loop {
            if !half_open::generation_matches(word, generation) || half_open::in_flight(word) == 0 {
                return None;
            }
            let next = match verdict {
                Probe::Success => word - 1 + half_open::SUCCESS,
                Probe::Failure => word - 1 + half_open::FAILURE,
                Probe::Ignored => word - 1,
            };
            match self
                .half_open
                .compare_exchange_weak(word, next, AcqRel, Acquire)
            {
                Ok(_) => return Some(next),
                Err(actual) => word = actual,
            }
        }
    }

    // ----- recording -------------------------------------------------------------------------

    /// A permit dropped without an outcome (a cancelled call): frees a probe slot.
    pub(crate) fn release(&self, permit: RawPermit) {
        if permit.kind() == Kind::Probe {
            self.release_probe(permit.generation(), Probe::Ignored);
        }
    }

    /// Records a call's class. The steady closed state (a success of a call admitted while
    /// closed, no slow-call rule) is handled inline here with no clock read for the count window;
    /// everything else goes out of line to [`record_any`](Self::record_any), so the hot path
    /// stays small enough to inline into the response future's `poll` (`always`: see
    /// `Guarded::acquire`).
    #[inline(always)]
    pub(crate) fn record(&self, permit: RawPermit, class: Class) {
        if matches!(class, Class::Success)
            && permit.kind() == Kind::Tracked
            && self.cfg.slow_call_duration.is_none()
        {
            // A call admitted before a transition is counted in metrics only (as in `record_any`).
            let word = self.state.load(Acquire);
            if word == pack(permit.generation(), State::Closed) {
                let (now, moved) = match &self.window {
                    Window::Count(w) => (0, w.record(CALL)),
                    Window::Time(w) => {
                        let now = self.now_nanos();
                        (now, w.record(CALL, now))
                    }
                };
                // A load first: the common case (no failure run to reset) writes nothing.
                if self.consecutive.load(Relaxed) != 0 {
                    self.consecutive.store(0, Relaxed);
                }
                if moved {
                    // The window grew or slid (see `Window::record`): a success can have
                    // brought it to `minimum_calls`, or outlived the successes that kept the
                    // rate down. Rare: only while a count window fills, once per time bucket.
                    self.evaluate(word, now);
                }
            }
            // Last: an opaque call (the metrics recorder's), after which nothing needs reloading.
            self.telemetry.call(CallResult::Success);
            return;
        }
        self.record_any(permit, class);
    }

    #[inline(never)]
    fn record_any(&self, permit: RawPermit, class: Class) {
        let outcome = match class {
            Class::Success => Outcome::Success,
            // An inner layer's refusal (another breaker, failover with no usable endpoint) is
            // that layer's verdict on failures it already counted: counting it here would turn
            // one upstream failure into as many failures as calls the inner layer refuses.
            _ if class.is_local_rejection() => Outcome::Ignored,
            Class::Transient { .. } => Outcome::Failure,
            Class::Permanent => self.cfg.permanent,
        };
        // One clock read per call at most, shared by the slow-call check and the time window
        // (the count window without a slow-call rule reads none).
        let clock = self.cfg.slow_call_duration.is_some() || self.window.needs_clock();
        let now_nanos = if clock { self.now_nanos() } else { 0 };
        let slow = match self.cfg.slow_call_duration {
            Some(limit) if outcome != Outcome::Ignored => {
                now_nanos.saturating_sub(permit.start) >= nanos(limit)
            }
            _ => false,
        };
        self.telemetry.call(match (outcome, slow) {
            (Outcome::Ignored, _) => CallResult::Ignored,
            (Outcome::Failure, _) => CallResult::Failure,
            (Outcome::Success, true) => CallResult::Slow,
            (Outcome::Success, false) => CallResult::Success,
        });
        let generation = permit.generation();
        match permit.kind() {
            Kind::Untracked => {}
            Kind::MetricsOnly => {
                if outcome != Outcome::Ignored
                    && self.state.load(Acquire) == pack(generation, State::Disabled)
                {
                    self.window.record(sample(outcome, slow), now_nanos);
                }
            }
            Kind::Tracked => self.record_closed(generation, outcome, slow, class, now_nanos),
            Kind::Probe => self.record_probe(generation, outcome, slow, class),
        }
    }

    #[inline]
    fn record_closed(&self, generation: u64, outcome: Outcome, slow: bool, class: Class, now: u64) {
        if outcome == Outcome::Ignored {
            return;
        }
        let word = self.state.load(Acquire);
        if word != pack(generation, State::Closed) {
            return; // admitted before a transition: says nothing about the current state
        }
        let moved = self.window.record(sample(outcome, slow), now);
        if outcome == Outcome::Failure {
            self.note_hint(class);
            let run = self.consecutive.fetch_add(1, Relaxed) + 1;
            if self.cfg.consecutive_failures.is_some_and(|limit| {
                run >= u64::from(limit) && self.is_real_streak(run, limit, now)
            }) {
                self.trip(word, Cause::ConsecutiveFailures, None);
                return;
            }
        } else if self.consecutive.load(Relaxed) != 0 {
            self.consecutive.store(0, Relaxed);
        }
        if outcome == Outcome::Failure || slow || moved {
            self.evaluate(word, now);
        }
    }

    /// Whether a run of `run` failures (at least `limit`) is longer than the failures around it
    /// in the window make likely by chance (see [`required_streak`]): at a 40 % background
    /// failure rate, runs of three are common and say nothing about an outage.
    #[cold]
    fn is_real_streak(&self, run: u64, limit: u32, now: u64) -> bool {
        let Some(counts) = self.settled_snapshot(now) else {
            return true;
        };
        if counts.calls.saturating_sub(run) < self.cfg.minimum_calls {
            // Too few other calls to tell noise from an outage: the run as configured decides.
            return true;
        }
        let background = background_rate(counts.failures, counts.calls, run);
        run >= u64::from(required_streak(limit, background))
    }

    /// Whether `part` of `calls` clears `threshold` by the configured confidence (see
    /// [`wilson_lower_bound`]).
    fn clears(&self, part: u64, calls: u64, threshold: f64) -> bool {
        wilson_lower_bound(part, calls, self.cfg.rate_confidence) >= threshold
    }

    fn note_hint(&self, class: Class) {
        if let Some(hint) = class.retry_after()
            && self.cfg.honor_retry_after
        {
            let until = self.now_nanos().saturating_add(nanos(hint));
            self.retry_hint.fetch_max(until, Relaxed);
        }
    }

    #[cold]
    fn evaluate(&self, word: u64, now: u64) {
        // Giving up on an inconsistent read could miss the failure that crossed the threshold.
        let Some(counts) = self.settled_snapshot(now) else {
            return;
        };
        if counts.calls < self.cfg.minimum_calls {
            return;
        }
        if self
            .cfg
            .failure_rate
            .is_some_and(|t| self.clears(counts.failures, counts.calls, t))
        {
            self.trip(word, Cause::FailureRate, Some(counts));
        } else if self
            .cfg
            .slow_call_rate
            .is_some_and(|t| self.clears(counts.slow, counts.calls, t))
        {
            self.trip(word, Cause::SlowCallRate, Some(counts));
        }
    }

    /// Judges a probe. The probes of a half-open period are judged together, like the window:
    /// the breaker re-opens as soon as `half_open_reopen_after` of them failed (the failure-rate
    /// threshold's share of the permits; a slow probe counts as failed, since the upstream is
    /// still slow), and closes as soon as enough succeeded that the rest could not re-open it.
    /// One probe in four failing at random then does not send a recovered upstream back to open.
    fn record_probe(&self, generation: u64, outcome: Outcome, slow: bool, class: Class) {
        let word = pack(generation, State::HalfOpen);
        let verdict = match outcome {
            Outcome::Ignored => Probe::Ignored,
            Outcome::Success if !slow => Probe::Success,
            Outcome::Success | Outcome::Failure => Probe::Failure,
        };
        let Some(probes) = self.release_probe(generation, verdict) else {
            return;
        };
        let reopen_after = self.cfg.half_open_reopen_after;
        match verdict {
            Probe::Ignored => {}
            Probe::Success => {
                let close_after = self.cfg.half_open_permits - reopen_after + 1;
                if half_open::successes(probes) >= close_after {
                    self.close(word);
                }
            }
            Probe::Failure => {
                if outcome == Outcome::Failure {
                    self.note_hint(class);
                }
                if half_open::failures(probes) >= reopen_after {
                    let cause = if slow {
                        Cause::ProbeSlow
                    } else {
                        Cause::ProbeFailed
                    };
                    // The open period grows only when every probe judged failed: a mixed
                    // verdict is an upstream that answers some calls, not one still down, and
                    // growing on it would stretch noise into long outages.
                    self.reopen(word, cause, half_open::successes(probes) == 0);
                }
            }
        }
    }

    // ----- transitions (under the lock) ------------------------------------------------------

    #[cold]
    fn trip(&self, word: u64, cause: Cause, counts: Option<WindowCounts>) {
        let _serialised = self.lock();
        if self.state.load(Acquire) != word {
            return;
        }
        if let Some(guard) = &self.guard
            && !guard.try_open()
        {
            tracing::debug!(
                breaker = %self.name,
                cause = cause.as_str(),
                "circuit breaker would open, but too many breakers of its set are open"
            );
            return;
        }
        let now = self.now_nanos();
        let open_for = self.next_open_duration(now, Streak::FromClosed);
        self.open_until
            .store(now.saturating_add(nanos(open_for)), Release);
        self.transition(word, State::Open, cause, counts, Some(open_for));
    }

    /// Re-opens a half-open breaker; `grow` lengthens the open period (the next step of the
    /// re-open streak) instead of repeating the current one.
    #[cold]
    fn reopen(&self, word: u64, cause: Cause, grow: bool) {
        let _serialised = self.lock();
        if self.state.load(Acquire) != word {
            return;
        }
        let now = self.now_nanos();
        let open_for = self.next_open_duration(now, if grow { Streak::Grow } else { Streak::Keep });
        self.open_until
            .store(now.saturating_add(nanos(open_for)), Release);
        self.transition(word, State::Open, cause, None, Some(open_for));
    }

    #[cold]
    fn open_elapsed(&self, word: u64, now: u64) {
        let _serialised = self.lock();
        if self.state.load(Acquire) != word {
            return;
        }
        let next_generation = unpack(word).0 + 1;
        self.half_open
            .store(half_open::pack(next_generation, 0, 0, 0), Release);
        self.half_open_since.store(now, Relaxed);
        self.retry_hint.store(0, Relaxed);
        self.transition(word, State::HalfOpen, Cause::OpenElapsed, None, None);
    }

    #[cold]
    fn close(&self, word: u64) {
        let _serialised = self.lock();
        if self.state.load(Acquire) != word {
            return;
        }
        self.clear_counts();
        self.closed_at.store(self.now_nanos(), Relaxed);
        self.transition(word, State::Closed, Cause::ProbesSucceeded, None, None);
    }

    fn clear_counts(&self) {
        self.window.clear();
        self.consecutive.store(0, Relaxed);
        self.retry_hint.store(0, Relaxed);
    }

    /// The open duration for the next open: the open backoff's step for the re-open streak,
    /// jittered, and stretched to an upstream's `Retry-After` when that is longer.
    fn next_open_duration(&self, now: u64, step: Streak) -> Duration {
        let cfg = &self.cfg;
        let streak = match step {
            Streak::FromClosed => {
                let closed_at = self.closed_at.load(Relaxed);
                if closed_at == NEVER
                    || now.saturating_sub(closed_at) >= nanos(cfg.backoff_reset_after)
                {
                    0
                } else {
                    self.streak.load(Relaxed) + 1
                }
            }
            Streak::Grow => self.streak.load(Relaxed) + 1,
            Streak::Keep => self.streak.load(Relaxed),
        };
        self.streak.store(streak, Relaxed);
        let max = cfg.open_backoff.max();
        let previous = match streak {
            0 => Duration::ZERO,
            _ => Duration::from_nanos(self.last_open.load(Relaxed)),
        };
        // Step 1 is the first open period of a streak (the curve's base).
        let step = u32::try_from(streak.saturating_add(1)).unwrap_or(u32::MAX);
        let mut rng = SeededRng::new(self.rng.fetch_add(GOLDEN_GAMMA, Relaxed));
        let mut open_for = cfg
            .open_backoff
            .delay(cfg.open_jitter, step, previous, &mut rng);
        let hint = Duration::from_nanos(self.retry_hint.swap(0, Relaxed).saturating_sub(now));
        if hint > open_for {
            open_for = hint.min(max);
        }
        // A floor so an open period is never empty, yet never above the configured maximum.
        let open_for = open_for.max(Duration::from_millis(1).min(max));
        self.last_open.store(nanos(open_for), Relaxed);
        open_for
    }

    /// Moves the state word on (under the transition lock), releases a fleet-guard slot when
    /// the breaker stops ejecting, and reports the transition (metrics, log, events).
    fn transition(
        &self,
        word: u64,
        to: State,
        cause: Cause,
        counts: Option<WindowCounts>,
        open_for: Option<Duration>,
    ) {
        let (generation, from) = unpack(word);
        self.state.store(pack(generation + 1, to), Release);
        if let Some(guard) = &self.guard
            && from.is_ejecting()
            && !to.is_ejecting()
        {
            guard.release();
        }
        self.telemetry.transition(from, to);
        let transition = Transition {
            name: Arc::clone(&self.name),
            from,
            to,
            cause,
            failure_rate: counts.map(|c| c.failure_rate()),
            slow_call_rate: counts.map(|c| c.slow_call_rate()),
            open_for,
        };
        tracing::warn!(
            breaker = %self.name,
            from = from.as_str(),
            to = to.as_str(),
            cause = cause.as_str(),
            failure_rate = transition.failure_rate,
            open_for = ?open_for,
            "circuit breaker state changed"
        );
        self.events.publish(transition);
    }

    // ----- manual control --------------------------------------------------------------------

    pub(crate) fn manual(&self, to: State) {
        let _serialised = self.lock();
        let word = self.state.load(Acquire);
        let from = unpack(word).1;
        if to == State::Closed {
            self.clear_counts();
            self.streak.store(0, Relaxed);
            self.closed_at.store(NEVER, Relaxed);
        }
        if from != to {
            self.transition(word, to, Cause::Manual, None, None);
        } else if to == State::Closed {
            // A reset of a closed breaker: calls admitted before it must not land in the fresh
            // window (every transition discards them the same way), but nothing changed state,
            // so no event.
            let (generation, _) = unpack(word);
            self.state
                .store(pack(generation + 1, State::Closed), Release);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(guard) = &self.guard
            && self.state().is_ejecting()
        {
            guard.release();
        }
    }
}

/// How a probe ended, for the half-open counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Success,
    Failure,
    /// Cancelled, or an outcome that is not recorded: frees the slot, judges nothing.
    Ignored,
}

/// Where the next open period stands in the re-open streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Streak {
    /// Tripped from closed: the streak continues if the breaker closed only recently.
    FromClosed,
    /// Re-opened with evidence the upstream is still down: one step longer.
    Grow,
    /// Re-opened on a mixed verdict: the same length again.
    Keep,
}

enum Full {
    /// The breaker left this half-open period.
    Stale,
    /// Every permit is taken.
    Full { in_flight: u64 },
}

use std::sync::atomic::Ordering::AcqRel;

fn sample(outcome: Outcome, slow: bool) -> u8 {
    let mut s = CALL;
    if outcome == Outcome::Failure {
        s |= FAILURE;
    }
    if slow {
        s |= SLOW;
    }
    s
}
