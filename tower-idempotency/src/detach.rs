//! The keyed request's future in two stages, the second of which outlives a client that goes
//! away.
//!
//! Stage one reads the request, claims the key and runs the handler; dropping it (the client
//! went away) cancels the handler, as it would without the layer, and the claim ends with its
//! lease. Stage two starts the moment the handler has answered: it reads the response body,
//! records the outcome (or releases the key) and answers. A future dropped in stage two hands
//! that stage to the runtime, so an outcome is recorded whatever the client does.
//!
//! Both stages live in the one box a keyed request already allocates; nothing is spawned or
//! allocated unless the future is dropped mid-recording.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

/// How stage one ends: answered (replay, conflict, problem, or a response not deduplicated),
/// or with the handler's outcome to record.
pub(crate) enum Step<T, R> {
    Answer(T),
    Record(R),
}

pin_project! {
    /// Stage one (`A`), then the recording stage (`R`) it hands over.
    #[project = FlowProj]
    pub(crate) enum Flow<A, R> {
        Running { #[pin] stage: A },
        Recording { #[pin] stage: R },
        Done,
    }
}

impl<A, R> Flow<A, R> {
    pub(crate) const fn new(stage: A) -> Self {
        Flow::Running { stage }
    }
}

impl<A, R, T> Future for Flow<A, R>
where
    A: Future<Output = Step<T, R>>,
    R: Future<Output = T>,
{
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        loop {
            let answer = match self.as_mut().project() {
                FlowProj::Running { stage } => match ready!(stage.poll(cx)) {
                    Step::Answer(answer) => answer,
                    Step::Record(stage) => {
                        self.set(Flow::Recording { stage });
                        continue;
                    }
                },
                FlowProj::Recording { stage } => ready!(stage.poll(cx)),
                FlowProj::Done => panic!("idempotency future polled after completion"),
            };
            self.set(Flow::Done);
            return Poll::Ready(answer);
        }
    }
}

/// A keyed request's boxed future, as the response future holds it.
pub(crate) trait Detach: Future + Send {
    /// Whether the handler has answered and its outcome is not recorded yet.
    fn recording(&self) -> bool;

    /// Runs the rest of the recording stage on the tokio runtime, discarding the answer.
    fn detach(self: Pin<Box<Self>>);
}

impl<A, R, T> Detach for Flow<A, R>
where
    A: Future<Output = Step<T, R>> + Send + 'static,
    R: Future<Output = T> + Send + 'static,
{
    fn recording(&self) -> bool {
        matches!(self, Flow::Recording { .. })
    }

    fn detach(self: Pin<Box<Self>>) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!("client went away; recording the outcome in the background");
                runtime.spawn(async move {
                    let _answer = self.await;
                });
            }
            Err(_) => tracing::warn!(
                "an idempotent request was dropped outside a tokio runtime after its handler \
                 answered; its outcome is not recorded and its key stays claimed until its \
                 lease ends"
            ),
        }
    }
}

/// The boxed keyed future: polled in place, and detached if dropped while recording.
pub(crate) struct Detachable<T>(Option<Pin<Box<dyn Detach<Output = T>>>>);

impl<T> Detachable<T> {
    pub(crate) fn new(flow: Pin<Box<dyn Detach<Output = T>>>) -> Self {
        Self(Some(flow))
    }
}

impl<T> Future for Detachable<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let flow = self
            .0
            .as_mut()
            .expect("idempotency future polled after completion");
        let answer = ready!(flow.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(answer)
    }
}

impl<T> Drop for Detachable<T> {
    fn drop(&mut self) {
        if let Some(flow) = self.0.take()
            && flow.recording()
        {
            flow.detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use super::*;

    fn flow(recorded: Arc<AtomicBool>, record: bool) -> Detachable<&'static str> {
        let stage = async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !record {
                return Step::Answer("answered");
            }
            Step::Record(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                recorded.store(true, Ordering::SeqCst);
                "recorded"
            })
        };
        Detachable::new(Box::pin(Flow::new(stage)))
    }

    #[tokio::test(start_paused = true)]
    async fn both_stages_run_in_order() {
        let recorded = Arc::new(AtomicBool::new(false));
        assert_eq!(flow(Arc::clone(&recorded), true).await, "recorded");
        assert!(recorded.load(Ordering::SeqCst));
        assert_eq!(
            flow(Arc::new(AtomicBool::new(false)), false).await,
            "answered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_while_recording_finishes_on_the_runtime() {
        let recorded = Arc::new(AtomicBool::new(false));
        let mut future = flow(Arc::clone(&recorded), true);
        // Into the recording stage, then the client goes away.
        let cut = tokio::time::timeout(Duration::from_millis(15), &mut future).await;
        assert!(cut.is_err());
        drop(future);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            recorded.load(Ordering::SeqCst),
            "the recording stage was dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_before_the_handler_answered_is_cancelled() {
        let recorded = Arc::new(AtomicBool::new(false));
        let mut future = flow(Arc::clone(&recorded), true);
        let cut = tokio::time::timeout(Duration::from_millis(5), &mut future).await;
        assert!(cut.is_err());
        drop(future);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!recorded.load(Ordering::SeqCst), "stage one was detached");
    }
}
