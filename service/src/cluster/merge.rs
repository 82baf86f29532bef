//! The exact merge of per-shard top-k lists into the global top-k.
//!
//! A single node orders hits by distance and breaks ties by record id, which is ingest order
//! (`service/src/search/group.rs`, `Scored`). In a cluster the ingest order of every instance is
//! its JetStream stream sequence: one stream carries every shard's subject, so the sequence is
//! one total order, and each shard applies its messages in that order, so its own record ids
//! follow it. A hit's [`RankKey`] is therefore (distance, stream sequence, frame), and merging
//! each shard's exact top-k by it gives the top-k a single node fed in the same order would give:
//! every global top-k hit is in its own shard's top-k, since a shard holds a subset.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Where a hit stands in the global order: nearest first, then earliest ingested.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankKey {
    /// The ranking distance (the mode's distance, or the group score).
    pub distance: f64,
    /// The JetStream stream sequence of the instance of the (best) slice.
    pub stream_sequence: u64,
    /// The frame of that slice within its instance.
    pub frame: u32,
}

impl RankKey {
    /// The total order of hits: distance (IEEE total order, as the single node), then stream
    /// sequence, then frame.
    pub fn order(&self, other: &RankKey) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.stream_sequence.cmp(&other.stream_sequence))
            .then(self.frame.cmp(&other.frame))
    }
}

/// Why shard answers cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    /// A shard's hits are not in rank order, so its top-k cannot be trusted to be its top-k.
    #[error(
        "shard list {list} is out of order at hit {position}: every shard must run the same \
         diptych release (its hits come nearest first, ties in ingest order)"
    )]
    Unsorted {
        /// Which list (in the order given).
        list: usize,
        /// The first hit that comes before its predecessor.
        position: usize,
    },
}

/// The head of one list in the merge heap (smallest key on top).
struct Head {
    key: RankKey,
    list: usize,
    position: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap. Equal keys (the same instance twice, which a
        // correct cluster never has) fall back on the list number, so the result is defined.
        other.key.order(&self.key).then(other.list.cmp(&self.list))
    }
}

/// The `k` first hits of all `lists` in [`RankKey`] order; each list must already be in that
/// order (as a shard answers). Returns the hits themselves, moved out of their lists.
pub fn merge_top_k<T>(
    lists: Vec<Vec<T>>,
    k: usize,
    key: impl Fn(&T) -> RankKey,
) -> Result<Vec<T>, MergeError> {
    for (list, hits) in lists.iter().enumerate() {
        for position in 1..hits.len() {
            if key(&hits[position]).order(&key(&hits[position - 1])) == Ordering::Less {
                return Err(MergeError::Unsorted { list, position });
            }
        }
    }
    let mut heap = BinaryHeap::with_capacity(lists.len());
    for (list, hits) in lists.iter().enumerate() {
        if let Some(first) = hits.first() {
            heap.push(Head {
                key: key(first),
                list,
                position: 0,
            });
        }
    }
    let mut order = Vec::with_capacity(k);
    while order.len() < k {
        let Some(head) = heap.pop() else { break };
        order.push((head.list, head.position));
        if let Some(next) = lists[head.list].get(head.position + 1) {
            heap.push(Head {
                key: key(next),
                list: head.list,
                position: head.position + 1,
            });
        }
    }
    // Move the chosen hits out of their lists without cloning.
    let mut lists: Vec<Vec<Option<T>>> = lists
        .into_iter()
        .map(|hits| hits.into_iter().map(Some).collect())
        .collect();
    Ok(order
        .into_iter()
        .filter_map(|(list, position)| lists[list][position].take())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(distance: f64, stream_sequence: u64, frame: u32) -> RankKey {
        RankKey {
            distance,
            stream_sequence,
            frame,
        }
    }

    #[test]
    fn ties_go_to_the_earlier_ingested_slice_across_shards() {
        let a = vec![key(1.0, 5, 0), key(2.0, 1, 0)];
        let b = vec![key(1.0, 3, 1), key(1.0, 5, 1)];
        let merged = merge_top_k(vec![a, b], 3, |h| *h).unwrap();
        assert_eq!(merged, vec![key(1.0, 3, 1), key(1.0, 5, 0), key(1.0, 5, 1)]);
    }

    #[test]
    fn a_shard_list_out_of_order_is_refused() {
        let a = vec![key(2.0, 1, 0), key(1.0, 2, 0)];
        assert_eq!(
            merge_top_k(vec![vec![], a], 2, |h| *h),
            Err(MergeError::Unsorted {
                list: 1,
                position: 1
            })
        );
    }

    #[test]
    fn fewer_hits_than_k_gives_them_all() {
        let merged = merge_top_k(vec![vec![key(0.5, 1, 0)], vec![]], 10, |h| *h).unwrap();
        assert_eq!(merged.len(), 1);
    }

    proptest! {
        /// Splitting a corpus over shards (a study's instances on one shard), taking each
        /// shard's top-k and merging gives the top-k of the whole corpus sorted by rank key.
        #[test]
        fn merge_of_shard_top_k_equals_the_global_top_k(
            hits in proptest::collection::vec((0u8..6, 0u8..4, 0u8..3), 0..120),
            shards in 1usize..5,
            k in 0usize..30,
        ) {
            // (distance bucket: small so ties are common, shard, frame count), one per instance.
            let mut all = Vec::new();
            let mut per_shard = vec![Vec::new(); shards];
            for (seq, &(distance, shard, frames)) in hits.iter().enumerate() {
                for frame in 0..=u32::from(frames) {
                    let h = key(f64::from(distance) + f64::from(frame) * 0.5, seq as u64 + 1, frame);
                    all.push(h);
                    per_shard[usize::from(shard) % shards].push(h);
                }
            }
            let sort = |v: &mut Vec<RankKey>| v.sort_by(|a, b| a.order(b));
            sort(&mut all);
            all.truncate(k);
            let lists: Vec<Vec<RankKey>> = per_shard
                .into_iter()
                .map(|mut v| {
                    sort(&mut v);
                    v.truncate(k);
                    v
                })
                .collect();
            let merged = merge_top_k(lists, k, |h| *h).unwrap();
            prop_assert_eq!(merged, all);
        }
    }
}
