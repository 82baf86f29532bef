//! The BraTS folder as a [`SliceGenerator`]: random access over a list of subjects, a bounded
//! cache of prepared subjects, and the split into query and reference subjects.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::volume::{PreparedSubject, prepare_subject};
use super::{BratsError, BratsFolder, NORMAL_LABELS};
use crate::synthetic::{SliceError, SliceGenerator, SyntheticSlice};

/// Subjects whose prepared slices a generator keeps (the most recently used). Evaluation reads
/// slices in chunks of 16 consecutive indices on a few threads, so at most a few subjects are in
/// use at once; at the default 24 slices of 192 × 160 a subject takes about 3 MB.
pub const SUBJECT_CACHE: usize = 8;

/// How a BraTS generator cuts its subjects into slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BratsConfig {
    /// Axial slices per subject, evenly spaced over the brain's extent (at least 1).
    pub slices_per_subject: usize,
    /// Rows of each slice (at least 32): anterior to posterior, one voxel each.
    pub rows: usize,
    /// Columns of each slice (at least 32): the patient's right to left, one voxel each.
    pub cols: usize,
}

impl Default for BratsConfig {
    /// 24 slices per subject in the atlas source's 192 × 160 frame.
    fn default() -> Self {
        Self {
            slices_per_subject: 24,
            rows: 192,
            cols: 160,
        }
    }
}

impl BratsConfig {
    /// Checks that the configuration can cut slices.
    pub fn validate(&self) -> Result<(), BratsError> {
        if self.slices_per_subject == 0 {
            return Err(BratsError::Config(
                "slices per subject must be at least 1, got 0".to_string(),
            ));
        }
        if self.rows < 32 || self.cols < 32 {
            return Err(BratsError::Config(format!(
                "slices need at least 32×32 pixels, got {}×{}",
                self.rows, self.cols
            )));
        }
        Ok(())
    }
}

/// A subject's slices once read, or why they could not be (kept so that every thread waiting
/// for the subject gets the answer of the one read).
type Loaded = Result<Arc<PreparedSubject>, Arc<BratsError>>;

/// A deterministic, random-access source of slices from some subjects of a BraTS folder: slice
/// `index` is slot `index % n` of the `index / n`-th of its subjects (n slices per subject).
#[derive(Debug)]
pub struct BratsGenerator {
    folder: Arc<BratsFolder>,
    /// Indices into the folder's subjects.
    subjects: Vec<usize>,
    config: BratsConfig,
    /// Most recently used last; at most [`SUBJECT_CACHE`] entries.
    cache: Mutex<VecDeque<(usize, Arc<OnceLock<Loaded>>)>>,
    reads: AtomicU64,
}

impl BratsGenerator {
    /// A generator over `subjects` (indices into `folder.subjects()`, in the order their slices
    /// come) cut as `config` says.
    pub fn new(
        folder: Arc<BratsFolder>,
        subjects: Vec<usize>,
        config: BratsConfig,
    ) -> Result<Self, BratsError> {
        config.validate()?;
        if let Some(&s) = subjects.iter().find(|&&s| s >= folder.subjects().len()) {
            return Err(BratsError::Config(format!(
                "subject {s} asked for, the folder {} has {}",
                folder.dir().display(),
                folder.subjects().len()
            )));
        }
        Ok(Self {
            folder,
            subjects,
            config,
            cache: Mutex::new(VecDeque::with_capacity(SUBJECT_CACHE + 1)),
            reads: AtomicU64::new(0),
        })
    }

    /// A generator over every subject of `folder`, in sorted order.
    pub fn all(folder: Arc<BratsFolder>, config: BratsConfig) -> Result<Self, BratsError> {
        let subjects = (0..folder.subjects().len()).collect();
        Self::new(folder, subjects, config)
    }

    /// The folder the subjects come from.
    pub fn folder(&self) -> &BratsFolder {
        &self.folder
    }

    /// The generator's subjects (indices into the folder's subjects), in slice order.
    pub fn subjects(&self) -> &[usize] {
        &self.subjects
    }

    /// How the subjects are cut into slices.
    pub fn config(&self) -> &BratsConfig {
        &self.config
    }

    /// How many subjects have been read from disk so far (each read covers both volumes of a
    /// subject; a subject leaves the cache only after [`SUBJECT_CACHE`] others were used).
    pub fn subjects_read(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Slices the generator holds: its subjects times the slices per subject.
    pub fn len(&self) -> u64 {
        self.subjects.len() as u64 * self.config.slices_per_subject as u64
    }

    /// Whether the generator holds no slice (no subjects).
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// The prepared slices of the `position`-th subject, read at most once while cached.
    fn subject(&self, position: usize) -> Loaded {
        let slot = {
            let mut cache = self
                .cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let hit = cache
                .iter()
                .position(|(p, _)| *p == position)
                .and_then(|i| cache.remove(i));
            let entry = hit.unwrap_or_else(|| (position, Arc::new(OnceLock::new())));
            let slot = Arc::clone(&entry.1);
            cache.push_back(entry);
            while cache.len() > SUBJECT_CACHE {
                cache.pop_front();
            }
            slot
        };
        slot.get_or_init(|| {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let subject = &self.folder.subjects()[self.subjects[position]];
            prepare_subject(subject, &self.config)
                .map(Arc::new)
                .map_err(Arc::new)
        })
        .clone()
    }

    /// Slice `index`, or why it cannot be read (a malformed volume, an index past
    /// [`len`](Self::len)); the error names the file.
    pub fn try_slice(&self, index: u64) -> Result<SyntheticSlice, Arc<BratsError>> {
        let per_subject = self.config.slices_per_subject as u64;
        let position = index / per_subject;
        if position >= self.subjects.len() as u64 {
            return Err(Arc::new(BratsError::OutOfRange {
                index,
                count: self.len(),
            }));
        }
        let prepared = self.subject(position as usize)?;
        let slice = &prepared.slices[(index % per_subject) as usize];
        Ok(SyntheticSlice {
            index,
            subject: self.subjects[position as usize] as u64,
            level: slice.level,
            rows: self.config.rows,
            cols: self.config.cols,
            image: slice.image.iter().map(|&v| f32::from(v)).collect(),
            healthy_twin: Vec::new(),
            normal_labels: slice.normal.clone(),
            abnormal_labels: slice.abnormal.clone(),
            has_lesion: slice.abnormal.iter().any(|&l| l != 0),
        })
    }
}

impl SliceGenerator for BratsGenerator {
    fn name(&self) -> &'static str {
        "brats"
    }

    fn normal_labels(&self) -> &'static [&'static str] {
        &NORMAL_LABELS
    }

    fn slices_per_subject(&self) -> u64 {
        self.config.slices_per_subject as u64
    }

    /// Slice `index`.
    ///
    /// # Panics
    /// If the subject's volumes cannot be read or the index is past the last slice; use
    /// [`SliceGenerator::try_slice`] to get the error instead.
    fn slice(&self, index: u64) -> SyntheticSlice {
        BratsGenerator::try_slice(self, index).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_slice(&self, index: u64) -> Result<SyntheticSlice, SliceError> {
        BratsGenerator::try_slice(self, index).map_err(|e| Box::new(e) as SliceError)
    }

    fn has_twins(&self) -> bool {
        false
    }

    fn slice_count(&self) -> Option<u64> {
        Some(self.len())
    }
}

/// Query and reference generators over disjoint subjects of one folder.
///
/// With `N` subjects (sorted by folder name) and `q = ⌈query slices / slices per subject⌉`, the
/// query subjects are every k-th subject, `k = ⌊N / q⌋`, at sorted positions `k − 1, 2k − 1, …,
/// qk − 1`, spread over the whole folder; every other subject is a reference subject, in sorted
/// order. The split depends only on the folder and `q`. It needs `q < N`: at least one reference
/// subject.
#[derive(Debug)]
pub struct BratsSplit {
    /// Slices of the query subjects.
    pub queries: BratsGenerator,
    /// Slices of the reference subjects.
    pub references: BratsGenerator,
}

impl BratsSplit {
    /// Splits `folder` for `query_slices` query slices cut as `config` says.
    pub fn new(
        folder: Arc<BratsFolder>,
        query_slices: usize,
        config: BratsConfig,
    ) -> Result<Self, BratsError> {
        config.validate()?;
        let n = folder.subjects().len();
        let q = query_slices.div_ceil(config.slices_per_subject).max(1);
        if q >= n {
            return Err(BratsError::TooFewSubjects {
                dir: folder.dir().to_path_buf(),
                subjects: n,
                query_slices,
                per_subject: config.slices_per_subject,
                query_subjects: q,
            });
        }
        let k = n / q;
        let is_query = |s: usize| (s + 1).is_multiple_of(k) && (s + 1) / k <= q;
        let (queries, references): (Vec<usize>, Vec<usize>) = (0..n).partition(|&s| is_query(s));
        Ok(Self {
            queries: BratsGenerator::new(Arc::clone(&folder), queries, config)?,
            references: BratsGenerator::new(folder, references, config)?,
        })
    }
}
