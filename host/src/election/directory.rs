//! The replica directory: every replica, leader or not, keeps a small Lease
//! of its own, so any replica can answer "who is out there".

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::election::lease_client::ELECTION_LABEL;
use crate::election::{Config, Role};

/// Label on every replica Lease; its value is the election Lease's name.
pub const REPLICA_OF_LABEL: &str = "leasehold.dev/replica-of";
/// Label on every replica Lease: where the replica runs plugins (`leader`,
/// or `spread-<shards>`). A replica without it is an older host, which
/// runs every plugin on the leader.
pub const PLACEMENT_LABEL: &str = "leasehold.dev/placement";
const FIELD_MANAGER: &str = "leasehold-replica";
/// Object names are DNS subdomains: at most 253 characters.
const MAX_NAME_LEN: usize = 253;

/// Why the directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing replica Leases failed. Retryable.
    #[error("failed to list replica leases")]
    List(#[source] kube::Error),
}

/// One replica as the directory sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub identity: String,
    pub role: Role,
    /// When it last announced itself (its own clock).
    pub last_seen: Option<String>,
    /// The shard Leases it holds, in spread placement.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
    /// Where it runs plugins: `leader` or `spread-<shards>`.
    pub placement: String,
}

/// Announces this replica and lists the live ones.
#[derive(Clone, Debug)]
pub struct Directory {
    api: Api<Lease>,
    election_lease: String,
    identity: String,
    /// This replica's placement, announced with it.
    placement: String,
    lease_duration: Duration,
    period: Duration,
}

impl Directory {
    /// `placement` is what this replica announces: `leader` or
    /// `spread-<shards>`.
    pub fn new(client: Client, config: &Config, placement: String) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            election_lease: config.lease_name.clone(),
            identity: config.identity.clone(),
            placement,
            lease_duration: config.lease_duration,
            period: config.retry_period,
        }
    }

    /// Announces this replica every period until `shutdown`. It stays in
    /// the directory until [`Directory::leave`]: a replica still draining
    /// plugins is still there for the others to see.
    pub async fn announce(self, shutdown: CancellationToken) {
        let name = replica_lease_name(&self.election_lease, &self.identity);
        loop {
            if let Err(error) = self
                .api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(self.announcement(&name)),
                )
                .await
            {
                tracing::debug!(%error, "failed to announce replica; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.period) => {}
            }
        }
    }

    /// Removes this replica's Lease, so it leaves the directory at once.
    pub async fn leave(&self) {
        let name = replica_lease_name(&self.election_lease, &self.identity);
        if let Err(error) = self.api.delete(&name, &DeleteParams::default()).await {
            tracing::debug!(%error, "failed to remove replica lease; it expires on its own");
        }
    }

    fn announcement(&self, name: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([
                    (REPLICA_OF_LABEL.to_owned(), self.election_lease.clone()),
                    (PLACEMENT_LABEL.to_owned(), self.placement.clone()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX),
                ),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        }
    }

    /// The replicas whose announcement has not expired, by identity, with
    /// `leader` marked as such and the shards each holds.
    pub async fn live(&self, leader: Option<&str>) -> Result<Vec<Member>, Error> {
        let list = |selector: String| async move {
            self.api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::List)
        };
        let announcements = list(format!("{REPLICA_OF_LABEL}={}", self.election_lease)).await?;
        let elected = list(format!("{ELECTION_LABEL}={}", self.election_lease)).await?;
        let shards: Vec<&Lease> = elected
            .items
            .iter()
            .filter(|lease| lease.metadata.name.as_ref() != Some(&self.election_lease))
            .collect();
        Ok(live_replicas(
            &announcements.items,
            &shards,
            leader,
            Timestamp::now(),
        ))
    }
}

/// The Lease's holder while its renewTime plus duration is after `now`,
/// with the renewal (judged by the writer's clock: good enough to list
/// replicas, never used to decide who may act).
fn live_holder(lease: &Lease, now: Timestamp) -> Option<(String, Timestamp)> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let expires = renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
        .ok()?;
    (expires > now).then_some((holder, renewed))
}

/// Where an announced replica runs plugins; an older host, without the
/// label, on its leader.
pub fn placement_of(announcement: &Lease) -> &str {
    announcement
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(PLACEMENT_LABEL))
        .map_or("leader", String::as_str)
}

/// Pure: which announcements are still live at `now`, with the live shard
/// Leases each holds.
fn live_replicas(
    announcements: &[Lease],
    shards: &[&Lease],
    leader: Option<&str>,
    now: Timestamp,
) -> Vec<Member> {
    let mut replicas: Vec<Member> = announcements
        .iter()
        .filter_map(|lease| {
            let (identity, renewed) = live_holder(lease, now)?;
            let mut held: Vec<String> = shards
                .iter()
                .filter(|shard| live_holder(shard, now).is_some_and(|(h, _)| h == identity))
                .filter_map(|shard| shard.metadata.name.clone())
                .collect();
            held.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
            Some(Member {
                role: if leader == Some(identity.as_str()) {
                    Role::Leader
                } else {
                    Role::Follower
                },
                last_seen: Some(renewed.to_string()),
                identity,
                shards: held,
                placement: placement_of(lease).to_owned(),
            })
        })
        .collect();
    replicas.sort_by(|a, b| a.identity.cmp(&b.identity));
    replicas
}

/// A valid object name for `identity`'s Lease. Identities are free text
/// (`host_1a2b`, `Pod.Name`), so anything that is not already a valid name is
/// cleaned up and given a hash suffix to keep distinct identities distinct.
pub fn replica_lease_name(election_lease: &str, identity: &str) -> String {
    let raw = format!("{election_lease}-replica-{identity}");
    let mut clean: String = raw
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    if clean == raw && clean.len() <= MAX_NAME_LEN {
        return clean;
    }
    let hash = fnv1a(identity.as_bytes());
    clean.truncate(MAX_NAME_LEN - 9);
    let clean = clean.trim_end_matches(['-', '.']);
    format!("{clean}-{hash:08x}")
}

/// A stable 32-bit hash (FNV-1a): names must not change between releases.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_identities_keep_a_readable_lease_name() {
        assert_eq!(
            replica_lease_name("leasehold", "leasehold-7d9f-abc"),
            "leasehold-replica-leasehold-7d9f-abc"
        );
    }

    #[test]
    fn identities_that_are_not_names_get_a_distinct_valid_name() {
        let a = replica_lease_name("leasehold", "Host_A");
        let b = replica_lease_name("leasehold", "host-a");
        let c = replica_lease_name("leasehold", "host_a");
        assert!(a.starts_with("leasehold-replica-host-a-"), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, c);
        let long = replica_lease_name("leasehold", &"x_".repeat(300));
        assert!(long.len() <= MAX_NAME_LEN);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    fn announcement(identity: &str, renewed: Timestamp, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn only_unexpired_announcements_are_live_and_the_leader_is_marked() {
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let fresh = Timestamp::from_second(1_700_000_095).unwrap();
        let stale = Timestamp::from_second(1_700_000_000).unwrap();
        let leases = [
            announcement("b", fresh, 15),
            announcement("gone", stale, 15),
            announcement("a", fresh, 15),
        ];
        let mut shards = [
            announcement("b", fresh, 15),
            announcement("a", stale, 15),
            announcement("b", fresh, 15),
        ];
        for (i, shard) in shards.iter_mut().enumerate() {
            shard.metadata.name = Some(format!("leasehold-shard-{}", [10, 3, 2][i]));
        }
        let shards: Vec<&Lease> = shards.iter().collect();
        let live = live_replicas(&leases, &shards, Some("b"), now);
        let summary: Vec<(&str, Role, Vec<String>)> = live
            .iter()
            .map(|r| (r.identity.as_str(), r.role, r.shards.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", Role::Follower, vec![]),
                (
                    "b",
                    Role::Leader,
                    vec!["leasehold-shard-2".into(), "leasehold-shard-10".into()]
                )
            ]
        );
    }
}
