//! The election's Leases (its own and its shards') and the replicas'
//! announcements as this replica has seen them through its watches, each
//! with the local instant its current version was first seen: expiry is
//! judged from there, as the elector judges it, never from another
//! replica's clock. Spread placement decides from it who leads which
//! shard, and both placements whether the replicas agree on how plugins
//! run.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher::{self, Event};
use tokio::time::Instant;
use tracing::debug;

use super::agreement::Disagreement;
use super::{ShardView, shard_of};
use crate::election::directory::placement_of;
use crate::plugins::{Catalog, State};

/// Which watch a Lease came from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Watched {
    /// The election's Leases: its own and its shards'.
    Election,
    /// The replicas' announcements.
    Announcement,
}

/// The Leases of the election as this replica has seen them, each with
/// the local instant its current version was first seen (expiry is judged
/// from there, as the elector does, never from another replica's clock).
#[derive(Default)]
pub struct Seen {
    leases: HashMap<(Watched, String), Observed>,
    /// Replicas that let an election Lease run out, with the instant it
    /// ran out: they stay gone, even once another replica has taken that
    /// Lease over, until they announce themselves again afterwards.
    lapsed: HashMap<String, Instant>,
    /// The placement each replica last announced, kept after its
    /// announcement is deleted: it ran plugins that way until it left.
    announced: HashMap<String, String>,
    /// Each election Lease's last named holder, kept once it is released
    /// or runs out.
    last_holders: HashMap<String, String>,
}

struct Observed {
    lease: Lease,
    since: Instant,
}

impl Observed {
    /// Its holder, while its duration has not run out since it was seen.
    fn holder(&self, now: Instant) -> Option<&str> {
        self.named_holder().filter(|_| now < self.expires_at())
    }

    /// Its holder, once its duration has run out without a renewal.
    fn expired_holder(&self, now: Instant) -> Option<&str> {
        self.named_holder().filter(|_| now >= self.expires_at())
    }

    fn named_holder(&self) -> Option<&str> {
        named_holder(&self.lease)
    }

    fn expires_at(&self) -> Instant {
        let seconds = self
            .lease
            .spec
            .as_ref()
            .and_then(|spec| spec.lease_duration_seconds)
            .unwrap_or(0);
        self.since + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }
}

/// Who `lease` names as its holder, if anyone.
fn named_holder(lease: &Lease) -> Option<&str> {
    let spec = lease.spec.as_ref()?;
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

impl Seen {
    /// Records a watch event; returns the Lease's name and its new state
    /// (`None`: deleted) when one changed.
    pub fn record(
        &mut self,
        watched: Watched,
        event: Result<Event<Lease>, watcher::Error>,
    ) -> Option<(String, Option<Lease>)> {
        match event {
            Ok(Event::Apply(lease) | Event::InitApply(lease)) => {
                let name = lease.metadata.name.clone()?;
                let key = (watched, name.clone());
                let previous = self.leases.get(&key);
                let unchanged = previous.is_some_and(|seen| {
                    seen.lease.metadata.resource_version == lease.metadata.resource_version
                });
                if !unchanged {
                    let now = Instant::now();
                    // Taken over after running out (a holder that renews
                    // late is merely slow).
                    if let Some(previous) = previous
                        && let Some(holder) = previous.expired_holder(now)
                        && named_holder(&lease) != Some(holder)
                    {
                        self.lapsed.insert(holder.to_owned(), previous.expires_at());
                    }
                    self.remember(watched, &name, &lease, now);
                    self.leases.insert(
                        key,
                        Observed {
                            lease: lease.clone(),
                            since: now,
                        },
                    );
                }
                Some((name, Some(lease)))
            }
            Ok(Event::Delete(lease)) => {
                let name = lease.metadata.name?;
                self.leases.remove(&(watched, name.clone()));
                self.forget_the_departed();
                Some((name, None))
            }
            Ok(Event::Init | Event::InitDone) => None,
            Err(error) => {
                debug!(%error, "lease watch interrupted; reconnecting");
                None
            }
        }
    }

    /// Keeps what outlives a Lease version: its holder's placement (an
    /// announcement), its last named holder (an election Lease).
    fn remember(&mut self, watched: Watched, name: &str, lease: &Lease, now: Instant) {
        let Some(holder) = named_holder(lease) else {
            return;
        };
        match watched {
            Watched::Announcement => {
                self.announced
                    .insert(holder.to_owned(), placement_of(lease).to_owned());
                // Announced again since it lapsed: back.
                self.lapsed
                    .retain(|replica, at| replica != holder || *at >= now);
            }
            Watched::Election => {
                self.last_holders.insert(name.to_owned(), holder.to_owned());
            }
        }
    }

    /// Forgets what is kept of replicas no Lease names any more (every
    /// rollout brings new pod names): not announced, holding nothing, and
    /// not an election Lease's last holder.
    fn forget_the_departed(&mut self) {
        let named: std::collections::HashSet<&str> = self
            .leases
            .values()
            .filter_map(Observed::named_holder)
            .chain(self.last_holders.values().map(String::as_str))
            .collect();
        self.announced
            .retain(|replica, _| named.contains(replica.as_str()));
        self.lapsed
            .retain(|replica, _| named.contains(replica.as_str()));
    }

    fn of(&self, watched: Watched) -> impl Iterator<Item = &Observed> {
        self.leases
            .iter()
            .filter(move |((from, _), _)| *from == watched)
            .map(|(_, observed)| observed)
    }

    /// The replicas whose announcement is live, less those that let a
    /// shard Lease expire (gone or cut off: their shards must move now,
    /// not when their announcement runs out too). This replica is always
    /// live to itself.
    pub fn live_members(&self, identity: &str, now: Instant) -> Vec<String> {
        let lapsed: Vec<&str> = self
            .of(Watched::Election)
            .filter_map(|observed| observed.expired_holder(now))
            .chain(self.lapsed.keys().map(String::as_str))
            .collect();
        let mut members: Vec<String> = self
            .of(Watched::Announcement)
            .filter_map(|observed| observed.holder(now))
            .filter(|member| !lapsed.contains(member) && *member != identity)
            .map(str::to_owned)
            .collect();
        members.push(identity.to_owned());
        members.sort();
        members.dedup();
        members
    }

    /// The placement replica `identity` last announced, as seen here. A
    /// lapsed or deleted announcement still counts: a killed replica's
    /// announcement can run out a moment before its shard Leases do, and a
    /// replica ran plugins the way it last said until it died or left (a
    /// restarted one announces afresh before it leads).
    fn placement_of(&self, identity: &str) -> Option<&str> {
        self.announced.get(identity).map(String::as_str)
    }

    /// Whether this replica, spread as `ours`, may lead shards of the
    /// election `lease`: the election Lease is held, or was last held, by a
    /// replica spread the same way (it is the mutex between placements: a
    /// leader-mode leader runs plugins only while holding it, and only once
    /// no shard is led),
    /// and every shard Lease held is held by one too (a replica spread over
    /// another count hashes plugins onto other shards). Other replicas
    /// merely announced do not stop it: newcomers wait for incumbents.
    pub fn spread_may_lead(
        &self,
        ours: &str,
        lease: &str,
        identity: &str,
        now: Instant,
    ) -> Result<(), Disagreement> {
        let differs = |holder: &str| holder != identity && self.placement_of(holder) != Some(ours);
        // While the election Lease is between holders (its holder died or
        // left), the last one still says how plugins run: it is what the
        // next holder, if spread the same way, will say too, and stopping
        // every shard on each election would stop every plugin.
        let main = self
            .of(Watched::Election)
            .find(|observed| observed.lease.metadata.name.as_deref() == Some(lease));
        let arbiter = main
            .and_then(|observed| observed.holder(now))
            .or_else(|| self.last_holders.get(lease).map(String::as_str));
        match arbiter {
            None => return Err(Disagreement::Unheld),
            Some(holder) if differs(holder) => {
                return Err(Disagreement::Holder {
                    holder: holder.to_owned(),
                    placement: self.placement_of(holder).map(str::to_owned),
                    ours: ours.to_owned(),
                });
            }
            Some(_) => {}
        }
        for observed in self.of(Watched::Election) {
            let name = observed.lease.metadata.name.as_deref().unwrap_or_default();
            if let Some(holder) = observed.holder(now)
                && name != lease
                && differs(holder)
            {
                return Err(Disagreement::ShardHeld {
                    shard: name.to_owned(),
                    holder: holder.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Whether a leader-mode leader of the election `lease` may run its
    /// plugins: no shard Lease is held (spread replicas still run theirs).
    pub fn leader_may_run(&self, lease: &str, now: Instant) -> Result<(), Disagreement> {
        for observed in self.of(Watched::Election) {
            let name = observed.lease.metadata.name.as_deref().unwrap_or_default();
            if let Some(holder) = observed.holder(now)
                && name != lease
            {
                return Err(Disagreement::ShardHeld {
                    shard: name.to_owned(),
                    holder: holder.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Each shard's plugins (from the catalogue) and live holder.
    pub fn shard_views(
        &self,
        catalog: &Catalog,
        shards: u32,
        shard_by_name: &HashMap<String, usize>,
        now: Instant,
    ) -> Vec<ShardView> {
        let mut views = vec![ShardView::default(); shards as usize];
        for (key, entry) in &catalog.entries {
            let view = &mut views[shard_of(key, shards) as usize];
            view.needed = true;
            let runs = !entry.suspend && matches!(entry.state, State::Ready(_) | State::Preparing);
            view.weight += u32::from(runs);
        }
        for ((_, name), observed) in self
            .leases
            .iter()
            .filter(|((from, _), _)| *from == Watched::Election)
        {
            if let Some(&index) = shard_by_name.get(name) {
                views[index].holder = observed.holder(now).map(str::to_owned);
            }
        }
        views
    }

    /// The next instant at which a Lease seen now runs out.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.leases
            .values()
            .filter(|observed| observed.holder(now).is_some())
            .map(Observed::expires_at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::coordination::v1::LeaseSpec;

    use super::*;
    use crate::election::directory::PLACEMENT_LABEL;

    /// A Lease `name` held by `holder` for 15 s, seen now.
    fn lease(name: &str, holder: &str, placement: Option<&str>) -> Event<Lease> {
        let mut lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        lease.metadata.name = Some(name.into());
        lease.metadata.resource_version = Some("1".into());
        if let Some(placement) = placement {
            lease.metadata.labels = Some(BTreeMap::from([(
                PLACEMENT_LABEL.to_owned(),
                placement.to_owned(),
            )]));
        }
        Event::Apply(lease)
    }

    /// The election Lease held by `holder`, and announcements.
    fn seen(holder: &str, announced: &[(&str, Option<&str>)]) -> Seen {
        let mut seen = Seen::default();
        seen.record(Watched::Election, Ok(lease("leasehold", holder, None)));
        for (replica, placement) in announced {
            let name = format!("leasehold-replica-{replica}");
            seen.record(Watched::Announcement, Ok(lease(&name, replica, *placement)));
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn spread_replicas_lead_only_under_a_leader_spread_the_same_way() {
        let now = Instant::now();
        let may_lead = |seen: &Seen| seen.spread_may_lead("spread-4", "leasehold", "me", now);
        let agreed = seen("a", &[("a", Some("spread-4")), ("me", Some("spread-4"))]);
        assert_eq!(may_lead(&agreed), Ok(()));
        // A newcomer of another placement does not stop the incumbents.
        let newcomer = seen("a", &[("a", Some("spread-4")), ("new", Some("leader"))]);
        assert_eq!(may_lead(&newcomer), Ok(()));
        // An older host leads (no placement label: every plugin on it), or
        // one that already left the directory while still draining.
        let older = seen("old", &[("old", None)]);
        assert!(matches!(may_lead(&older),
            Err(Disagreement::Holder { holder, placement: Some(p), .. }) if holder == "old" && p == "leader"));
        let leaving = seen("old", &[("me", Some("spread-4"))]);
        assert!(matches!(
            may_lead(&leaving),
            Err(Disagreement::Holder {
                placement: None,
                ..
            })
        ));
        let other_count = seen("a", &[("a", Some("spread-8"))]);
        assert!(matches!(
            may_lead(&other_count),
            Err(Disagreement::Holder { .. })
        ));
        assert_eq!(may_lead(&Seen::default()), Err(Disagreement::Unheld));
        // A shard held by a replica spread over another count.
        let mut shard = seen("me", &[("b", Some("spread-8"))]);
        shard.record(Watched::Election, Ok(lease("leasehold-shard-1", "b", None)));
        assert!(
            matches!(may_lead(&shard), Err(Disagreement::ShardHeld { holder, .. }) if holder == "b")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_replica_whose_announcement_lapses_first_does_not_stop_the_others() {
        let mut seen = seen("me", &[("a", Some("spread-4")), ("me", Some("spread-4"))]);
        // Its shard Lease was renewed a second after its announcement.
        tokio::time::advance(Duration::from_secs(1)).await;
        seen.record(Watched::Election, Ok(lease("leasehold-shard-1", "a", None)));
        tokio::time::advance(Duration::from_millis(14_500)).await;
        // This replica renews its own election Lease meanwhile.
        seen.record(
            Watched::Election,
            Ok(renewed(lease("leasehold", "me", None), "2")),
        );
        let now = Instant::now();
        assert!(!seen.live_members("me", now).contains(&"a".to_owned()));
        assert_eq!(
            seen.spread_may_lead("spread-4", "leasehold", "me", now),
            Ok(())
        );
    }

    /// `event`'s Lease deleted.
    fn deleted(event: Event<Lease>) -> Event<Lease> {
        let Event::Apply(lease) = event else {
            unreachable!("lease() builds an Apply")
        };
        Event::Delete(lease)
    }

    /// `event`'s Lease as a newer version: another resourceVersion.
    fn renewed(event: Event<Lease>, version: &str) -> Event<Lease> {
        let Event::Apply(mut lease) = event else {
            unreachable!("lease() builds an Apply")
        };
        lease.metadata.resource_version = Some(version.into());
        Event::Apply(lease)
    }

    #[tokio::test(start_paused = true)]
    async fn spread_replicas_go_on_while_the_election_lease_is_between_holders() {
        let mut seen = seen("a", &[("a", Some("spread-4")), ("me", Some("spread-4"))]);
        // Its holder was killed: the Lease runs out.
        tokio::time::advance(Duration::from_secs(16)).await;
        assert_eq!(
            seen.spread_may_lead("spread-4", "leasehold", "me", Instant::now()),
            Ok(())
        );
        // Or released, and its holder left the directory.
        seen.record(
            Watched::Election,
            Ok(renewed(lease("leasehold", "", None), "2")),
        );
        let announcement = lease("leasehold-replica-a", "a", Some("spread-4"));
        seen.record(Watched::Announcement, Ok(deleted(announcement)));
        assert_eq!(
            seen.spread_may_lead("spread-4", "leasehold", "me", Instant::now()),
            Ok(())
        );
        // A leader-mode replica takes it: spread replicas stop.
        seen.record(
            Watched::Announcement,
            Ok(lease("leasehold-replica-l", "l", Some("leader"))),
        );
        seen.record(
            Watched::Election,
            Ok(renewed(lease("leasehold", "l", None), "3")),
        );
        assert!(matches!(
            seen.spread_may_lead("spread-4", "leasehold", "me", Instant::now()),
            Err(Disagreement::Holder { holder, .. }) if holder == "l"
        ));
        // Nobody ever held it: newcomers wait.
        assert_eq!(
            Seen::default().spread_may_lead("spread-4", "leasehold", "me", Instant::now()),
            Err(Disagreement::Unheld)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_whose_shard_ran_out_stays_gone_once_another_takes_the_shard() {
        let mut seen = seen("me", &[("a", Some("spread-4")), ("me", Some("spread-4"))]);
        seen.record(Watched::Election, Ok(lease("leasehold-shard-0", "a", None)));
        seen.record(Watched::Election, Ok(lease("leasehold-shard-1", "a", None)));
        tokio::time::advance(Duration::from_secs(1)).await;
        // Its announcement was renewed a moment before it died.
        seen.record(
            Watched::Announcement,
            Ok(renewed(
                lease("leasehold-replica-a", "a", Some("spread-4")),
                "2",
            )),
        );
        tokio::time::advance(Duration::from_millis(14_500)).await;
        let members = |seen: &Seen| seen.live_members("me", Instant::now());
        assert_eq!(members(&seen), ["me"], "its shards ran out");
        // This replica takes over both of its shards.
        seen.record(
            Watched::Election,
            Ok(renewed(lease("leasehold-shard-0", "me", None), "2")),
        );
        seen.record(
            Watched::Election,
            Ok(renewed(lease("leasehold-shard-1", "me", None), "2")),
        );
        assert_eq!(members(&seen), ["me"], "gone while its announcement lasts");
        // It announces itself again (it was cut off, not dead): back.
        seen.record(
            Watched::Announcement,
            Ok(renewed(
                lease("leasehold-replica-a", "a", Some("spread-4")),
                "3",
            )),
        );
        assert_eq!(members(&seen), ["a", "me"]);
    }

    #[test]
    fn a_replica_that_left_holding_nothing_is_forgotten() {
        let mut seen = seen("me", &[("a", Some("spread-4")), ("me", Some("spread-4"))]);
        let announcement = lease("leasehold-replica-a", "a", Some("spread-4"));
        seen.record(Watched::Announcement, Ok(deleted(announcement)));
        assert_eq!(seen.placement_of("a"), None);
        assert_eq!(seen.placement_of("me"), Some("spread-4"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_mode_leader_runs_only_once_no_shard_is_led() {
        let mut seen = seen("me", &[("me", Some("leader"))]);
        assert_eq!(seen.leader_may_run("leasehold", Instant::now()), Ok(()));
        seen.record(Watched::Election, Ok(lease("leasehold-shard-0", "s", None)));
        assert!(seen.leader_may_run("leasehold", Instant::now()).is_err());
        // Its holder stopped renewing: the shard expires where it was seen.
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(seen.leader_may_run("leasehold", Instant::now()), Ok(()));
        seen.record(Watched::Election, Ok(lease("leasehold-shard-0", "", None)));
        assert_eq!(seen.leader_may_run("leasehold", Instant::now()), Ok(()));
    }
}
