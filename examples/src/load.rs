//! The demo's traffic: a reproducible list of payments, sent with bounded concurrency at a
//! bounded rate, each outcome timed.

use std::{future::Future, sync::Arc, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::{
    sync::Semaphore,
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};
use tower_fault::SeededRng;

use crate::payments::Payment;

/// How to send the payments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadPlan {
    /// At most this many payments in flight.
    pub concurrency: usize,
    /// At most this many payments started per second (`None`: as fast as concurrency allows).
    pub rate: Option<f64>,
}

/// What a client reports for one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `None` if the payment succeeded, else why it failed (a short stable label).
    pub failure: Option<String>,
    /// How many attempts the client made, if it counts them itself.
    pub attempts: Option<u32>,
    /// The live path failed and the payment was queued for re-drive (`failure` is then
    /// [`Sent::DEFERRED`]).
    pub deferred: bool,
    /// The server named on the receipt of a success (on a replayed answer, the server that
    /// recorded the payment).
    pub server: Option<String>,
}

impl Sent {
    /// The failure label of a deferred payment.
    pub const DEFERRED: &str = "deferred (queued for re-drive)";

    /// A success after `attempts` attempts.
    #[must_use]
    pub const fn ok(attempts: Option<u32>) -> Self {
        Self {
            failure: None,
            attempts,
            deferred: false,
            server: None,
        }
    }

    /// The same outcome, naming the server on the receipt.
    #[must_use]
    pub fn served_by(mut self, server: impl Into<String>) -> Self {
        self.server = Some(server.into());
        self
    }

    /// A failure.
    #[must_use]
    pub fn failed(reason: impl Into<String>, attempts: Option<u32>) -> Self {
        Self {
            failure: Some(reason.into()),
            attempts,
            deferred: false,
            server: None,
        }
    }

    /// A payment the live path could not deliver, queued for re-drive.
    #[must_use]
    pub fn deferred() -> Self {
        Self {
            failure: Some(Self::DEFERRED.to_owned()),
            attempts: None,
            deferred: true,
            server: None,
        }
    }
}

/// One payment's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The payment.
    pub payment: Payment,
    /// When it was handed to the client.
    pub started: Instant,
    /// From the first attempt to the final answer.
    pub latency: Duration,
    /// What the client reported.
    pub sent: Sent,
}

/// `n` payments with reproducible ids and amounts; a share `invalid` of them has a zero amount
/// (which the service rejects with 422).
#[must_use]
pub fn payments(n: usize, seed: u64, invalid: f64) -> Vec<Payment> {
    let mut rng = SeededRng::new(seed ^ 0x7061_796d_656e_7473);
    (0..n)
        .map(|i| {
            let amount = if rng.next_f64() < invalid {
                0
            } else {
                100 + rng.below(99_900)
            };
            Payment {
                id: format!("pay-{seed:x}-{i:06}"),
                amount,
            }
        })
        .collect()
}

/// A progress bar for `n` payments (hidden when stderr is not a terminal).
#[must_use]
pub fn progress_bar(n: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40.cyan/blue}] {pos:>5}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Sends every payment through `send`, as `plan` allows, and returns the outcomes in the
/// payments' order.
pub async fn drive<F, Fut>(
    payments: &[Payment],
    plan: LoadPlan,
    progress: &ProgressBar,
    send: F,
) -> Vec<Outcome>
where
    F: Fn(Payment) -> Fut,
    Fut: Future<Output = Sent> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut ticker = plan.rate.filter(|r| *r > 0.0).map(|rate| {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    let mut tasks = JoinSet::new();
    let mut failed = 0u64;
    let mut collect = |done: (usize, Outcome), outcomes: &mut Vec<Option<Outcome>>| {
        if done.1.sent.failure.is_some() {
            failed += 1;
            progress.set_message(format!("failed: {failed}"));
        }
        progress.inc(1);
        outcomes[done.0] = Some(done.1);
    };
    let mut outcomes: Vec<Option<Outcome>> = vec![None; payments.len()];
    for (index, payment) in payments.iter().cloned().enumerate() {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        while let Some(done) = tasks.try_join_next() {
            collect(done.expect("a payment task panicked"), &mut outcomes);
        }
        let fut = send(payment.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let sent = fut.await;
            drop(permit);
            (
                index,
                Outcome {
                    payment,
                    started,
                    latency: started.elapsed(),
                    sent,
                },
            )
        });
    }
    while let Some(done) = tasks.join_next().await {
        collect(done.expect("a payment task panicked"), &mut outcomes);
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every payment has an outcome"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn payments_are_reproducible_and_partly_invalid() {
        let a = payments(1000, 3, 0.1);
        assert_eq!(a, payments(1000, 3, 0.1));
        assert_ne!(a, payments(1000, 4, 0.1));
        let invalid = a.iter().filter(|p| p.amount == 0).count();
        assert!((50..150).contains(&invalid), "{invalid}");
        let ids: std::collections::HashSet<_> = a.iter().map(|p| &p.id).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_and_rate_are_bounded() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let list = payments(40, 1, 0.0);
        let started = Instant::now();
        let outcomes = drive(
            &list,
            LoadPlan {
                concurrency: 4,
                rate: Some(100.0),
            },
            &ProgressBar::hidden(),
            |p| {
                let (in_flight, peak) = (in_flight.clone(), peak.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if p.id.ends_with('7') {
                        Sent::failed("nope", Some(1))
                    } else {
                        Sent::ok(Some(1))
                    }
                }
            },
        )
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        assert_eq!(outcomes.len(), 40);
        assert!(
            outcomes.iter().zip(&list).all(|(o, p)| o.payment == *p),
            "in order"
        );
        assert_eq!(
            outcomes.iter().filter(|o| o.sent.failure.is_some()).count(),
            4
        );
        assert!(
            outcomes
                .iter()
                .all(|o| o.latency >= Duration::from_millis(50))
        );
        // 4 at a time, 50 ms each: at least 10 rounds.
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_alone_paces_starts() {
        let list = payments(21, 1, 0.0);
        let started = Instant::now();
        let outcomes = drive(
            &list,
            LoadPlan {
                concurrency: 100,
                rate: Some(10.0),
            },
            &ProgressBar::hidden(),
            |_| async { Sent::ok(None) },
        )
        .await;
        // 21 starts at 10 per second: the first is immediate, the last after 2 s.
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert!(started.elapsed() < Duration::from_millis(2100));
        // Each outcome knows when its payment started: 100 ms apart.
        for (i, o) in outcomes.iter().enumerate() {
            let offset = o.started - started;
            assert!(
                offset >= Duration::from_millis(100 * i as u64)
                    && offset < Duration::from_millis(100 * i as u64 + 10),
                "payment {i} started at {offset:?}"
            );
        }
    }
}
