//! Capturing what the code under test emits through the `metrics` facade.
//!
//! ```
//! let capture = test_support::metrics::Capture::start();
//! metrics::counter!("retry_attempts_total", "name" => "demo").increment(2);
//! let snap = capture.snapshot();
//! assert_eq!(snap.counter("retry_attempts_total", &[("name", "demo")]), Some(2));
//! ```
//!
//! The recorder is thread-local: use it with a current-thread runtime (the default of
//! `#[tokio::test]`), so every task of the test runs on the capturing thread.

use metrics::{LocalRecorderGuard, SharedString, Unit};
use metrics_util::{
    CompositeKey, MetricKind,
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
};

/// Captures metrics on this thread until dropped.
#[allow(missing_debug_implementations)] // the recorder guard is not Debug
pub struct Capture {
    snapshotter: Snapshotter,
    _guard: LocalRecorderGuard<'static>,
}

impl Capture {
    /// Installs a fresh recorder as this thread's default.
    #[must_use]
    pub fn start() -> Self {
        // Leaked so the guard can borrow it for 'static: a few bytes per test.
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        Self {
            snapshotter: recorder.snapshotter(),
            _guard: metrics::set_default_local_recorder(recorder),
        }
    }

    /// What has been recorded so far (counters are not reset by reading).
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            entries: self.snapshotter.snapshot().into_vec(),
        }
    }
}

/// Runs `f` with a capturing recorder and returns its output and what it recorded.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Snapshot) {
    let capture = Capture::start();
    let out = f();
    let snap = capture.snapshot();
    (out, snap)
}

type Entry = (CompositeKey, Option<Unit>, Option<SharedString>, DebugValue);

/// A set of recorded series.
#[derive(Debug)]
pub struct Snapshot {
    entries: Vec<Entry>,
}

impl Snapshot {
    fn matching<'a>(
        &'a self,
        kind: MetricKind,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.entries.iter().filter_map(move |(key, _, _, value)| {
            let k = key.key();
            let labels_match = labels
                .iter()
                .all(|(ln, lv)| k.labels().any(|l| l.key() == *ln && l.value() == *lv));
            (key.kind() == kind && k.name() == name && labels_match).then_some(value)
        })
    }

    /// The sum of every counter series `name` whose labels include all of `labels`.
    #[must_use]
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let mut found = None;
        for value in self.matching(MetricKind::Counter, name, labels) {
            if let DebugValue::Counter(v) = value {
                *found.get_or_insert(0) += v;
            }
        }
        found
    }

    /// The value of the (last) gauge series `name` whose labels include all of `labels`.
    #[must_use]
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(MetricKind::Gauge, name, labels)
            .filter_map(|v| match v {
                DebugValue::Gauge(g) => Some(g.into_inner()),
                _ => None,
            })
            .last()
    }

    /// Every value recorded into histogram series `name` whose labels include all of `labels`.
    #[must_use]
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(MetricKind::Histogram, name, labels)
            .flat_map(|v| match v {
                DebugValue::Histogram(values) => values.iter().map(|x| x.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// How many values were recorded into histogram series `name` (labels as above).
    #[must_use]
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.histogram(name, labels).len()
    }

    /// How many distinct series named `name` exist (of any kind).
    #[must_use]
    pub fn series_count(&self, name: &str) -> usize {
        self.entries
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_histograms() {
        let ((), snap) = capture(|| {
            metrics::counter!("c", "name" => "a", "outcome" => "x").increment(1);
            metrics::counter!("c", "name" => "a", "outcome" => "y").increment(2);
            metrics::gauge!("g", "name" => "a").set(2.0);
            metrics::histogram!("h", "name" => "a").record(0.5);
        });
        assert_eq!(snap.counter("c", &[("name", "a")]), Some(3));
        assert_eq!(snap.counter("c", &[("outcome", "y")]), Some(2));
        assert_eq!(snap.counter("c", &[("name", "b")]), None);
        assert_eq!(snap.gauge("g", &[]), Some(2.0));
        assert_eq!(snap.histogram("h", &[("name", "a")]), vec![0.5]);
        assert_eq!(snap.series_count("c"), 2);
    }
}
