//! Exact code search: the records nearest a query under the distances of docs/METHOD.md §3.
//!
//! A record's codes are two grids of P integers, one into the normal codebook and one into the
//! abnormal codebook. The distance between two records in one codebook is the sum over grid
//! positions of the squared L2 distance between the codebook vectors the codes name:
//!
//! - normal mode:   `d_n = Σ_p ‖C_n[q_p] − C_n[r_p]‖²`
//! - abnormal mode: `d_a = Σ_p ‖C_a[q_p] − C_a[r_p]‖²`
//! - combined mode: `w_n·d_n + w_a·d_a` (both weights 0 means 1 and 1)
//!
//! A composite query (anatomy like A, lesion like B) is just a [`QueryCodes`] whose two halves
//! come from different sources; search does not care where codes come from.
//!
//! Search works on plain slices ([`Corpus`]) so that it knows nothing of the store or the
//! catalog: the store hands over its compact codes, the catalog a [`RecordSet`] filter.
//!
//! | module | what it is for |
//! |---|---|
//! | [`tables`] | per-codebook K×K tables of squared distances, and a query's P×K look-up table |
//! | [`distance`] | the one summation order every path uses, so fast and naive agree to the bit |
//! | [`index`] | [`SearchIndex`]: compact per-record projections that give exact lower bounds |
//! | `summaries` | those projections kept 64 records to a block, laid out for vector arithmetic |
//! | [`persist`] | [`PersistedIndex`]: the [`SearchIndex`] in the data folder, read back on start |
//! | [`naive`] | [`naive_search`]: the obvious single-threaded full scan, the reference |
//! | [`scan`] | [`search`]: the parallel scan with lower-bound pruning and early abandoning |
//! | [`group`] | grouping of slices into series or studies and the group score |
//!
//! # Exactness
//! [`search`] returns exactly what [`naive_search`] returns, bit for bit: both compute every
//! distance with [`distance::position_sum`]'s summation order, and the fast path only skips
//! records that provably cannot enter the top-k (lower bounds with rounding margins, partial
//! sums that only grow). The property test `service/tests/search_property.rs` checks it.
//!
//! # Order and ties
//! Hits come nearest first; equal distances are ordered by record id (ingest order), so the
//! answer never depends on thread timing.

pub mod balance;
pub mod distance;
pub mod group;
pub mod index;
pub mod naive;
pub mod persist;
pub mod scan;
mod summaries;
pub mod tables;

use thiserror::Error;

use crate::record::{RecordId, RecordKeys, RecordSet};

pub use index::SearchIndex;
pub use naive::naive_search;
pub use persist::{PersistError, PersistedIndex};
pub use scan::{search, search_with_threads};
pub use tables::{DistanceTables, QueryTables};

/// Most hits one search may ask for.
pub const MAX_TOP_K: usize = 1000;
/// Largest n of [`GroupScore::MeanOfBestN`].
pub const MAX_GROUP_BEST_N: usize = 100;

/// Which codes a search compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Normal anatomy codes only: `d_n`.
    Normal,
    /// Abnormal anatomy codes only: `d_a`.
    Abnormal,
    /// Both: `w_n·d_n + w_a·d_a`; both weights 0 means 1 and 1; weights must be finite and ≥ 0.
    Combined {
        /// Weight w_n of the normal distance.
        normal_weight: f32,
        /// Weight w_a of the abnormal distance.
        abnormal_weight: f32,
    },
}

/// The codes a search compares against the records: P normal and P abnormal codes (for a
/// composite query, taken from two different sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCodes {
    /// P codes into the normal codebook.
    pub normal: Vec<u8>,
    /// P codes into the abnormal codebook.
    pub abnormal: Vec<u8>,
}

/// What one hit stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Each record (one slice) is a hit.
    Instance,
    /// Records of one series form one hit.
    Series,
    /// Records of one study form one hit.
    Study,
}

/// How a group's distance comes from its slices' distances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupScore {
    /// The distance of the group's best (nearest) slice.
    BestSlice,
    /// The mean distance of the group's n best slices (1 ≤ n ≤ 100); a group with fewer than n
    /// slices that pass the filter scores the mean of all of them.
    MeanOfBestN(u32),
}

/// Records to leave out of a search, e.g. the query's own slice, series or study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclude {
    /// Every record of this SOP instance key ([`crate::record::key_of`]).
    Instance(u64),
    /// Every record of this series key.
    Series(u64),
    /// Every record of this study key.
    Study(u64),
}

impl Exclude {
    /// Whether a record with these keys is left out.
    pub fn excludes(&self, keys: &RecordKeys) -> bool {
        match *self {
            Exclude::Instance(k) => keys.instance == k,
            Exclude::Series(k) => keys.series == k,
            Exclude::Study(k) => keys.study == k,
        }
    }
}

/// One search: the query, how to compare, how to group, how many hits.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// The query's codes.
    pub query: QueryCodes,
    /// Which distance ranks the records.
    pub mode: Mode,
    /// What one hit stands for.
    pub grouping: Grouping,
    /// How a group's distance is computed (ignored for [`Grouping::Instance`], where a group is
    /// one slice).
    pub group_score: GroupScore,
    /// How many hits, 1..=1000.
    pub top_k: usize,
    /// Records to leave out, if any.
    pub exclude: Option<Exclude>,
}

/// The records to search, as plain slices: codes of records `0..N` in ingest order.
#[derive(Clone, Copy)]
pub struct Corpus<'a> {
    /// N × P normal codes, record after record.
    pub normal: &'a [u8],
    /// N × P abnormal codes, record after record.
    pub abnormal: &'a [u8],
    /// Grid positions P per record.
    pub positions: usize,
    /// The keys of a record (called only for candidates, and for counting the slices of the
    /// returned groups).
    pub keys: &'a (dyn Fn(RecordId) -> RecordKeys + Sync),
    /// Deleted records: never returned.
    pub deleted: &'a RecordSet,
    /// The records a metadata filter keeps; `None` keeps every record.
    pub filter: Option<&'a RecordSet>,
}

impl std::fmt::Debug for Corpus<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corpus")
            .field("records", &self.records())
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl Corpus<'_> {
    /// Number of records N.
    pub fn records(&self) -> usize {
        self.normal.len().checked_div(self.positions).unwrap_or(0)
    }

    /// Checks that both code arrays hold whole records of P codes and agree.
    pub(crate) fn check(&self) -> Result<(), SearchError> {
        if self.positions == 0
            || !self.normal.len().is_multiple_of(self.positions)
            || self.normal.len() != self.abnormal.len()
        {
            return Err(SearchError::CorpusShape {
                normal: self.normal.len(),
                abnormal: self.abnormal.len(),
                positions: self.positions,
            });
        }
        if self.records() > RecordId::MAX as usize {
            return Err(SearchError::TooManyRecords(self.records()));
        }
        Ok(())
    }

    /// The 64-bit word of eligible records `64·w .. 64·w + 64`: not deleted, kept by the filter,
    /// below N.
    #[inline]
    pub(crate) fn eligible_word(&self, w: usize) -> u64 {
        let n = self.records();
        let mut bits = match self.filter {
            Some(f) => f.words().get(w).copied().unwrap_or(0),
            None => !0,
        };
        bits &= !self.deleted.words().get(w).copied().unwrap_or(0);
        let start = w * 64;
        if start + 64 > n {
            bits &= if n <= start {
                0
            } else {
                (1u64 << (n - start)) - 1
            };
        }
        bits
    }

    /// Whether record `id` passes the deletions, the filter and the exclusion.
    pub(crate) fn passes(&self, id: RecordId, exclude: Option<&Exclude>) -> bool {
        (id as usize) < self.records()
            && !self.deleted.contains(id)
            && self.filter.is_none_or(|f| f.contains(id))
            && exclude.is_none_or(|e| !e.excludes(&(self.keys)(id)))
    }
}

/// One result: a slice, or the best slice of a series or study.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The (best) slice's record.
    pub record: RecordId,
    /// The ranking distance: the mode's distance, or the group score.
    pub distance: f64,
    /// `d_n` of the (best) slice, whatever the mode.
    pub normal_distance: f64,
    /// `d_a` of the (best) slice, whatever the mode.
    pub abnormal_distance: f64,
    /// Slices of the group that passed the filter (1 for instance grouping).
    pub group_slices: u32,
}

/// Why a search request cannot run.
#[derive(Debug, Error, PartialEq)]
pub enum SearchError {
    /// top_k outside 1..=1000.
    #[error("top_k is {0}; ask for 1 to 1000 hits")]
    TopK(usize),
    /// n of mean-of-best-n outside 1..=100.
    #[error("group_best_n is {0}; use 1 to 100")]
    GroupBestN(u32),
    /// A combined-mode weight that is negative or not a number.
    #[error("{name} is {value}; weights must be finite and ≥ 0")]
    Weight {
        /// `normal_weight` or `abnormal_weight`.
        name: &'static str,
        /// The value given.
        value: f32,
    },
    /// Query codes of the wrong length.
    #[error("the query's {codebook} code has {got} positions but the model's grid has {expected}")]
    QueryLength {
        /// `normal` or `abnormal`.
        codebook: &'static str,
        /// Positions given.
        got: usize,
        /// Positions of the grid.
        expected: usize,
    },
    /// A query code outside the codebook.
    #[error(
        "the query's {codebook} code at position {position} is {code}, outside the codebook of {size} vectors"
    )]
    QueryCode {
        /// `normal` or `abnormal`.
        codebook: &'static str,
        /// Grid position.
        position: usize,
        /// The code.
        code: u8,
        /// Codebook size K.
        size: usize,
    },
    /// Code arrays that do not hold whole records, or disagree.
    #[error(
        "the corpus holds {normal} normal and {abnormal} abnormal codes, not N whole records of {positions} positions each"
    )]
    CorpusShape {
        /// Normal codes.
        normal: usize,
        /// Abnormal codes.
        abnormal: usize,
        /// Positions per record.
        positions: usize,
    },
    /// More records than a [`RecordId`] can name.
    #[error("the corpus holds {0} records, more than a 32-bit record id can name")]
    TooManyRecords(usize),
}

/// A request checked against the tables, with defaults resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ranking {
    /// Weight of `d_n` in the ranking distance (0 when not used).
    pub normal_weight: f64,
    /// Weight of `d_a` in the ranking distance (0 when not used).
    pub abnormal_weight: f64,
    /// Whether the normal codes take part.
    pub uses_normal: bool,
    /// Whether the abnormal codes take part.
    pub uses_abnormal: bool,
}

impl Ranking {
    /// The ranking distance from the two codebook distances (an unused one is passed as 0);
    /// every path calls this, so the value is the same to the bit wherever it is computed.
    #[inline]
    pub fn combine(&self, normal: f32, abnormal: f32) -> f64 {
        self.normal_weight * normal as f64 + self.abnormal_weight * abnormal as f64
    }
}

/// Checks a request against the tables and the corpus; returns how to rank.
pub(crate) fn validate(
    tables: &DistanceTables,
    corpus: &Corpus,
    request: &SearchRequest,
) -> Result<Ranking, SearchError> {
    corpus.check()?;
    if request.top_k == 0 || request.top_k > MAX_TOP_K {
        return Err(SearchError::TopK(request.top_k));
    }
    if let GroupScore::MeanOfBestN(n) = request.group_score
        && (n == 0 || n as usize > MAX_GROUP_BEST_N)
    {
        return Err(SearchError::GroupBestN(n));
    }
    for (codebook, codes) in [
        ("normal", &request.query.normal),
        ("abnormal", &request.query.abnormal),
    ] {
        if codes.len() != corpus.positions {
            return Err(SearchError::QueryLength {
                codebook,
                got: codes.len(),
                expected: corpus.positions,
            });
        }
        if let Some(position) = codes.iter().position(|&c| c as usize >= tables.size()) {
            return Err(SearchError::QueryCode {
                codebook,
                position,
                code: codes[position],
                size: tables.size(),
            });
        }
    }
    Ok(match request.mode {
        Mode::Normal => Ranking {
            normal_weight: 1.0,
            abnormal_weight: 0.0,
            uses_normal: true,
            uses_abnormal: false,
        },
        Mode::Abnormal => Ranking {
            normal_weight: 0.0,
            abnormal_weight: 1.0,
            uses_normal: false,
            uses_abnormal: true,
        },
        Mode::Combined {
            normal_weight,
            abnormal_weight,
        } => {
            for (name, value) in [
                ("normal_weight", normal_weight),
                ("abnormal_weight", abnormal_weight),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err(SearchError::Weight { name, value });
                }
            }
            let (wn, wa) = if normal_weight == 0.0 && abnormal_weight == 0.0 {
                (1.0, 1.0)
            } else {
                (normal_weight as f64, abnormal_weight as f64)
            };
            Ranking {
                normal_weight: wn,
                abnormal_weight: wa,
                uses_normal: wn > 0.0,
                uses_abnormal: wa > 0.0,
            }
        }
    })
}
