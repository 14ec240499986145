//! A counting limit whose size a reload can change while slots are held: the global
//! `concurrent` and each runner's `limit`. Lowering it takes nothing away from holders; new
//! acquisitions wait until the count in use is under the new size. (Tokio's `Semaphore` cannot
//! shrink below the permits it has handed out, hence this small type.)

use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Created by the manager per limit; shared by the requesters that take slots.
#[derive(Debug)]
pub(crate) struct Slots {
    /// (slots in use, size; `None` = unbounded). A std `Mutex`: held for two integers, never
    /// across an await.
    state: Mutex<(usize, Option<usize>)>,
    /// Woken on every release and resize; waiters re-check.
    freed: Notify,
}

/// One slot held; dropped, it frees the slot.
#[derive(Debug)]
pub(crate) struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.lock().0 -= 1;
        self.0.freed.notify_waiters();
    }
}

impl Slots {
    /// A limit of `size` slots (`None`: unbounded).
    pub(crate) fn new(size: Option<usize>) -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new((0, size)),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<usize>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot and takes it.
    pub(crate) async fn acquire(self: &Arc<Self>) -> SlotGuard {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check and the await wakes us.
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.1.is_none_or(|size| state.0 < size) {
                    state.0 += 1;
                    return SlotGuard(self.clone());
                }
            }
            freed.await;
        }
    }

    /// Changes the size; waiters re-check at once.
    pub(crate) fn resize(&self, size: Option<usize>) {
        self.lock().1 = size;
        self.freed.notify_waiters();
    }

    /// Slots in use now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.lock().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_full_limit_waits_and_a_resize_lets_waiters_in() {
        let slots = Slots::new(Some(1));
        let first = slots.acquire().await;
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "the limit is full");
        slots.resize(Some(2));
        let second = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a raised limit lets the waiter in")
            .unwrap();
        assert_eq!(slots.in_use(), 2);
        slots.resize(Some(1));
        drop(first);
        let third = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !third.is_finished(),
            "still one in use of a lowered limit of one"
        );
        drop(second);
        let _third = tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .expect("a release lets the waiter in")
            .unwrap();
        slots.resize(None);
        let _many: Vec<SlotGuard> =
            futures_util::future::join_all((0..10).map(|_| slots.acquire())).await;
        assert_eq!(slots.in_use(), 11);
    }
}
