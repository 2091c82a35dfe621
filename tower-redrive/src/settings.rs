//! [`RedriveSettings`]: what the layer and the worker of one queue must agree on, given once.

use std::{fmt, sync::Arc};

use tower_fault::{HttpClassifier, SeededRng};

use crate::{
    ConfigError,
    clock::{Clock, SystemClock},
    schedule::{Schedule, Scheduler},
};

/// The settings a [`RedriveLayer`](crate::RedriveLayer) and the [`Redriver`](crate::Redriver)
/// of the same queue share: the instance name, how outcomes are classified, the clock, the
/// re-delivery schedule and the jitter's seed.
///
/// Build it once and hand a clone to each: the layer reads the schedule to set a deferred
/// entry's first re-delivery time, the worker to set every later one, and both must classify a
/// failure the same way and agree on what time it is.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use tower_redrive::{RedriveLayer, RedriveSettings, Schedule, SqliteQueue};
///
/// let settings = RedriveSettings::builder()
///     .name("payments")
///     .schedule(Schedule::builder().tier(Duration::from_secs(60), Duration::from_secs(3600)).build()?)
///     .build()?;
/// let queue = Arc::new(SqliteQueue::open_in_memory()?);
/// let layer = RedriveLayer::new(queue.clone(), settings.clone());
/// // ... and `Redriver::builder(queue, client, settings)` for the worker.
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedriveSettings<C = HttpClassifier> {
    name: Arc<str>,
    classifier: C,
    clock: Arc<dyn Clock>,
    schedule: Schedule,
    seed: Option<u64>,
}

impl RedriveSettings {
    /// A builder with the defaults (see each setting).
    #[must_use]
    pub fn builder() -> RedriveSettingsBuilder {
        RedriveSettingsBuilder {
            settings: Self::default(),
        }
    }
}

impl Default for RedriveSettings {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.into(),
            classifier: HttpClassifier::default(),
            clock: Arc::new(SystemClock),
            schedule: Schedule::default(),
            seed: None,
        }
    }
}

/// The instance name when none is given, as in every crate of the suite.
const DEFAULT_NAME: &str = "default";

/// Which of the two random streams a seed feeds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// The layer's: a deferred entry's first re-delivery time.
    Layer = 0,
    /// The worker's: later re-delivery times and its default worker id.
    Worker = 1,
}

impl<C> RedriveSettings<C> {
    /// The instance name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The classifier.
    #[must_use]
    pub const fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The re-delivery schedule.
    #[must_use]
    pub const fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// What the layer or the worker keeps of these settings, with its own random stream.
    pub(crate) fn into_parts(self, stream: Stream) -> Parts<C> {
        let rng = self.seed.map_or_else(SeededRng::from_entropy, |seed| {
            SeededRng::new(seed.wrapping_add(stream as u64))
        });
        Parts {
            name: self.name,
            classifier: self.classifier,
            clock: self.clock,
            scheduler: Scheduler::new(self.schedule, rng),
        }
    }
}

impl<C: Clone> Clone for RedriveSettings<C> {
    fn clone(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            classifier: self.classifier.clone(),
            clock: Arc::clone(&self.clock),
            schedule: self.schedule.clone(),
            seed: self.seed,
        }
    }
}

impl<C> fmt::Debug for RedriveSettings<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedriveSettings")
            .field("name", &self.name)
            .field("clock", &self.clock)
            .field("schedule", &self.schedule)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// Builds [`RedriveSettings`].
pub struct RedriveSettingsBuilder<C = HttpClassifier> {
    settings: RedriveSettings<C>,
}

impl<C> fmt::Debug for RedriveSettingsBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedriveSettingsBuilder")
            .field(&self.settings)
            .finish()
    }
}

impl<C> RedriveSettingsBuilder<C> {
    /// The instance name (default `"default"`): the `name` label of the worker's metrics and
    /// events, and a field of the layer's and the worker's log lines.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Classifies outcomes, the layer's and the worker's deliveries alike (default
    /// [`HttpClassifier`], the suite's shared table: what a retry layer gives up on as
    /// transient is deferred, and a permanent failure is not).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> RedriveSettingsBuilder<C2> {
        let RedriveSettings {
            name,
            classifier: _,
            clock,
            schedule,
            seed,
        } = self.settings;
        RedriveSettingsBuilder {
            settings: RedriveSettings {
                name,
                classifier,
                clock,
                schedule,
                seed,
            },
        }
    }

    /// The clock entries are timed with (default [`SystemClock`]: queue times are wall-clock
    /// times, since entries outlive the process).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings.clock = clock;
        self
    }

    /// When a deferred entry is delivered again, and when it is dead-lettered (default
    /// [`Schedule::default`]: every 10 minutes for an hour, then 5 times a day for 5 days, an
    /// outage long enough to span a weekend and short enough that a person looks at what is
    /// left within a week).
    #[must_use]
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.settings.schedule = schedule;
        self
    }

    /// Seeds the schedule's jitter, for reproducible runs (default: seeded from the process's
    /// entropy, so instances started together do not fire together). The layer draws from
    /// `seed`, the worker from `seed + 1`, so the two do not repeat each other's draws.
    #[must_use]
    pub const fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// An empty name. (A [`Schedule`] is validated when it is built.)
    pub fn build(self) -> Result<RedriveSettings<C>, ConfigError> {
        if self.settings.name.is_empty() {
            return Err(crate::error::config_error("the name must not be empty"));
        }
        Ok(self.settings)
    }
}

/// What the layer or the worker keeps of its [`RedriveSettings`].
pub(crate) struct Parts<C> {
    pub(crate) name: Arc<str>,
    pub(crate) classifier: C,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) scheduler: Scheduler,
}
