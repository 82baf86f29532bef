//! Which shard holds a study: rendezvous (highest random weight) hashing of the Study Instance
//! UID over a shard count fixed at install.
//!
//! Every instance of a study goes to one shard, so grouping by study or series is exact on each
//! shard and the router only merges. The score of a (study, shard) pair is the first eight bytes
//! of SHA-256 over the UID, a zero byte and the shard number: the same on every machine and
//! every release, so routers never disagree and a restart never moves a study.

use sha2::{Digest, Sha256};

/// Most shards a cluster may have.
pub const MAX_SHARDS: u32 = 1024;

/// The JetStream subject that carries the instances of `shard`.
pub fn subject(shard: u32) -> String {
    format!("{}.{shard}", super::SUBJECT_PREFIX)
}

/// Why a shard map cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardMapError {
    /// The shard count is zero or above [`MAX_SHARDS`].
    #[error(
        "[cluster] shards is {0}: it must be between 1 and {MAX_SHARDS}, and the same on every \
         router and shard of the cluster"
    )]
    Count(u32),
}

/// The placement of studies on a fixed number of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    shards: u32,
}

impl ShardMap {
    /// A map over `shards` shards, numbered from 0.
    pub fn new(shards: u32) -> Result<Self, ShardMapError> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(ShardMapError::Count(shards));
        }
        Ok(ShardMap { shards })
    }

    /// How many shards there are.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard that holds the study `study_instance_uid`: the one with the highest score
    /// (ties, which SHA-256 makes practically impossible, go to the lower shard number).
    pub fn shard_of(&self, study_instance_uid: &str) -> u32 {
        let mut best = (0u64, 0u32);
        for shard in 0..self.shards {
            let s = score(study_instance_uid, shard);
            if shard == 0 || s > best.0 {
                best = (s, shard);
            }
        }
        best.1
    }
}

/// The rendezvous score of a study on a shard.
fn score(study_instance_uid: &str, shard: u32) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(study_instance_uid.as_bytes());
    hasher.update([0u8]);
    hasher.update(shard.to_be_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(i: u32) -> String {
        format!("1.2.826.0.1.3680043.8.498.{i}")
    }

    #[test]
    fn counts_outside_the_range_are_refused_with_the_fix() {
        assert_eq!(ShardMap::new(0), Err(ShardMapError::Count(0)));
        let error = ShardMap::new(MAX_SHARDS + 1).unwrap_err().to_string();
        assert!(error.contains("[cluster] shards"), "{error}");
        assert!(ShardMap::new(1).is_ok() && ShardMap::new(MAX_SHARDS).is_ok());
    }

    #[test]
    fn one_shard_takes_everything() {
        let map = ShardMap::new(1).unwrap();
        assert!((0..100).all(|i| map.shard_of(&uid(i)) == 0));
    }

    #[test]
    fn placement_is_fixed_across_releases() {
        // Pinned values: a change here would move every existing study to another shard.
        let map = ShardMap::new(4).unwrap();
        let placed: Vec<u32> = (0..8).map(|i| map.shard_of(&uid(i))).collect();
        assert_eq!(placed, PINNED);
        assert_eq!(subject(3), "diptych.ingest.3");
    }

    // Also computed outside Rust (Python hashlib) from the rule in docs/CLUSTER.md.
    const PINNED: [u32; 8] = [1, 2, 0, 1, 1, 3, 2, 3];

    #[test]
    fn studies_spread_evenly() {
        for shards in [2u32, 3, 5, 8] {
            let map = ShardMap::new(shards).unwrap();
            let mut counts = vec![0u32; shards as usize];
            let n = 20_000;
            for i in 0..n {
                counts[map.shard_of(&uid(i)) as usize] += 1;
            }
            let expected = f64::from(n) / f64::from(shards);
            for (shard, &count) in counts.iter().enumerate() {
                let off = (f64::from(count) - expected).abs() / expected;
                assert!(
                    off < 0.05,
                    "{shards} shards: shard {shard} has {count}, expected ~{expected}"
                );
            }
        }
    }

    #[test]
    fn adding_a_shard_moves_only_studies_onto_it() {
        // Rendezvous hashing's property: from n to n + 1 shards, a study either stays or moves
        // to the new shard, and about 1/(n+1) of them move.
        let (before, after) = (ShardMap::new(4).unwrap(), ShardMap::new(5).unwrap());
        let mut moved = 0;
        let n = 10_000;
        for i in 0..n {
            let (a, b) = (before.shard_of(&uid(i)), after.shard_of(&uid(i)));
            if a != b {
                assert_eq!(b, 4, "study {i} moved from shard {a} to the old shard {b}");
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(n);
        assert!((share - 0.2).abs() < 0.02, "{share} of the studies moved");
    }
}
