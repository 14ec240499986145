//! `CI_CONCURRENT_ID`s of one runner: each running job holds the lowest id free when it
//! started, as GitLab Runner hands them out. Taking and releasing cost O(log n): the released
//! ids below the highest handed out are kept in order (a scan for the lowest gap among 2,000
//! held ids was a visible share of the manager's CPU at that scale).

use std::collections::BTreeSet;
use std::sync::Mutex;

/// The ids of one runner; shared by its requesters and job tasks.
#[derive(Debug, Default)]
pub(crate) struct ConcurrentIds(Mutex<Ids>);

#[derive(Debug, Default)]
struct Ids {
    /// Every id from here up is free.
    next: u32,
    /// Free ids below `next`.
    released: BTreeSet<u32>,
}

impl ConcurrentIds {
    /// Takes the lowest free id.
    pub(crate) fn take(&self) -> u32 {
        let mut ids = self.lock();
        match ids.released.pop_first() {
            Some(id) => id,
            None => {
                let id = ids.next;
                ids.next = ids.next.saturating_add(1);
                id
            }
        }
    }

    /// Gives `id` back.
    pub(crate) fn release(&self, id: u32) {
        let mut guard = self.lock();
        let ids = &mut *guard;
        if id >= ids.next {
            return;
        }
        ids.released.insert(id);
        // Keep `released` to the ids below `next`: fold a free top back into it.
        while ids.next > 0 && ids.released.remove(&(ids.next - 1)) {
            ids.next -= 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_id_is_taken_and_a_freed_top_is_folded_back() {
        let ids = ConcurrentIds::default();
        assert_eq!(
            (ids.take(), ids.take(), ids.take(), ids.take()),
            (0, 1, 2, 3)
        );
        ids.release(1);
        ids.release(2);
        assert_eq!(ids.take(), 1);
        ids.release(3);
        // 3 freed at the top: `next` falls to 3, then to 2 (also free).
        assert_eq!(ids.lock().next, 2);
        assert!(ids.lock().released.is_empty());
        assert_eq!((ids.take(), ids.take()), (2, 3));
        ids.release(0);
        ids.release(7); // never handed out: ignored
        assert_eq!((ids.take(), ids.take()), (0, 4));
    }

    #[test]
    fn ids_match_a_scan_for_the_lowest_gap() {
        let ids = ConcurrentIds::default();
        let mut held = BTreeSet::new();
        let mut seed = 7u64;
        for _ in 0..5_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if seed >> 62 == 0 && !held.is_empty() {
                let pick = *held.iter().nth((seed as usize >> 8) % held.len()).unwrap();
                held.remove(&pick);
                ids.release(pick);
            } else {
                let expected = (0..).find(|i| !held.contains(i)).unwrap();
                assert_eq!(ids.take(), expected);
                held.insert(expected);
            }
        }
    }
}
