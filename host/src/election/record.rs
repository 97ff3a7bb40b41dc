//! The leader record: the part of a Lease that election reads and writes,
//! and the pure rules for how it changes.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

/// client-go writes this on release: the API server rejects 0, and 1 s
/// tells any reader that does honour the duration to move on at once.
const RELEASED_LEASE_DURATION_SECONDS: i32 = 1;

/// Who holds the Lease, for how long, and how often it changed hands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderRecord {
    /// The holder's identity; `None` when the Lease is free (released).
    pub holder: Option<String>,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    /// Incremented on every change of holder.
    pub transitions: i32,
}

impl LeaderRecord {
    pub fn from_lease(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|holder| !holder.is_empty()),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.map(|time| time.0),
            renew_time: spec.renew_time.map(|time| time.0),
            transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    pub fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone().unwrap_or_default()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }

    pub fn is_held_by(&self, identity: &str) -> bool {
        self.holder.as_deref() == Some(identity)
    }

    /// The record after `identity` acquires the Lease at `now`: a new term,
    /// so a transition, even when the record already names `identity` (a
    /// restarted process must not continue its predecessor's term: the
    /// fencing token of the term would let that process's late writes in).
    pub fn acquired_by(&self, identity: &str, lease_duration_seconds: i32, now: Timestamp) -> Self {
        Self {
            holder: Some(identity.to_owned()),
            lease_duration_seconds,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: self.transitions.saturating_add(1),
        }
    }

    /// The record after its holder renews at `now`.
    pub fn renewed(&self, now: Timestamp) -> Self {
        Self {
            renew_time: Some(now),
            ..self.clone()
        }
    }

    /// The record after its holder releases the Lease at `now`.
    pub fn released(&self, now: Timestamp) -> Self {
        Self {
            holder: None,
            lease_duration_seconds: RELEASED_LEASE_DURATION_SECONDS,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: self.transitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn taking_a_lease_from_another_holder_counts_a_transition() {
        let held = LeaderRecord::default().acquired_by("a", 15, at(0));
        assert_eq!(held.transitions, 1);
        let taken = held.acquired_by("b", 15, at(20));
        assert_eq!(taken.holder.as_deref(), Some("b"));
        assert_eq!(taken.transitions, 2);
        assert_eq!(taken.acquire_time, Some(at(20)));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let held = LeaderRecord::default().acquired_by("a", 15, at(0));
        let renewed = held.renewed(at(2));
        assert_eq!(renewed.transitions, 1);
        assert_eq!(renewed.acquire_time, Some(at(0)));
        assert_eq!(renewed.renew_time, Some(at(2)));
    }

    #[test]
    fn acquiring_a_lease_already_in_ones_own_name_is_a_new_term() {
        let held = LeaderRecord::default().acquired_by("a", 15, at(0));
        let again = held.acquired_by("a", 15, at(20));
        assert_eq!(again.transitions, 2);
        assert_eq!(again.acquire_time, Some(at(20)));
    }

    #[test]
    fn released_lease_is_free_and_acquiring_it_is_a_transition() {
        let released = LeaderRecord::default()
            .acquired_by("a", 15, at(0))
            .released(at(5));
        assert_eq!(released.holder, None);
        assert_eq!(released.lease_duration_seconds, 1);
        assert_eq!(released.transitions, 1);
        assert_eq!(released.acquired_by("a", 15, at(6)).transitions, 2);
    }

    #[test]
    fn empty_holder_in_a_lease_reads_as_free_and_round_trips() {
        let record = LeaderRecord::default()
            .acquired_by("a", 15, at(0))
            .released(at(1));
        let lease = Lease {
            spec: Some(record.to_spec()),
            ..Lease::default()
        };
        assert_eq!(
            lease.spec.as_ref().unwrap().holder_identity.as_deref(),
            Some("")
        );
        assert_eq!(LeaderRecord::from_lease(&lease), record);
    }
}
