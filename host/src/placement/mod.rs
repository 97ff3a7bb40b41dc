//! Where plugins run: all on the elected leader (`leader`, the default), or
//! spread over every live replica (`spread`).
//!
//! # Spread placement
//!
//! Plugins are hashed onto a fixed number of shards (`--shards`, 16 by
//! default), and each shard is a Lease of its own, `<lease>-shard-<i>`,
//! elected exactly like the main one: one replica at a time leads a shard
//! and runs its plugins, stops them before its term can end, and (with
//! fencing) every write it makes carries the shard's term, which the
//! chart's policy checks against that shard's Lease (each carries the
//! election's label, so the one binding covers them all). The API server's
//! Lease write rate is therefore bounded by the shard count, whatever the
//! number of plugins: one renewal per held shard per retry period.
//!
//! Which replica *should* lead each shard is a pure function of what every
//! replica sees ([`assign`]): the live replicas (the directory's Leases),
//! each shard's plugins (the catalogue every replica keeps) and each
//! shard's holder. Every replica follows every shard's Lease through one
//! shared watch and campaigns only for the shards assigned to it; a shard
//! assigned elsewhere is drained and released (a handover, as on shutdown).
//! So a joining replica takes its share by handover, and a dead one's
//! shards move as soon as their Leases expire: a holder whose shard Lease
//! went unrenewed for its duration counts as gone from that instant (and
//! stays gone once another replica has taken that Lease over, until it
//! announces itself again), and its successor, already following that
//! Lease, acquires it at once. The survivors keep the shards they lead.
//!
//! # Changing placement
//!
//! Replicas of different placements (or shard counts) would each run the
//! plugins: a leader-mode leader all of them, spread replicas their shards.
//! The election Lease is the mutex between placements. A leader-mode
//! leader runs plugins only while no shard Lease is held; a spread replica
//! leads shards only while the election Lease is held (or, between two
//! holders, was last held) by a replica spread the same way (each replica
//! announces its placement in the directory; the last one it announced
//! counts) and no shard is held by one spread differently. Incumbents go on,
//! newcomers wait: a rolling `helm upgrade` from one placement to the other
//! keeps the old replicas running plugins until the last of them has
//! drained and left, then the new ones start (see [`agreement`]).

pub mod agreement;
mod assign;
mod seen;
mod spread;

use std::fmt;

pub use self::assign::{ShardView, assign};
pub use self::spread::Spread;

/// Placement options, flattened into `leasehold run`.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Placement")]
#[group(id = "placement-options")]
pub struct Options {
    /// Where plugins run: `leader` runs every plugin on the elected
    /// replica; `spread` spreads them over every live replica, each led by
    /// exactly one.
    #[arg(long, env = "LEASEHOLD_PLACEMENT", value_enum, default_value_t = Mode::Leader)]
    pub placement: Mode,

    /// With `--placement spread`: how many shard Leases plugins are hashed
    /// onto. Bounds the Lease writes (one per held shard per retry period)
    /// and the finest split of the work. Every replica must use the same.
    #[arg(long, env = "LEASEHOLD_SHARDS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shards: u32,
}

/// `--placement`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Leader,
    Spread,
}

/// Validated placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Every plugin on the leader of the main Lease.
    Leader,
    /// Plugins hashed onto `shards` shard Leases, each led by one replica.
    Spread { shards: u32 },
}

impl Options {
    pub fn placement(&self) -> Placement {
        match self.placement {
            Mode::Leader => Placement::Leader,
            Mode::Spread => Placement::Spread {
                shards: self.shards,
            },
        }
    }
}

impl Placement {
    /// How this placement is announced in the replica directory:
    /// `leader` or `spread-<shards>`. Replicas run plugins only while every
    /// live replica announces the same (see [`agreement`]).
    pub fn announced(self) -> String {
        match self {
            Self::Leader => "leader".to_owned(),
            Self::Spread { shards } => format!("spread-{shards}"),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Leader => f.write_str("leader"),
            Self::Spread { shards } => write!(f, "spread over {shards} shards"),
        }
    }
}

/// Which of `shards` shards the plugin `key` (`namespace/name`, or a
/// manifest's name) belongs to. Stable across processes and releases.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    (stable_hash(key.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// The name of shard `index`'s Lease.
pub fn shard_lease_name(lease: &str, index: u32) -> String {
    format!("{lease}-shard-{index}")
}

/// A hash that never changes between processes or releases: shard
/// placement must agree across every replica, unlike std's randomly seeded
/// hasher. FNV-1a (64 bits), then murmur3's finaliser: FNV's low bits
/// alone put 14 of 30 similar names (`team-<i>/plugin-<i>`) on one of 16
/// shards.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    #[test]
    fn placement_defaults_to_the_leader_and_spread_takes_a_shard_count() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("leasehold").chain(args.iter().copied()))
                .map(|cli| cli.options.placement())
        };
        assert_eq!(parse(&[]).unwrap(), Placement::Leader);
        assert_eq!(
            parse(&["--placement", "spread"]).unwrap(),
            Placement::Spread { shards: 16 }
        );
        assert_eq!(
            parse(&["--placement=spread", "--shards=3"]).unwrap(),
            Placement::Spread { shards: 3 }
        );
        for bad in [
            &["--placement", "everywhere"][..],
            &["--shards", "0"],
            &["--shards", "257"],
            &["--shards", "many"],
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains("invalid value"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_plugin_keeps_its_shard_across_processes() {
        // Fixed values: a change here moves every plugin of every deployment.
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(shard_of("team/mirror", 16), shard_of("team/mirror", 16));
        assert!((0..50).all(|i| shard_of(&format!("ns/p{i}"), 7) < 7));
        assert_eq!(shard_lease_name("leasehold", 3), "leasehold-shard-3");
    }
}
