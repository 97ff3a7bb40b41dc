//! Which replica should lead which shard: a pure function of what every
//! replica sees (the live replicas, each shard's plugins, each shard's
//! current holder), so replicas that see the same agree without talking.
//!
//! The Leases keep two replicas from ever leading one shard at once; this
//! only decides who *should*, and a disagreement while views differ costs a
//! late handover, never a double run.
//!
//! # The rule
//!
//! Shards are taken heaviest first (then by index). A shard stays with its
//! holder while that keeps the holder within the fair share
//! (`ceil(total weight / replicas)`); otherwise it goes to the replica with
//! the least weight so far (ties go to the holder, then by rendezvous
//! hashing, so they do not all fall on one name). Heaviest-first keeps the loads within one
//! shard of even; keeping holders under the share means a joining replica
//! takes only the excess, and a departed one's shards are the only ones
//! that move.
//!
//! The result is a fixed point: once each shard is held by the replica the
//! rule names, the rule names the same replicas again. (By induction along
//! the order: a shard's decision depends only on the shards before it; a
//! shard given to the least-loaded replica is, the next time round, either
//! within that replica's share, so kept, or no replica's, so given to the
//! least-loaded again: the same one, ties going to the holder.) Placement therefore settles after
//! one move per shard and does not flap.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::stable_hash;

/// One shard as every replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardView {
    /// What running it costs: its plugins that are not suspended.
    pub weight: u32,
    /// Whether anything is in it at all (a shard of suspended plugins still
    /// needs a holder to write their statuses).
    pub needed: bool,
    /// Who holds its Lease, if that holder is live.
    pub holder: Option<String>,
}

/// The replica that should lead each shard (`None` for a shard nobody
/// needs, or when no replica is live). `members` are the live replicas.
pub fn assign(members: &[String], shards: &[ShardView]) -> Vec<Option<String>> {
    let mut desired = vec![None; shards.len()];
    if members.is_empty() {
        return desired;
    }
    let total: u64 = shards.iter().map(|shard| u64::from(shard.weight)).sum();
    let share = total.div_ceil(members.len() as u64);
    let mut load: BTreeMap<&str, u64> = members.iter().map(|m| (m.as_str(), 0)).collect();
    let mut order: Vec<usize> = (0..shards.len()).filter(|&i| shards[i].needed).collect();
    order.sort_by_key(|&i| (Reverse(shards[i].weight), i));
    for index in order {
        let weight = u64::from(shards[index].weight);
        let keeps = shards[index]
            .holder
            .as_deref()
            .filter(|holder| load.get(holder).is_some_and(|l| l + weight <= share));
        let chosen: &str = match keeps {
            Some(holder) => holder,
            None => members
                .iter()
                .map(String::as_str)
                .min_by_key(|&member| {
                    let other = shards[index].holder.as_deref() != Some(member);
                    (load[member], other, Reverse(rendezvous(index, member)))
                })
                .expect("members is not empty"),
        };
        *load.get_mut(chosen).expect("a member") += weight;
        desired[index] = Some(chosen.to_owned());
    }
    desired
}

/// Rendezvous (highest random weight) score of `member` for `shard`.
fn rendezvous(shard: usize, member: &str) -> u64 {
    stable_hash(format!("{shard}/{member}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::shard_of;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Shards holding `plugins` plugins named `team-<i>/plugin-<i>`.
    fn shards_of(plugins: usize, count: u32) -> Vec<ShardView> {
        let mut shards = vec![ShardView::default(); count as usize];
        for i in 0..plugins {
            let shard = &mut shards[shard_of(&format!("team-{i}/plugin-{i}"), count) as usize];
            shard.weight += 1;
            shard.needed = true;
        }
        shards
    }

    fn held(shards: &[ShardView], desired: &[Option<String>]) -> Vec<ShardView> {
        shards
            .iter()
            .zip(desired)
            .map(|(shard, holder)| ShardView {
                holder: holder.clone(),
                ..shard.clone()
            })
            .collect()
    }

    fn loads(shards: &[ShardView], desired: &[Option<String>]) -> BTreeMap<String, u32> {
        let mut loads = BTreeMap::new();
        for (shard, holder) in shards.iter().zip(desired) {
            if let Some(holder) = holder {
                *loads.entry(holder.clone()).or_default() += shard.weight;
            }
        }
        loads
    }

    #[test]
    fn thirty_plugins_spread_within_a_fifth_of_an_even_third() {
        let members = names(&["a", "b", "c"]);
        let shards = shards_of(30, 16);
        let desired = assign(&members, &shards);
        let loads = loads(&shards, &desired);
        assert_eq!(loads.len(), 3, "{loads:?}");
        for load in loads.values() {
            assert!((8..=12).contains(load), "{loads:?}");
        }
    }

    #[test]
    fn every_needed_shard_gets_a_live_replica_and_no_other_does() {
        let members = names(&["a", "b"]);
        let mut shards = shards_of(5, 8);
        shards[7] = ShardView {
            weight: 0,
            needed: true,
            holder: Some("gone".into()),
        };
        let desired = assign(&members, &shards);
        for (shard, holder) in shards.iter().zip(&desired) {
            assert_eq!(shard.needed, holder.is_some(), "{shards:?} → {desired:?}");
            if let Some(holder) = holder {
                assert!(members.contains(holder));
            }
        }
        assert_eq!(assign(&[], &shards), vec![None; 8]);
    }

    #[test]
    fn once_held_as_assigned_the_assignment_stays_put() {
        for plugins in [1, 7, 30, 61, 200] {
            for replicas in 1..=5 {
                let members: Vec<String> = (0..replicas).map(|i| format!("r{i}")).collect();
                let shards = shards_of(plugins, 16);
                let first = assign(&members, &shards);
                let again = assign(&members, &held(&shards, &first));
                assert_eq!(first, again, "{plugins} plugins on {replicas} replicas");
            }
        }
    }

    #[test]
    fn a_joining_replica_takes_only_shards_from_replicas_above_their_share() {
        let shards = shards_of(30, 16);
        let two = assign(&names(&["a", "b"]), &shards);
        let three = assign(&names(&["a", "b", "c"]), &held(&shards, &two));
        let loads = loads(&shards, &three);
        assert!(loads["c"] >= 8, "{loads:?}");
        let moved: Vec<usize> = (0..16).filter(|&i| two[i] != three[i]).collect();
        for &i in &moved {
            assert_eq!(
                three[i].as_deref(),
                Some("c"),
                "shard {i} moved between old replicas"
            );
        }
    }

    #[test]
    fn a_departed_replicas_shards_move_and_no_others_do() {
        let shards = shards_of(30, 16);
        let three = assign(&names(&["a", "b", "c"]), &shards);
        let mut after = held(&shards, &three);
        for shard in &mut after {
            if shard.holder.as_deref() == Some("b") {
                shard.holder = None;
            }
        }
        let two = assign(&names(&["a", "c"]), &after);
        for i in 0..16 {
            if three[i].as_deref() != Some("b") {
                assert_eq!(two[i], three[i], "shard {i} moved though its holder stayed");
            } else {
                assert!(matches!(two[i].as_deref(), Some("a" | "c")));
            }
        }
    }
}
