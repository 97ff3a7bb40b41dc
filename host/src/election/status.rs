//! What the elector publishes about itself, for the API, metrics and probes.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tokio::time::Instant;

/// This replica's part in the election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not yet heard from the API server.
    #[default]
    Starting,
    Follower,
    Leader,
}

/// A snapshot of the election as this replica sees it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub role: Role,
    /// The holder in the last Lease this replica read; `None` if free.
    pub holder: Option<String>,
    /// `leaseTransitions` in the last Lease this replica read.
    pub transitions: i32,
    /// When the current leader term began, while leading.
    pub leader_since: Option<Timestamp>,
    /// Start of the last successful acquire or renew, while leading.
    pub last_renew: Option<Instant>,
    /// How many times this replica became the leader.
    pub acquisitions: u64,
}

impl Status {
    /// The API server has answered at least once.
    pub fn is_connected(&self) -> bool {
        self.role != Role::Starting
    }

    pub fn since_last_renew(&self) -> Option<Duration> {
        self.last_renew.map(|at| at.elapsed())
    }

    /// A leader that has not renewed for longer than its lease is wedged: it
    /// should have stepped down at its renew deadline (client-go's
    /// `HealthzAdaptor` makes the same check).
    pub fn is_wedged_leader(&self, lease_duration: Duration) -> bool {
        self.role == Role::Leader
            && self
                .since_last_renew()
                .is_some_and(|elapsed| elapsed > lease_duration)
    }
}
