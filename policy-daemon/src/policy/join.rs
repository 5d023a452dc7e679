//! Runs several futures of one type concurrently inside the current task,
//! keeping the outputs of those that finished: when a deadline strikes,
//! the answer is built from what is there. No task is spawned, so a
//! request answered from the cache costs no scheduling at all.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

enum Slot<F: Future> {
    Running(Pin<Box<F>>),
    Done(F::Output),
}

/// Polls every future until all are done; [`JoinAll::into_outputs`] gives
/// the outputs in order, `None` for those still running.
pub struct JoinAll<F: Future> {
    slots: Vec<Slot<F>>,
}

// Outputs are never pinned and the futures are boxed: moving the JoinAll
// moves neither.
impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> JoinAll<F> {
    /// Starts nothing yet: futures run when the [`JoinAll`] is polled.
    pub fn new(futures: impl IntoIterator<Item = F>) -> Self {
        Self {
            slots: futures
                .into_iter()
                .map(|f| Slot::Running(Box::pin(f)))
                .collect(),
        }
    }

    /// The outputs in the order the futures were given; `None` for a
    /// future that has not finished.
    pub fn into_outputs(self) -> Vec<Option<F::Output>> {
        self.slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Done(output) => Some(output),
                Slot::Running(_) => None,
            })
            .collect()
    }
}

impl<F: Future> Future for JoinAll<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = false;
        for slot in &mut self.slots {
            if let Slot::Running(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(output) => *slot = Slot::Done(output),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn outputs_of_finished_futures_survive_a_deadline() {
        let delays = [0_u64, 10, 10_000];
        let mut join = JoinAll::new(delays.iter().map(|&ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        }));
        let finished = tokio::time::timeout(Duration::from_millis(500), &mut join).await;
        assert!(finished.is_err(), "the slow one is still running");
        assert_eq!(join.into_outputs(), [Some(0), Some(10), None]);
    }

    #[tokio::test]
    async fn all_done() {
        let mut join = JoinAll::new((0..4).map(|i| async move { i * 2 }));
        (&mut join).await;
        assert_eq!(join.into_outputs(), [Some(0), Some(2), Some(4), Some(6)]);
    }
}
