//! The leases a worker holds for one claim round, and the loop that keeps them alive.
//!
//! A round claims a batch and delivers its entries one after another; every entry of the batch
//! not yet finished is renewed every third of the lease, so neither the entry in flight nor the
//! ones waiting their turn expire and get taken over by another worker. A renewal refused as
//! [`QueueError::LeaseLost`] marks the entry lost: it is then not delivered (if its turn has not
//! come) and its outcome is not recorded (if it was in flight).

use std::{
    convert::Infallible,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use crate::{
    QueueError,
    clock::{Clock, Timestamp},
    entry::{EntryId, LeaseToken},
    queue::RedriveQueue,
};

/// The shortest interval between renewals (a lease of a few milliseconds would otherwise spin).
const MIN_RENEW_EVERY: Duration = Duration::from_millis(1);

/// How often a lease of this length is renewed: a third of it, so that one failed renewal (a
/// store hiccup) still leaves a second chance before it runs out.
pub(crate) fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(MIN_RENEW_EVERY)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Held; renewed.
    Held,
    /// Another worker took it over (or it was requeued/purged): not renewed, not recorded.
    Lost,
    /// Its outcome is being (or was) recorded: not renewed.
    Finished,
}

/// One lease of a round.
#[derive(Debug)]
struct Held {
    id: EntryId,
    token: LeaseToken,
    state: State,
    /// When the lease ends as far as this worker knows: the claim's end, moved on by every
    /// renewal the queue accepted. Renewals that fail (a store outage) do not move it.
    until: Timestamp,
}

/// The leases of one claim round.
#[derive(Debug)]
pub(crate) struct HeldLeases {
    entries: Mutex<Vec<Held>>,
}

impl HeldLeases {
    /// The leases of entries claimed with leases ending at `until`.
    pub(crate) fn new(
        leases: impl IntoIterator<Item = (EntryId, LeaseToken)>,
        until: Timestamp,
    ) -> Self {
        Self {
            entries: Mutex::new(
                leases
                    .into_iter()
                    .map(|(id, token)| Held {
                        id,
                        token,
                        state: State::Held,
                        until,
                    })
                    .collect(),
            ),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Held>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The leases still to renew.
    fn held(&self) -> Vec<(EntryId, LeaseToken)> {
        self.with(|e| {
            e.iter()
                .filter(|h| h.state == State::Held)
                .map(|h| (h.id, h.token))
                .collect()
        })
    }

    /// Whether the entry must not be delivered: a renewal found its lease lost, or its
    /// lease ran out at `now` without a renewal the queue accepted (renewals failing for a
    /// whole lease: another worker may have claimed it since).
    pub(crate) fn is_lost(&self, id: EntryId, now: Timestamp) -> bool {
        self.with(|e| {
            e.iter().any(|h| {
                h.id == id && (h.state == State::Lost || (h.state == State::Held && now >= h.until))
            })
        })
    }

    /// A renewal the queue accepted: the lease now ends at `until`.
    fn renewed(&self, id: EntryId, until: Timestamp) {
        self.with(|e| {
            if let Some(h) = e.iter_mut().find(|h| h.id == id) {
                h.until = h.until.max(until);
            }
        });
    }

    /// Stops renewing the entry (its outcome is about to be recorded); `false` if a renewal found
    /// its lease lost, in which case the outcome must not be recorded.
    pub(crate) fn finish(&self, id: EntryId) -> bool {
        self.with(|e| match e.iter_mut().find(|h| h.id == id) {
            Some(h) if h.state == State::Lost => false,
            Some(h) => {
                h.state = State::Finished;
                true
            }
            None => true,
        })
    }

    /// Marks a held lease lost (a lease already finished stays finished: a renewal racing the
    /// recording of its outcome is refused because the outcome cleared the lease). `true` if it
    /// was held.
    fn lose(&self, id: EntryId) -> bool {
        self.with(|e| match e.iter_mut().find(|h| h.id == id) {
            Some(h) if h.state == State::Held => {
                h.state = State::Lost;
                true
            }
            _ => false,
        })
    }
}

/// Renews the held leases every [`renew_every`]`(lease)` until dropped (it never returns).
pub(crate) async fn keep_alive(
    name: &str,
    queue: &dyn RedriveQueue,
    clock: &dyn Clock,
    lease: Duration,
    leases: &HeldLeases,
) -> Infallible {
    let every = renew_every(lease);
    loop {
        tokio::time::sleep(every).await;
        let until = clock.now().plus(lease);
        for (id, token) in leases.held() {
            match queue.renew_lease(id, token, until).await {
                Ok(()) => {
                    leases.renewed(id, until);
                    tracing::trace!(%name, %id, %until, "lease renewed");
                }
                Err(QueueError::LeaseLost { .. }) => {
                    if leases.lose(id) {
                        tracing::warn!(%name, %id, "lease lost: another worker took the entry over; its outcome will not be recorded");
                    }
                }
                // The lease is still ours as far as we know; the next renewal tries again
                // (a third of the lease later, before it runs out).
                Err(e) => {
                    crate::metrics::store_error(name, "renew_lease");
                    tracing::warn!(%name, %id, error = %e, "could not renew a lease; retrying at the next renewal");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::from_millis(1_000_000);

    #[test]
    fn a_lost_lease_is_not_finished_and_a_finished_one_is_not_lost() {
        let leases = HeldLeases::new(
            [(EntryId(1), LeaseToken(10)), (EntryId(2), LeaseToken(20))],
            T,
        );
        let now = Timestamp::from_millis(1);
        assert_eq!(leases.held().len(), 2);
        assert!(leases.lose(EntryId(1)));
        assert!(leases.is_lost(EntryId(1), now));
        assert!(
            !leases.finish(EntryId(1)),
            "a lost lease must not be recorded"
        );
        assert!(leases.finish(EntryId(2)));
        assert!(!leases.lose(EntryId(2)), "a finished lease stays finished");
        assert!(!leases.is_lost(EntryId(2), now));
        assert!(leases.held().is_empty());
    }

    /// A lease no renewal moved on is over at its end, as another worker's claim would see it.
    #[test]
    fn a_lease_that_ran_out_unrenewed_is_lost() {
        let leases = HeldLeases::new([(EntryId(1), LeaseToken(10))], T);
        let before = Timestamp::from_millis(999_999);
        assert!(!leases.is_lost(EntryId(1), before));
        assert!(leases.is_lost(EntryId(1), T));
        leases.renewed(EntryId(1), T.plus(Duration::from_secs(1)));
        assert!(!leases.is_lost(EntryId(1), T));
        leases.renewed(EntryId(1), before); // a late answer never shortens it
        assert!(!leases.is_lost(EntryId(1), T));
    }

    #[test]
    fn renewals_come_every_third_of_the_lease() {
        assert_eq!(
            renew_every(Duration::from_secs(60)),
            Duration::from_secs(20)
        );
        assert_eq!(renew_every(Duration::from_millis(2)), MIN_RENEW_EVERY);
    }
}
