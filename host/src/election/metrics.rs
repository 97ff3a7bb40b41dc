//! What the elector counts as it goes; the replica's registry
//! ([`crate::metrics`]) serves it.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Metrics the elector records as things happen.
#[derive(Clone, Debug)]
pub struct ElectionMetrics {
    /// Duration of successful acquire and renew requests.
    pub renew_duration: Histogram,
    /// Times this replica became the leader.
    pub acquisitions: Counter,
}

impl Default for ElectionMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ElectionMetrics {
    pub fn new() -> Self {
        Self {
            // 1 ms .. ~4 s: a healthy renew is a few ms; seconds mean trouble.
            renew_duration: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            acquisitions: Counter::default(),
        }
    }
}
