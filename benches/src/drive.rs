//! Driving a tower service without an executor: `poll_ready`, `call` and one poll of the
//! response future with a no-op waker.
//!
//! Every service on a bench's happy path is ready at once and answers in its first poll, so the
//! measurement is the layer's own cost — no runtime scheduling, no task wake-ups. A service that
//! returns `Pending` here is a bench bug (or a layer that parks on the happy path), and
//! [`call_now`] panics rather than report a number that means something else.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower_service::Service;

/// Polls `fut` once with a no-op waker; panics if it is not ready.
#[inline]
pub fn poll_now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the future was not ready in its first poll: not a happy path"),
    }
}

/// `poll_ready` then `call` then one poll of the future; panics if anything is `Pending`.
///
/// # Panics
///
/// If the service is not ready, `poll_ready` fails, or the future is pending.
#[inline]
pub fn call_now<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(_)) => panic!("poll_ready failed on the happy path"),
        Poll::Pending => panic!("the service was not ready: not a happy path"),
    }
    poll_now(svc.call(req))
}
