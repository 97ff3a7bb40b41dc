//! Admission metrics, labelled by plugin: every replica reviews, so each
//! replica's `/metrics` counts its own share.

use std::time::Duration;

use kube::core::admission::AdmissionResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::runtime::Review;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    plugin: String,
    review: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    plugin: String,
    review: &'static str,
    /// `allowed`, `denied`, or `patched` (allowed with a patch).
    outcome: &'static str,
}

/// Reviews by outcome and how long they took.
#[derive(Clone, Debug)]
pub struct AdmissionMetrics {
    reviews: Family<OutcomeLabels, Counter>,
    durations: Family<ReviewLabels, Histogram>,
}

impl Default for AdmissionMetrics {
    fn default() -> Self {
        Self {
            reviews: Family::default(),
            // 100 µs to about 6.5 s: a review is usually well under a
            // millisecond, its deadline at most 22.5 s.
            durations: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.0001, 4.0, 9,
                ))
            }),
        }
    }
}

impl AdmissionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "admission_reviews",
            "Admission reviews answered by this replica, by plugin, review (mutate, validate) and outcome (allowed, patched, denied; a plugin that could not answer is counted by what its failure policy made of it)",
            self.reviews.clone(),
        );
        registry.register(
            "admission_review_duration_seconds",
            "Time to answer one admission review, from its arrival to the answer",
            self.durations.clone(),
        );
    }

    pub fn reviewed(
        &self,
        plugin: &str,
        review: Review,
        response: &AdmissionResponse,
        took: Duration,
    ) {
        let outcome = match (response.allowed, response.patch.is_some()) {
            (false, _) => "denied",
            (true, true) => "patched",
            (true, false) => "allowed",
        };
        self.reviews
            .get_or_create(&OutcomeLabels {
                plugin: plugin.to_owned(),
                review: review.as_str(),
                outcome,
            })
            .inc();
        self.durations
            .get_or_create(&ReviewLabels {
                plugin: plugin.to_owned(),
                review: review.as_str(),
            })
            .observe(took.as_secs_f64());
    }
}
