//! The data folders of `diptych bench cluster`: N records of [`super::ready`]'s builder in one
//! folder for the single node, and the same records split by [`ShardMap`] into one folder per
//! shard, as the shards would hold them after consuming an ingest stream that carried the N
//! instances in the single node's order.
//!
//! A shard orders equal distances by each instance's stream sequence (its `cluster/sequences`
//! file, docs/CLUSTER.md). Publishing a million instances through JetStream and encoding them
//! again would take hours on this machine, so the shard folders are written directly: record
//! `i` of the single node's folder gets the stream sequence `i + 1` it would have had, had the
//! records been published one by one in that order; a shard's own records keep that order. The
//! stream itself stays empty, and a shard consuming it from the start finds nothing to apply.

use std::path::{Path, PathBuf};

use anyhow::Context;
use diptych_service::cluster::shard::{Sequences, state_dir};
use diptych_service::cluster::shard_map::ShardMap;
use diptych_service::encoder::Engine;

use super::ready::{Records, metadata_of, study_of, write_folder};

/// The folders of one record count and shard count.
#[derive(Debug, Clone)]
pub struct Folders {
    /// Every record, for the single node.
    pub single: PathBuf,
    /// One folder per shard, in shard order.
    pub shards: Vec<PathBuf>,
    /// Records in each shard's folder.
    pub shard_records: Vec<usize>,
}

/// The ids of the records each shard holds, ascending: a study (150 records) goes where the
/// shard map puts its Study Instance UID.
pub fn split(map: &ShardMap, records: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); map.shards() as usize];
    let mut current: Option<(String, usize)> = None;
    for i in 0..records {
        let study = study_of(i);
        let shard = match &current {
            Some((uid, shard)) if *uid == study => *shard,
            _ => {
                let shard = map.shard_of(&study) as usize;
                current = Some((study, shard));
                shard
            }
        };
        out[shard].push(i);
    }
    out
}

/// The stream sequence record `i` would have had: its place in the single node's ingest order.
pub fn stream_sequence(i: usize) -> u64 {
    i as u64 + 1
}

/// Builds the folders under `work/records-<N>/` unless a previous run completed them (each is
/// marked `complete` last); `engine` encodes the seeds when something is to be built.
pub async fn build(
    engine: &Engine,
    work: &Path,
    records: usize,
    shards: u32,
) -> anyhow::Result<Folders> {
    let map = ShardMap::new(shards)?;
    let root = work.join(format!("records-{records}"));
    let single = root.join("single");
    let shard_root = root.join(format!("shards-{shards}"));
    let shard_dirs: Vec<PathBuf> = (0..shards)
        .map(|s| shard_root.join(format!("shard-{s}")))
        .collect();
    let ids = split(&map, records);
    let missing = |dir: &PathBuf| !dir.join("complete").is_file();
    if missing(&single) || shard_dirs.iter().any(missing) {
        let built = Records::replicate(engine, records, 2048.min(records as u64).max(1)).await?;
        if missing(&single) {
            write_folder(&single, &built, &(0..records).collect::<Vec<_>>())?;
        }
        for (dir, ids) in shard_dirs.iter().zip(&ids) {
            if missing(dir) {
                write_shard_folder(dir, &built, ids)?;
            }
        }
    }
    Ok(Folders {
        single,
        shards: shard_dirs,
        shard_records: ids.iter().map(Vec::len).collect(),
    })
}

/// A shard's folder: its records, and the stream sequence of each in `cluster/sequences`.
fn write_shard_folder(dir: &Path, records: &Records, ids: &[usize]) -> anyhow::Result<()> {
    write_folder(dir, records, ids)?;
    // `complete` is written last again once the sequences are in.
    std::fs::remove_file(dir.join("complete"))?;
    let sequences = Sequences::open(&state_dir(dir))
        .with_context(|| format!("writing the stream sequences of {}", dir.display()))?;
    for &i in ids {
        sequences.record(&metadata_of(i).sop_instance_uid, stream_sequence(i))?;
    }
    sequences.sync()?;
    std::fs::write(dir.join("complete"), ids.len().to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_keeps_every_record_once_in_order_and_studies_whole() {
        let records = 30_000; // 200 studies of 150
        let map = ShardMap::new(2).unwrap();
        let split = split(&map, records);
        assert_eq!(split.len(), 2);
        let mut all: Vec<usize> = split.concat();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..records).collect::<Vec<_>>(),
            "each record exactly once"
        );
        for (shard, ids) in split.iter().enumerate() {
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "ascending on shard {shard}"
            );
            for &i in ids {
                // Where the router would publish the instance.
                let study = metadata_of(i).study_instance_uid;
                assert_eq!(map.shard_of(&study) as usize, shard, "record {i}");
            }
            // Rendezvous hashing spreads 200 studies about evenly.
            let share = ids.len() as f64 / records as f64;
            assert!((0.35..0.65).contains(&share), "shard {shard}: {share}");
        }
        // One shard: everything, in order.
        let one = super::split(&ShardMap::new(1).unwrap(), 1000);
        assert_eq!(one, vec![(0..1000).collect::<Vec<_>>()]);
    }

    #[test]
    fn stream_sequences_follow_the_single_nodes_order_from_one() {
        assert_eq!(stream_sequence(0), 1);
        assert_eq!(stream_sequence(999_999), 1_000_000);
    }
}
