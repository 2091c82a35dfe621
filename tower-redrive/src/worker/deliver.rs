//! One delivery: send a claimed entry's request through the service and decide what to record.

use std::{future::poll_fn, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_fault::{BoxError, Class, Classify, IDEMPOTENCY_KEY, IdempotencyKey};
use tower_service::Service;
use tracing::Instrument;

use crate::{
    attempt::{describe, retry_after_at},
    clock::Timestamp,
    entry::{AttemptRecord, Claimed},
    lease::HeldLeases,
    panic::{self, CatchPanic, DeliveryPanicked},
    record::{Decision, Record},
    worker::{Redriver, WorkerShared, lock},
};

/// What became of one claimed entry's delivery.
pub(super) enum Delivery {
    /// Its lease was found lost before it was sent: another worker delivers it.
    NotSent,
    /// Another worker took it over while it was in flight: the outcome is not this worker's
    /// to record (the store would refuse it anyway).
    TakenOver,
    /// Delivered (or found unreadable): the outcome to record.
    Decided(Decision),
}

/// How one attempt ended, as the worker records it.
struct Ended {
    at: Timestamp,
    class: Class,
    /// The status line or the error chain.
    outcome: String,
    /// The server's `Retry-After` of a transient failure.
    retry_after: Option<Duration>,
}

impl<S, C, ResB> Redriver<S, C>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
{
    /// Delivers one entry and decides its outcome (recorded by the caller).
    pub(super) async fn deliver(&mut self, entry: Claimed, leases: &HeldLeases) -> Delivery {
        let shared = Arc::clone(&self.shared);
        let attempt = entry.attempts + 1;
        let request = match &entry.request {
            Ok(request) => request,
            Err(reason) => {
                if !leases.finish(entry.id) {
                    return Delivery::TakenOver;
                }
                return Delivery::Decided(corrupt(&entry, attempt, reason, shared.clock.now()));
            }
        };
        let mut req = request.to_request();
        if !req.headers().contains_key(IDEMPOTENCY_KEY)
            && let Ok(key) = IdempotencyKey::parse_str(&entry.idempotency_key)
        {
            req.headers_mut()
                .insert(IDEMPOTENCY_KEY, key.to_header_value());
        }
        pace(&shared).await;
        // Pacing may have waited long: the lease must still be ours to deliver on it.
        if leases.is_lost(entry.id, shared.clock.now()) {
            return Delivery::NotSent;
        }
        let span =
            tracing::debug_span!("redrive_delivery", name = %shared.name, id = %entry.id, attempt);
        let result = send(&mut self.service, req, span).await;
        if let Err(e) = &result
            && let Some(panicked) = e.downcast_ref::<DeliveryPanicked>()
        {
            tracing::error!(name = %shared.name, id = %entry.id, attempt, error = %panicked, "delivery service panicked; the entry is rescheduled");
        }
        let ended = shared.ended(result);
        if !leases.finish(entry.id) {
            return Delivery::TakenOver;
        }
        Delivery::Decided(shared.decide(&entry, attempt, ended))
    }
}

/// Sends one request. A panic in the service (its readiness, its call or its future) is this
/// attempt's error: the entry is rescheduled, and the worker goes on with the next one.
async fn send<S, ResB>(
    service: &mut S,
    req: Request<Full<Bytes>>,
    span: tracing::Span,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    match CatchPanic::new(poll_fn(|cx| service.poll_ready(cx))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(panicked) => return Err(panicked.into()),
    }
    match panic::catch(|| service.call(req)) {
        Ok(future) => match CatchPanic::new(future).instrument(span).await {
            Ok(result) => result.map_err(Into::into),
            Err(panicked) => Err(panicked.into()),
        },
        Err(panicked) => Err(panicked.into()),
    }
}

/// The dead letter of an entry whose request cannot be read back.
fn corrupt(entry: &Claimed, attempt: u32, reason: &str, now: Timestamp) -> Decision {
    Decision {
        id: entry.id,
        lease: entry.lease,
        result: "corrupt",
        record: Record::DeadLetter {
            attempt: AttemptRecord::new(attempt, now, "corrupt", reason),
            reason: format!("corrupt entry: {reason}"),
        },
    }
}

impl<C> WorkerShared<C> {
    /// Classifies and describes an attempt's result (which is then dropped: a response body is
    /// not read).
    fn ended<ResB>(&self, result: Result<Response<ResB>, BoxError>) -> Ended
    where
        C: Classify<Response<ResB>, BoxError>,
    {
        let at = self.clock.now();
        let class = self.classifier.classify(result.as_ref());
        let retry_after = match class {
            Class::Transient { retry_after, .. } => retry_after_at(retry_after, &result, at),
            _ => None,
        };
        Ended {
            at,
            class,
            outcome: describe(&result),
            retry_after,
        }
    }

    /// The outcome to record for an attempt: delivered, rescheduled on the schedule, or
    /// dead-lettered (permanent, or the schedule is over).
    fn decide(&self, entry: &Claimed, attempt: u32, ended: Ended) -> Decision {
        let Ended {
            at: now,
            class,
            outcome,
            retry_after,
        } = ended;
        let decided = |result, record| Decision {
            id: entry.id,
            lease: entry.lease,
            result,
            record,
        };
        let record = AttemptRecord::new(attempt, now, class.as_str(), outcome.clone());
        match class {
            Class::Success => {
                tracing::debug!(name = %self.name, id = %entry.id, attempt, "delivered");
                decided("delivered", Record::Complete(record))
            }
            Class::Permanent => decided(
                "permanent",
                Record::DeadLetter {
                    attempt: record,
                    reason: format!("permanent failure: {outcome}"),
                },
            ),
            Class::Transient { .. } => {
                let age = now.since(entry.enqueued_at);
                if let Some(delay) = self.scheduler.next_delay(age, retry_after) {
                    tracing::debug!(name = %self.name, id = %entry.id, attempt, %outcome, delay_secs = delay.as_secs(), "delivery failed; rescheduled");
                    decided(
                        "transient",
                        Record::Reschedule {
                            attempt: record,
                            next: now.plus(delay),
                        },
                    )
                } else {
                    let reason = format!(
                        "schedule exhausted after {attempt} attempts over {}; last error: {outcome}",
                        humanize(age)
                    );
                    decided(
                        "exhausted",
                        Record::DeadLetter {
                            attempt: record,
                            reason,
                        },
                    )
                }
            }
        }
    }
}

/// Waits for this delivery's slot under `max_rate` (no wait without one).
async fn pace<C>(shared: &WorkerShared<C>) {
    let Some(interval) = shared.rate_interval else {
        return;
    };
    let slot = {
        let mut next = lock(&shared.next_slot);
        let now = tokio::time::Instant::now();
        let slot = next.map_or(now, |n| n.max(now));
        // Saturating: a tiny `max_rate` is an interval no instant can be added to.
        *next = Some(tower_fault::time::saturating_after(slot, interval));
        slot
    };
    tokio::time::sleep_until(slot).await;
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 {
        format!("{:.1} days", secs as f64 / 86_400.0)
    } else if secs >= 3600 {
        format!("{:.1} hours", secs as f64 / 3600.0)
    } else {
        format!("{secs} s")
    }
}
