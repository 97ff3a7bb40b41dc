//! Instances made ahead of the reviews that use them.
//!
//! A review arrives between the API server's and etcd's work, with every
//! cache cold: instantiating then cost more than the review itself (about
//! 110 µs of 230 in `review_cost` with its caches thrashed), so each review
//! takes an instance made before it arrived, and still uses it for that
//! review only. Instances are made, and used ones dropped, [`BATCH`] at a
//! time once the last spare is taken: the first of a batch comes back into
//! cold caches and the rest follow it warm (`review_cost` with `BATCH`:
//! 120–135 µs an instance one by one, 50–65 by four), and three reviews in
//! four leave nothing to do after their answer, while the API server
//! finishes the request on the same cores. In `make bench-admission`,
//! alternating runs (the batch set by a temporary switch, not kept):
//! latency ratios 1.38, 1.21, 1.29 by four against 1.42, 1.27, 1.35 one by
//! one. Eight at a time (41–45 µs an instance in `review_cost`) measured no
//! better there (1.35, 1.26, 1.30 against 1.18, 1.29, 1.27), for twice the
//! slots held.

/// Instances made at a time for a plugin's next reviews; as many used ones
/// wait to be dropped with the next batch.
pub const BATCH: usize = 4;

/// One plugin's spare instances (`I`), and its used ones waiting to be
/// dropped. Each holds a slot of the reviews' pool until dropped.
#[derive(Debug)]
pub struct Spares<I> {
    fresh: Vec<I>,
    used: Vec<I>,
    /// A batch is being made.
    refilling: bool,
}

/// What to do with an instance a review has used.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum SetAside<I> {
    /// Kept, to be dropped with the next batch.
    Kept,
    /// More used ones than a batch wait already (reviews at once outran the
    /// spares): drop this one now.
    Surplus(I),
    /// The last spare is gone: drop these used ones, make a batch and hand
    /// it to [`Spares::refilled`].
    Refill(Vec<I>),
}

impl<I> Default for Spares<I> {
    fn default() -> Self {
        Self {
            fresh: Vec::with_capacity(BATCH),
            used: Vec::with_capacity(BATCH),
            refilling: false,
        }
    }
}

impl<I> Spares<I> {
    /// A spare for the review about to run, if one is ready.
    pub fn take(&mut self) -> Option<I> {
        self.fresh.pop()
    }

    /// Sets aside the instance a review has `used`.
    pub fn set_aside(&mut self, used: I) -> SetAside<I> {
        if self.used.len() >= BATCH {
            return SetAside::Surplus(used);
        }
        self.used.push(used);
        if !self.fresh.is_empty() || self.refilling {
            return SetAside::Kept;
        }
        self.refilling = true;
        SetAside::Refill(std::mem::take(&mut self.used))
    }

    /// The batch asked for by [`SetAside::Refill`], `made` (fewer when
    /// instantiating failed: the reviews then instantiate for themselves).
    pub fn refilled(&mut self, made: Vec<I>) {
        self.fresh.extend(made);
        self.refilling = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spares after one batch of instances numbered from 1.
    fn refilled_once() -> Spares<u32> {
        let mut spares = Spares::default();
        assert_eq!(spares.set_aside(0), SetAside::Refill(vec![0]));
        spares.refilled((1..=BATCH as u32).collect());
        spares
    }

    #[test]
    fn the_first_review_finds_no_spare_and_asks_for_a_batch() {
        let mut spares = Spares::<u32>::default();
        assert_eq!(spares.take(), None);
        assert_eq!(spares.set_aside(7), SetAside::Refill(vec![7]));
    }

    #[test]
    fn a_batch_is_made_only_once_its_last_spare_is_taken() {
        let mut spares = refilled_once();
        for _ in 1..BATCH {
            let spare = spares.take().expect("a spare");
            assert_eq!(spares.set_aside(spare), SetAside::Kept);
        }
        let last = spares.take().expect("the last spare");
        assert_eq!(spares.take(), None);
        let SetAside::Refill(ended) = spares.set_aside(last) else {
            panic!("the last spare taken asks for a batch");
        };
        assert_eq!(ended.len(), BATCH, "every used one is dropped with it");
    }

    #[test]
    fn each_spare_serves_one_review() {
        let mut spares = refilled_once();
        let mut served = Vec::new();
        while let Some(spare) = spares.take() {
            served.push(spare);
        }
        served.sort_unstable();
        assert_eq!(served, (1..=BATCH as u32).collect::<Vec<_>>());
    }

    #[test]
    fn one_batch_at_a_time_is_made() {
        let mut spares = Spares::<u32>::default();
        assert!(matches!(spares.set_aside(1), SetAside::Refill(_)));
        // Reviews that end while the batch is made keep their instances.
        assert_eq!(spares.set_aside(2), SetAside::Kept);
        assert_eq!(spares.set_aside(3), SetAside::Kept);
    }

    #[test]
    fn used_ones_beyond_a_batch_are_dropped_at_once() {
        let mut spares = Spares::<u32>::default();
        assert!(matches!(spares.set_aside(0), SetAside::Refill(_)));
        for used in 1..=BATCH as u32 {
            assert_eq!(spares.set_aside(used), SetAside::Kept);
        }
        assert_eq!(spares.set_aside(99), SetAside::Surplus(99));
    }

    #[test]
    fn a_failed_batch_lets_the_next_review_ask_again() {
        let mut spares = Spares::<u32>::default();
        assert!(matches!(spares.set_aside(1), SetAside::Refill(_)));
        spares.refilled(Vec::new());
        assert_eq!(spares.take(), None);
        assert_eq!(spares.set_aside(2), SetAside::Refill(vec![2]));
    }
}
