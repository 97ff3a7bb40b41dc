//! Retry delays: exponential, capped, and jittered (backon's schedule), so
//! that after an API-server outage the plugins that failed together do not
//! retry together.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Consecutive failures past which the schedule is at its cap for any base
/// the host uses (2^20 × 1 ms is over 17 minutes).
const STEPS: u32 = 20;

/// Delays that double per consecutive failure from `base` up to `max`, each
/// stretched by a random 0–100 % (backon's jitter), so a delay `d` of the
/// plain schedule becomes one in `[d, 2d)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The wait after `failures` consecutive failures (the first is 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let step = failures.clamp(1, STEPS) as usize;
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(step - 1)
            .unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(300));

    fn between(delay: Duration, low: Duration) {
        assert!(
            delay >= low && delay < low * 2,
            "{delay:?} outside [{low:?}, {:?})",
            low * 2
        );
    }

    #[test]
    fn delays_double_per_failure_up_to_the_cap() {
        between(BACKOFF.delay(1), Duration::from_millis(500));
        between(BACKOFF.delay(2), Duration::from_secs(1));
        between(BACKOFF.delay(4), Duration::from_secs(4));
        between(BACKOFF.delay(30), Duration::from_secs(300));
        between(BACKOFF.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn plugins_that_failed_together_do_not_retry_together() {
        let delays: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| BACKOFF.delay(3)).collect();
        assert!(delays.len() > 10, "delays barely differ: {delays:?}");
    }
}
