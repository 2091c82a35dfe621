//! Bounded event subscriptions: one shape for every event stream of the suite.
//!
//! A layer that tells the world what happened to it (a breaker's transitions, failover's health
//! changes, redrive's deliveries) owns a [`Publisher`]; each observer holds a [`Subscription`].
//!
//! * **The publisher never waits.** [`Publisher::publish`] queues the event for every
//!   subscriber that has room and returns; it never waits for a subscriber to read.
//! * **Each subscriber is bounded.** A subscription holds at most its capacity of unread
//!   events. Events published while it is full are not queued for it: it misses the *newest*
//!   events and keeps the older ones in order, and [`Subscription::missed`] says how many it
//!   missed. Memory never grows with a subscriber that stopped reading.
//! * **In order.** A subscriber receives the events queued for it in the order they were
//!   published (events published concurrently from several threads are ordered by the
//!   publisher's lock).
//! * **Ends with the publisher.** Once the publisher is dropped, a subscription yields what it
//!   still holds and then ends (`None`). A dropped subscription is forgotten at the next
//!   publish.
//!
//! A crate names its stream as an alias, e.g.
//! `pub type Transitions = tower_fault::events::Subscription<Transition>;`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use tower_fault::events::Publisher;
//!
//! let publisher = Publisher::new(2);
//! let mut events = publisher.subscribe();
//! publisher.publish("opened");
//! publisher.publish("half-open");
//! publisher.publish("closed"); // the subscription is full: it misses this one
//!
//! assert_eq!(events.recv().await, Some("opened"));
//! assert_eq!(events.recv().await, Some("half-open"));
//! assert_eq!(events.missed(), 1);
//!
//! drop(publisher);
//! assert_eq!(events.recv().await, None);
//! # }
//! ```

use std::{
    fmt,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures_core::Stream;
use tokio::sync::{Semaphore, mpsc};

/// The bound of a [`Publisher::default`]: how many unread events a subscriber may hold.
///
/// Events are rare (state changes), so 256 covers a reader that is busy for a while, and at
/// most 256 events are held per subscriber that stopped reading.
pub const DEFAULT_CAPACITY: usize = 256;

/// The sending side: owned by the layer that publishes events of type `T`.
///
/// Publishing and subscribing take a lock over the list of subscribers. Events are published on
/// rare paths (a state change), never per request, and the lock is never held while waiting for
/// a subscriber: queueing an event is a non-blocking send into the subscriber's bounded queue.
pub struct Publisher<T> {
    subscribers: Mutex<Vec<Subscriber<T>>>,
    capacity: usize,
}

struct Subscriber<T> {
    tx: mpsc::Sender<T>,
    missed: Arc<AtomicU64>,
}

impl<T> Publisher<T> {
    /// A publisher whose subscribers each hold up to `capacity` unread events.
    ///
    /// A capacity of 0 is read as 1 (a subscriber must be able to hold the event it is about to
    /// read), and one above [`Semaphore::MAX_PERMITS`](tokio::sync::Semaphore::MAX_PERMITS)
    /// (the most a tokio channel can count, far beyond any memory) as that maximum.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            subscribers: Mutex::new(Vec::new()),
            capacity: capacity.clamp(1, Semaphore::MAX_PERMITS),
        }
    }

    /// How many unread events each subscriber may hold.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A new subscription, receiving every event published from now on.
    #[must_use]
    pub fn subscribe(&self) -> Subscription<T> {
        self.subscribe_with(std::iter::empty)
    }

    /// A new subscription that first receives the events `initial` returns (a snapshot of the
    /// current state, say), then every event published after them.
    ///
    /// `initial` runs under the lock [`publish`](Self::publish) takes, so no event is published
    /// between the snapshot and the subscription: an event whose publish started after
    /// `initial` ran is delivered, one published before is not. The initial events do not count
    /// against the capacity: every one of them is delivered.
    pub fn subscribe_with<I>(&self, initial: impl FnOnce() -> I) -> Subscription<T>
    where
        I: IntoIterator<Item = T>,
    {
        let mut subscribers = self.lock();
        let initial: Vec<T> = initial().into_iter().collect();
        let bound = self
            .capacity
            .saturating_add(initial.len())
            .min(Semaphore::MAX_PERMITS);
        let (tx, rx) = mpsc::channel(bound);
        let missed = Arc::new(AtomicU64::new(0));
        for event in initial {
            // Room for each was reserved above; the receiver is alive.
            if tx.try_send(event).is_err() {
                missed.fetch_add(1, Ordering::Relaxed);
            }
        }
        subscribers.push(Subscriber {
            tx,
            missed: Arc::clone(&missed),
        });
        Subscription { rx, missed }
    }

    /// Queues `event` for every live subscriber that has room, and returns how many it was
    /// queued for. A subscriber that is full misses it (its [`Subscription::missed`] count goes
    /// up); a dropped subscription is forgotten. Never waits.
    pub fn publish(&self, event: T) -> usize
    where
        T: Clone,
    {
        let mut subscribers = self.lock();
        let mut queued = 0;
        subscribers.retain(|sub| match sub.tx.try_send(event.clone()) {
            Ok(()) => {
                queued += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                sub.missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        queued
    }

    /// How many subscriptions are alive (dropped ones are counted until the next publish).
    #[must_use]
    pub fn subscriber_count(&self) -> usize {
        let mut subscribers = self.lock();
        subscribers.retain(|sub| !sub.tx.is_closed());
        subscribers.len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Subscriber<T>>> {
        // A panic while the lock was held (a panicking `Clone` or snapshot) leaves the list
        // itself intact: keep publishing to it.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> Default for Publisher<T> {
    /// A publisher with [`DEFAULT_CAPACITY`].
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl<T> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("capacity", &self.capacity)
            .field("subscribers", &self.lock().len())
            .finish()
    }
}

/// The receiving side: the events of one [`Publisher`] for one observer, in order.
///
/// Read it with [`recv`](Self::recv), [`try_recv`](Self::try_recv) or as a
/// [`Stream`](futures_core::Stream); drop it to unsubscribe.
pub struct Subscription<T> {
    rx: mpsc::Receiver<T>,
    missed: Arc<AtomicU64>,
}

impl<T> Subscription<T> {
    /// The next event; `None` once the publisher is gone and every queued event was read.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Polls for the next event (what [`recv`](Self::recv) and the `Stream` impl do).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }

    /// How many events this subscription missed so far because it was full when they were
    /// published. The missed events are always newer than every event it holds: read what is
    /// queued, then treat the state it describes as stale (re-read it, or subscribe again).
    #[must_use]
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// How many events are queued, unread.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no event is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Whether the publisher is gone (queued events can still be read).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }
}

impl<T> Stream for Subscription<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("queued", &self.len())
            .field("missed", &self.missed())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Barrier, atomic::AtomicBool},
        thread,
        time::Duration,
    };

    use futures_util::StreamExt;

    use super::*;

    #[test]
    fn a_full_subscriber_misses_the_newest_and_keeps_the_oldest() {
        let publisher = Publisher::new(4);
        let mut events = publisher.subscribe();
        for i in 0..40 {
            publisher.publish(i);
        }
        assert_eq!(events.len(), 4);
        assert_eq!(events.missed(), 36);
        let got: Vec<_> = std::iter::from_fn(|| events.try_recv()).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        // Room again: the next event is queued, and the count of missed ones stays.
        assert_eq!(publisher.publish(40), 1);
        assert_eq!(events.try_recv(), Some(40));
        assert_eq!(events.missed(), 36);
    }

    #[test]
    fn subscribers_are_independent() {
        let publisher = Publisher::new(2);
        let mut slow = publisher.subscribe();
        let mut fast = publisher.subscribe();
        for i in 0..5 {
            publisher.publish(i);
            assert_eq!(fast.try_recv(), Some(i));
        }
        assert_eq!(fast.missed(), 0);
        assert_eq!(slow.missed(), 3);
        assert_eq!(slow.try_recv(), Some(0));
    }

    #[test]
    fn dropped_subscriptions_are_forgotten() {
        let publisher = Publisher::new(1);
        let a = publisher.subscribe();
        let _b = publisher.subscribe();
        assert_eq!(publisher.subscriber_count(), 2);
        drop(a);
        assert_eq!(publisher.publish(()), 1);
        assert_eq!(publisher.subscriber_count(), 1);
    }

    #[test]
    fn zero_capacity_is_one_and_huge_is_the_maximum() {
        assert_eq!(Publisher::<()>::new(0).capacity(), 1);
        let huge = Publisher::<u8>::new(usize::MAX);
        assert_eq!(huge.capacity(), Semaphore::MAX_PERMITS);
        let mut events = huge.subscribe_with(|| [1, 2, 3]);
        huge.publish(4);
        assert_eq!(events.try_recv(), Some(1));
        assert_eq!(Publisher::<()>::default().capacity(), DEFAULT_CAPACITY);
    }

    #[test]
    fn initial_events_come_first_and_do_not_count_against_the_bound() {
        let publisher = Publisher::new(2);
        let mut events = publisher.subscribe_with(|| 0..10);
        publisher.publish(10);
        publisher.publish(11);
        publisher.publish(12);
        let got: Vec<_> = std::iter::from_fn(|| events.try_recv()).collect();
        assert_eq!(got, (0..12).collect::<Vec<_>>());
        assert_eq!(events.missed(), 1);
    }

    #[tokio::test]
    async fn the_stream_ends_after_the_publisher_and_the_queue() {
        let publisher = Publisher::new(8);
        let events = publisher.subscribe();
        publisher.publish("a");
        publisher.publish("b");
        assert!(!events.is_closed());
        drop(publisher);
        assert!(events.is_closed());
        assert_eq!(events.collect::<Vec<_>>().await, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken() {
        let publisher = Arc::new(Publisher::new(8));
        let mut events = publisher.subscribe();
        let waiter = tokio::spawn(async move { events.recv().await });
        tokio::task::yield_now().await;
        publisher.publish(7);
        assert_eq!(waiter.await.unwrap(), Some(7));
    }

    #[test]
    fn a_panicking_snapshot_does_not_break_the_publisher() {
        let publisher = Publisher::new(4);
        let mut before = publisher.subscribe();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            publisher.subscribe_with(|| -> Vec<u32> { panic!("snapshot failed") })
        }));
        assert!(panicked.is_err());
        assert_eq!(publisher.publish(1), 1);
        assert_eq!(before.try_recv(), Some(1));
    }

    /// Several threads publish at once while one subscriber reads and another never does: every
    /// thread's events reach the reader in that thread's order, received plus missed is what
    /// was published, and the idle subscriber never holds more than its bound.
    #[test]
    fn concurrent_publishers_keep_order_and_account_for_every_event() {
        const THREADS: u64 = 4;
        const EACH: u64 = 20_000;
        let publisher = Arc::new(Publisher::new(64));
        let mut reader = publisher.subscribe();
        let idle = publisher.subscribe();
        let start = Arc::new(Barrier::new(THREADS as usize + 1));
        let publishers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (publisher, start) = (Arc::clone(&publisher), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    for i in 0..EACH {
                        publisher.publish((t, i));
                    }
                })
            })
            .collect();
        let reading = thread::spawn(move || {
            start.wait();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut last = [None::<u64>; THREADS as usize];
                let mut received = 0u64;
                while let Some((t, i)) = reader.recv().await {
                    let slot = &mut last[t as usize];
                    assert!(
                        slot.is_none_or(|prev| prev < i),
                        "thread {t}: {i} after {slot:?}"
                    );
                    *slot = Some(i);
                    received += 1;
                }
                (received, reader.missed())
            })
        });
        for p in publishers {
            p.join().unwrap();
        }
        assert!(idle.len() <= 64);
        assert_eq!(idle.len() as u64 + idle.missed(), THREADS * EACH);
        drop(publisher);
        let (received, missed) = reading.join().unwrap();
        assert_eq!(received + missed, THREADS * EACH);
        assert!(received >= 64, "{received}");
    }

    /// A publisher with a subscriber that never reads finishes publishing: nothing waits.
    #[test]
    fn publishing_never_waits_for_a_subscriber() {
        let publisher = Arc::new(Publisher::new(1));
        let _never_read = publisher.subscribe();
        let done = Arc::new(AtomicBool::new(false));
        let worker = {
            let (publisher, done) = (Arc::clone(&publisher), Arc::clone(&done));
            thread::spawn(move || {
                for i in 0..100_000u32 {
                    publisher.publish(i);
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "publish blocked");
            thread::sleep(Duration::from_millis(1));
        }
        worker.join().unwrap();
    }

    /// Subscribing with a snapshot while another thread publishes: the snapshot is taken under
    /// the publish lock, so the first event received continues it without a gap.
    #[test]
    fn a_snapshot_and_the_events_after_it_leave_no_gap() {
        let publisher = Arc::new(Publisher::new(16));
        let state = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (publisher, state, stop) = (
                Arc::clone(&publisher),
                Arc::clone(&state),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // The state changes first, then the change is published (as a layer does).
                    state.store(i, Ordering::SeqCst);
                    publisher.publish(i);
                }
            })
        };
        for _ in 0..200 {
            let mut events = publisher.subscribe_with(|| [state.load(Ordering::SeqCst)]);
            let snapshot = events.try_recv().unwrap();
            let next = loop {
                if let Some(next) = events.try_recv() {
                    break next;
                }
                thread::yield_now();
            };
            // The change the snapshot saw may also arrive as an event; nothing after it is lost.
            assert!(
                next == snapshot || next == snapshot + 1,
                "snapshot {snapshot}, then {next}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    /// Subscriptions come and go on several threads while events are published: no deadlock,
    /// and every dropped one is forgotten.
    #[test]
    fn churning_subscribers() {
        let publisher = Arc::new(Publisher::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let publisher = Arc::clone(&publisher);
                thread::spawn(move || {
                    for i in 0..5_000u32 {
                        let mut events = publisher.subscribe();
                        publisher.publish(i);
                        // Another thread's event may come first; ours is queued or missed.
                        let mut seen = std::iter::from_fn(|| events.try_recv());
                        assert!(seen.any(|e| e == i) || events.missed() > 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(publisher.subscriber_count(), 0);
    }
}
