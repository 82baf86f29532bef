//! Grouping: slices gathered into series or studies, and collectors of the best k groups.
//!
//! Every collector orders by (distance, record id): a group's best slice is its nearest slice,
//! the lowest record id among equals, and groups with equal scores are ordered by the record id
//! of their best slice.
//!
//! - [`GroupScore::BestSlice`]: a group scores its best slice's distance.
//! - [`GroupScore::MeanOfBestN`]: a group scores the mean of its n best slices' distances, summed
//!   in order nearest first; a group with fewer than n slices (after filter, deletions and
//!   exclusion) scores the mean of all its slices.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::{Corpus, GroupScore, Grouping};
use crate::record::RecordId;

/// A distance with the record it belongs to, ordered by distance, then record id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scored {
    /// The ranking distance.
    pub distance: f64,
    /// The record.
    pub record: RecordId,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.record.cmp(&other.record))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One ranked group: its score, its best slice, and how many slices it has (when known).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ranked {
    /// Score and best slice.
    pub best: Scored,
    /// The group's key.
    pub group: u64,
    /// Slices of the group, when the collector counted them.
    pub slices: Option<u32>,
}

/// The key a record is grouped by: its own id for instance grouping.
#[inline]
pub(crate) fn group_key(grouping: Grouping, corpus: &Corpus, id: RecordId) -> u64 {
    match grouping {
        Grouping::Instance => id as u64,
        Grouping::Series => (corpus.keys)(id).series,
        Grouping::Study => (corpus.keys)(id).study,
    }
}

/// The k nearest records (instance grouping).
#[derive(Debug)]
pub(crate) struct TopRecords {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopRecords {
    /// An empty collector of k records.
    pub fn new(k: usize) -> Self {
        TopRecords {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The k-th best distance once k records are held.
    #[inline]
    pub fn threshold(&self) -> Option<f64> {
        (self.heap.len() == self.k).then(|| self.heap.peek().expect("k ≥ 1").distance)
    }

    /// Offers a record.
    pub fn offer(&mut self, s: Scored) {
        if self.heap.len() < self.k {
            self.heap.push(s);
        } else if s < *self.heap.peek().expect("k ≥ 1") {
            self.heap.pop();
            self.heap.push(s);
        }
    }

    /// The held records, nearest first.
    pub fn into_ranked(self) -> Vec<Ranked> {
        let mut v: Vec<Ranked> = self
            .heap
            .into_iter()
            .map(|best| Ranked {
                best,
                group: best.record as u64,
                slices: Some(1),
            })
            .collect();
        v.sort_by_key(|r| r.best);
        v
    }
}

/// The k groups with the nearest best slices (best-slice score).
#[derive(Debug)]
pub(crate) struct TopGroups {
    k: usize,
    best: HashMap<u64, Scored>,
    /// Max-heap of (best slice, group); entries whose group has since improved are stale and
    /// skipped when they reach the top.
    heap: BinaryHeap<(Scored, u64)>,
}

impl TopGroups {
    /// An empty collector of k groups.
    pub fn new(k: usize) -> Self {
        TopGroups {
            k,
            best: HashMap::with_capacity(k + 1),
            heap: BinaryHeap::new(),
        }
    }

    fn drop_stale(&mut self) {
        while let Some(&(s, g)) = self.heap.peek() {
            if self.best.get(&g) == Some(&s) {
                break;
            }
            self.heap.pop();
        }
    }

    /// The k-th best group's distance once k groups are held.
    #[inline]
    pub fn threshold(&mut self) -> Option<f64> {
        if self.best.len() < self.k {
            return None;
        }
        self.drop_stale();
        self.heap.peek().map(|(s, _)| s.distance)
    }

    /// Offers a slice of group `group`.
    pub fn offer(&mut self, s: Scored, group: u64) {
        if let Some(current) = self.best.get_mut(&group) {
            if s < *current {
                *current = s;
                self.heap.push((s, group));
            }
            return;
        }
        if self.best.len() < self.k {
            self.best.insert(group, s);
            self.heap.push((s, group));
            return;
        }
        self.drop_stale();
        let &(worst, worst_group) = self.heap.peek().expect("k ≥ 1 groups held");
        if s < worst {
            self.heap.pop();
            self.best.remove(&worst_group);
            self.best.insert(group, s);
            self.heap.push((s, group));
        }
    }

    /// Merges the groups of collectors that saw disjoint records: each group keeps its best
    /// slice; the k best groups, nearest first.
    pub fn merge(parts: Vec<TopGroups>, k: usize) -> Vec<Ranked> {
        let mut best: HashMap<u64, Scored> = HashMap::new();
        for part in parts {
            for (g, s) in part.best {
                best.entry(g).and_modify(|b| *b = (*b).min(s)).or_insert(s);
            }
        }
        rank(
            best.into_iter().map(|(group, best)| Ranked {
                best,
                group,
                slices: None,
            }),
            k,
        )
    }
}

/// Every group's n best slices and slice count (mean-of-best-n score).
#[derive(Debug, Default)]
pub(crate) struct BestSlices {
    n: usize,
    groups: HashMap<u64, (Vec<Scored>, u32)>,
}

impl BestSlices {
    /// An empty collector keeping n slices per group.
    pub fn new(n: usize) -> Self {
        BestSlices {
            n,
            groups: HashMap::new(),
        }
    }

    /// Offers a slice of group `group`.
    pub fn offer(&mut self, s: Scored, group: u64) {
        let (best, count) = self.groups.entry(group).or_default();
        *count += 1;
        insert_bounded(best, s, self.n);
    }

    /// Merges collectors that saw disjoint records; the k best groups, nearest first.
    pub fn merge(parts: Vec<BestSlices>, n: usize, k: usize) -> Vec<Ranked> {
        let mut all: HashMap<u64, (Vec<Scored>, u32)> = HashMap::new();
        for part in parts {
            for (g, (slices, count)) in part.groups {
                let (best, total) = all.entry(g).or_default();
                *total += count;
                for s in slices {
                    insert_bounded(best, s, n);
                }
            }
        }
        rank(
            all.into_iter().map(|(group, (best, count))| Ranked {
                best: Scored {
                    distance: mean(&best),
                    record: best[0].record,
                },
                group,
                slices: Some(count),
            }),
            k,
        )
    }
}

/// Inserts into a sorted list kept at most `n` long.
fn insert_bounded(list: &mut Vec<Scored>, s: Scored, n: usize) {
    if list.len() == n && s >= *list.last().expect("n ≥ 1") {
        return;
    }
    let at = list.partition_point(|x| *x < s);
    list.insert(at, s);
    list.truncate(n);
}

/// Mean of the distances of a group's best slices, summed nearest first.
pub(crate) fn mean(best: &[Scored]) -> f64 {
    best.iter().map(|s| s.distance).sum::<f64>() / best.len() as f64
}

/// The k best of some ranked groups, nearest first.
pub(crate) fn rank(groups: impl Iterator<Item = Ranked>, k: usize) -> Vec<Ranked> {
    let mut v: Vec<Ranked> = groups.collect();
    v.sort_by_key(|r| r.best);
    v.truncate(k);
    v
}

/// Which collector a request needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Collect {
    /// Per-record top-k.
    Records,
    /// Top-k groups by best slice.
    BestSlice(Grouping),
    /// Every group's n best slices.
    MeanOfBest(Grouping, usize),
}

impl Collect {
    /// The collector for a grouping and a group score.
    pub fn of(grouping: Grouping, score: GroupScore) -> Collect {
        match (grouping, score) {
            (Grouping::Instance, _) => Collect::Records,
            (g, GroupScore::BestSlice) => Collect::BestSlice(g),
            (g, GroupScore::MeanOfBestN(n)) => Collect::MeanOfBest(g, n as usize),
        }
    }
}

/// Turns ranked groups into hits: both codebook distances of each best slice, and its group's
/// slice count (`count_slices` for collectors that did not count).
pub(crate) fn to_hits(
    ranked: Vec<Ranked>,
    tables: &super::QueryTables,
    corpus: &Corpus,
    count_slices: impl Fn(&[Ranked]) -> Vec<u32>,
) -> Vec<super::Hit> {
    use super::distance::position_sum;
    let counted = if ranked.iter().any(|r| r.slices.is_none()) {
        count_slices(&ranked)
    } else {
        ranked.iter().map(|r| r.slices.unwrap_or(0)).collect()
    };
    let p = corpus.positions;
    ranked
        .iter()
        .zip(counted)
        .map(|(r, group_slices)| {
            let at = r.best.record as usize * p;
            super::Hit {
                record: r.best.record,
                distance: r.best.distance,
                normal_distance: position_sum(&tables.normal, &corpus.normal[at..at + p]) as f64,
                abnormal_distance: position_sum(&tables.abnormal, &corpus.abnormal[at..at + p])
                    as f64,
                group_slices,
            }
        })
        .collect()
}
