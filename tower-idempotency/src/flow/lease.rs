//! The lease of a running claim, renewed while its handler runs and its response is read.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tower_fault::time::saturating_after;

use super::timed;
use crate::{
    config::Shared,
    key::{FencingToken, RecordKey},
    store::{IdempotencyStore, StoreFuture},
    telemetry::StoreOp,
};

pin_project! {
    /// Runs a future (the handler, or the read of its response body) while renewing the lease
    /// every third of it (concurrently: a slow store never stalls the handler).
    ///
    /// A hand-written future rather than an `async fn` around `select!`, which would keep the
    /// handler's future twice (argument and pinned local); and it sets up the renewal timer
    /// only once the handler is pending, so a handler that answers at once costs no timer (no
    /// clock read, no runtime handle).
    pub(super) struct WithLease<'a, St, F> {
        #[pin]
        handler: F,
        #[pin]
        tick: Option<Sleep>,
        renewing: Option<StoreFuture<'a, bool>>,
        shared: &'a Shared<St>,
        key: &'a RecordKey,
        token: FencingToken,
    }
}

impl<'a, St, F> WithLease<'a, St, F> {
    pub(super) fn new(
        shared: &'a Shared<St>,
        key: &'a RecordKey,
        token: FencingToken,
        handler: F,
    ) -> Self {
        Self {
            handler,
            tick: None,
            renewing: None,
            shared,
            key,
            token,
        }
    }
}

impl<St: IdempotencyStore, F: Future> Future for WithLease<'_, St, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let lease = this.shared.config.lease;
        let interval = lease / 3;
        loop {
            // The handler first, always (as a biased select would).
            if let Poll::Ready(out) = this.handler.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if let Some(renewing) = this.renewing {
                let Poll::Ready(renewed) = renewing.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                *this.renewing = None;
                let (name, key): (&str, &RecordKey) = (&this.shared.config.name, this.key);
                match renewed {
                    Ok(true) => tracing::trace!(name, key = key.short(), "lease renewed"),
                    Ok(false) => tracing::warn!(
                        name,
                        key = key.short(),
                        "lease lost while the handler runs; its outcome will not be recorded"
                    ),
                    Err(error) => {
                        tracing::warn!(name, key = key.short(), %error, "lease renewal failed");
                    }
                }
                if let Some(tick) = this.tick.as_mut().as_pin_mut() {
                    tick.reset(saturating_after(Instant::now(), interval));
                }
                continue;
            }
            if this.tick.is_none() {
                this.tick.set(Some(sleep(interval)));
            }
            let Some(tick) = this.tick.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            if tick.poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (shared, key, token) = (*this.shared, *this.key, *this.token);
            *this.renewing = Some(Box::pin(timed(
                shared,
                StoreOp::Renew,
                shared.store.renew(key, token, lease),
            )));
        }
    }
}
