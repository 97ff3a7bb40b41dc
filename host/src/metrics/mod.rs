//! Prometheus metrics of a replica, served at `/metrics` in text format.

mod process;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::admission::AdmissionMetrics;
use crate::controllers::PluginMetrics;
use crate::election::{ElectionMetrics, Role, Status};

/// The replica's metric registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub election: ElectionMetrics,
    pub plugins: PluginMetrics,
    pub admission: AdmissionMetrics,
    // Derived from the election status at scrape time.
    is_leader: Gauge,
    lease_transitions: Gauge,
    seconds_since_renew: Gauge<f64, AtomicU64>,
    /// 1 when writes made for plugins carry their term (`--fencing`).
    pub fencing: Gauge,
    /// Shards this replica leads in spread placement.
    pub shards_led: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let election = ElectionMetrics::new();
        let (is_leader, lease_transitions) = (Gauge::default(), Gauge::default());
        let seconds_since_renew = Gauge::<f64, AtomicU64>::default();
        let mut registry = Registry::with_prefix("leasehold");
        registry.register(
            "leader_is_leader",
            "Whether this replica holds the election Lease (1) or not (0)",
            is_leader.clone(),
        );
        registry.register(
            "leader_lease_transitions",
            "leaseTransitions of the election Lease as last read by this replica",
            lease_transitions.clone(),
        );
        registry.register(
            "leader_acquisitions",
            "Times this replica became the leader",
            election.acquisitions.clone(),
        );
        registry.register(
            "leader_renew_duration_seconds",
            "Duration of successful Lease acquire and renew requests",
            election.renew_duration.clone(),
        );
        registry.register(
            "leader_seconds_since_last_renew",
            "Seconds since this replica last renewed the Lease (0 when not leading)",
            seconds_since_renew.clone(),
        );
        let fencing = Gauge::default();
        registry.register(
            "fencing_enabled",
            "Whether writes made for plugins carry their leadership term for the API server's fencing policy (1) or not (0)",
            fencing.clone(),
        );
        let shards_led = Gauge::default();
        registry.register(
            "placement_shards_led",
            "Shards of spread placement this replica leads, running their plugins (0 in leader placement)",
            shards_led.clone(),
        );
        let plugins = PluginMetrics::default();
        plugins.register(&mut registry);
        let admission = AdmissionMetrics::default();
        admission.register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            election,
            plugins,
            admission,
            is_leader,
            lease_transitions,
            seconds_since_renew,
            fencing,
            shards_led,
        }
    }

    /// Renders every metric, with election gauges taken from `status`.
    pub fn render(&self, status: &Status) -> String {
        let leading = status.role == Role::Leader;
        self.is_leader.set(i64::from(leading));
        self.lease_transitions.set(i64::from(status.transitions));
        let since = status
            .since_last_renew()
            .filter(|_| leading)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        self.seconds_since_renew.set(since);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    }

    #[test]
    fn leader_gauges_follow_the_election_status() {
        let metrics = Metrics::new();
        metrics.election.acquisitions.inc();
        let status = Status {
            role: Role::Leader,
            transitions: 4,
            last_renew: Some(tokio::time::Instant::now()),
            ..Status::default()
        };
        let text = metrics.render(&status);
        assert_eq!(value_of(&text, "leasehold_leader_is_leader"), "1");
        assert_eq!(value_of(&text, "leasehold_leader_lease_transitions"), "4");
        assert_eq!(value_of(&text, "leasehold_leader_acquisitions_total"), "1");
        assert!(text.contains("leasehold_leader_renew_duration_seconds_bucket"));

        let follower = metrics.render(&Status {
            role: Role::Follower,
            ..status
        });
        assert_eq!(value_of(&follower, "leasehold_leader_is_leader"), "0");
        assert_eq!(
            value_of(&follower, "leasehold_leader_seconds_since_last_renew"),
            "0.0"
        );
    }
}
