//! One similar-studies computation per received study and question, shared by every consumer
//! that asks it (the Watch streams and the KOS sender).
//!
//! A received study carries a [`SimilarMemo`]: per [`Question`] (mode with its weights, filter)
//! a few once-cells, each holding the answer for some number of hits. The first consumer to ask
//! runs the search; the others await the same cell and get the same answer, or the same error.
//!
//! # Fewer hits from more
//! [`crate::index::Index::similar_studies`] ranks studies by a total order — a study's key is
//! the (distance, record id) of its slice nearest any slice of the received study, and distinct
//! studies have distinct best records — and its answer for k is exactly the k first studies in
//! that order (its doc says why the per-slice searches find them). So the answer for k is the
//! prefix of the answer for any K > k, and one computation of K hits serves every consumer that
//! wants at most K. The memo is planned when the study is announced: each question gets a cell
//! of the most hits any subscriber registered for it ([`Interest`]), so the KOS sender's top-k
//! and a Watch stream's top-k share one search whichever asks first.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::index::QueryError;
use crate::index::query::HitView;
use crate::search::{MAX_TOP_K, Mode};

/// What a consumer asks of a received study, besides how many hits: the mode (with its weights)
/// and the catalog filter. Two questions are the same when their modes are bit for bit equal and
/// their filters are the same text.
#[derive(Debug, Clone)]
pub struct Question {
    /// Which codes are compared, with the combined-mode weights.
    pub mode: Mode,
    /// Catalog filter; empty keeps every record.
    pub filter: String,
}

impl Question {
    /// The mode as comparable bits: a tag and the two weights.
    fn mode_bits(&self) -> (u8, u32, u32) {
        match self.mode {
            Mode::Normal => (0, 0, 0),
            Mode::Abnormal => (1, 0, 0),
            Mode::Combined {
                normal_weight,
                abnormal_weight,
            } => (2, normal_weight.to_bits(), abnormal_weight.to_bits()),
        }
    }
}

impl PartialEq for Question {
    fn eq(&self, other: &Self) -> bool {
        self.mode_bits() == other.mode_bits() && self.filter == other.filter
    }
}

impl Eq for Question {}

impl Hash for Question {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.mode_bits().hash(state);
        self.filter.hash(state);
    }
}

/// What a subscriber will ask of every received study: a question and how many hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// The question.
    pub question: Question,
    /// Hits wanted.
    pub top_k: usize,
}

/// The similar studies of a received study for one question, as computed once.
#[derive(Debug)]
pub struct SimilarStudies {
    /// Slices of the received study that were searched with.
    pub slices: usize,
    /// Similar studies, nearest first (possibly more than a consumer asked for).
    pub hits: Vec<HitView>,
    /// The model whose codes were compared.
    pub model_id: String,
}

/// One consumer's answer: the shared computation, cut to the hits it asked for.
#[derive(Debug, Clone)]
pub struct SimilarAnswer {
    computed: Arc<SimilarStudies>,
    top_k: usize,
}

impl SimilarAnswer {
    /// Slices of the received study that were searched with.
    pub fn slices(&self) -> usize {
        self.computed.slices
    }

    /// The model whose codes were compared.
    pub fn model_id(&self) -> &str {
        &self.computed.model_id
    }

    /// The similar studies, nearest first, at most the top-k asked for.
    pub fn hits(&self) -> &[HitView] {
        let hits = &self.computed.hits;
        &hits[..hits.len().min(self.top_k)]
    }
}

/// A similar-studies search that failed, shared by every consumer that awaited it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct SimilarError(Arc<QueryError>);

impl SimilarError {
    /// The search's error, for a consumer to report as it reports any search error.
    pub fn query_error(&self) -> &QueryError {
        &self.0
    }
}

impl From<QueryError> for SimilarError {
    fn from(error: QueryError) -> Self {
        SimilarError(Arc::new(error))
    }
}

/// A computation's outcome, once it has run.
type Outcome = Result<Arc<SimilarStudies>, SimilarError>;

/// One computation of some number of hits, run by whoever asks first.
type Cell = Arc<OnceCell<Outcome>>;

/// Whether a top-k can be served from (or plan) a larger computation: one the search accepts.
/// Any other is computed on its own, so that its error names its own value.
fn shareable(top_k: usize) -> bool {
    (1..=MAX_TOP_K).contains(&top_k)
}

/// The similar-studies computations of one received study, per question and hits computed;
/// dropped with the study's last holder.
#[derive(Default)]
pub struct SimilarMemo {
    cells: Mutex<HashMap<Question, Vec<(usize, Cell)>>>,
}

impl std::fmt::Debug for SimilarMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let questions = self.cells.lock().map_or(0, |cells| cells.len());
        f.debug_struct("SimilarMemo")
            .field("questions", &questions)
            .finish_non_exhaustive()
    }
}

impl SimilarMemo {
    /// A memo planned for `interests`: per question one computation (not yet run) of the most
    /// hits any of them wants.
    pub fn planned<'a>(interests: impl IntoIterator<Item = &'a Interest>) -> Self {
        let mut most: HashMap<Question, usize> = HashMap::new();
        for interest in interests {
            if shareable(interest.top_k) {
                let k = most.entry(interest.question.clone()).or_default();
                *k = (*k).max(interest.top_k);
            }
        }
        let cells = most
            .into_iter()
            .map(|(question, k)| (question, vec![(k, Cell::default())]))
            .collect();
        SimilarMemo {
            cells: Mutex::new(cells),
        }
    }

    /// The answer to `question` with `top_k` hits: from a computation of at least that many
    /// already planned, running or done, else from a new one that `compute` runs with the
    /// number of hits it is given. Concurrent askers await one computation; no lock is held
    /// while it runs, and if the asker running it goes away, the next one waiting runs it.
    pub async fn answer<F, Fut>(
        &self,
        question: &Question,
        top_k: usize,
        compute: F,
    ) -> Result<SimilarAnswer, SimilarError>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<SimilarStudies, QueryError>>,
    {
        let (computed_k, cell) = self.cell(question, top_k);
        let computed = cell
            .get_or_init(|| async move {
                compute(computed_k)
                    .await
                    .map(Arc::new)
                    .map_err(SimilarError::from)
            })
            .await
            .clone()?;
        Ok(SimilarAnswer { computed, top_k })
    }

    /// Questions with a computation planned, running or done.
    #[cfg(test)]
    pub(crate) fn questions(&self) -> usize {
        self.cells
            .lock()
            .expect("similar-studies memo poisoned")
            .len()
    }

    /// The cell that serves `top_k` hits of `question`, and how many hits it computes: the
    /// smallest sufficient one, or a new one of `top_k`.
    fn cell(&self, question: &Question, top_k: usize) -> (usize, Cell) {
        let mut cells = self.cells.lock().expect("similar-studies memo poisoned");
        let list = cells.entry(question.clone()).or_default();
        let found = list
            .iter()
            .filter(|&&(k, _)| {
                if shareable(top_k) {
                    shareable(k) && k >= top_k
                } else {
                    k == top_k
                }
            })
            .min_by_key(|&&(k, _)| k);
        if let Some((k, cell)) = found {
            return (*k, cell.clone());
        }
        let cell = Cell::default();
        list.push((top_k, cell.clone()));
        (top_k, cell)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn question(mode: Mode, filter: &str) -> Question {
        Question {
            mode,
            filter: filter.to_string(),
        }
    }

    /// A fake computation of `k` hits (it reports k as the slices searched), counted in `runs`,
    /// after a pause so that concurrent askers overlap.
    async fn fake(runs: &AtomicUsize, k: usize) -> Result<SimilarStudies, QueryError> {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(SimilarStudies {
            slices: k,
            hits: Vec::new(),
            model_id: "fake".into(),
        })
    }

    #[tokio::test]
    async fn concurrent_askers_of_one_question_share_one_computation_of_the_planned_k() {
        let q = question(Mode::Normal, "");
        let memo = SimilarMemo::planned(&[
            Interest {
                question: q.clone(),
                top_k: 5,
            },
            Interest {
                question: q.clone(),
                top_k: 10,
            },
        ]);
        let runs = AtomicUsize::new(0);
        let ask = |k| memo.answer(&q, k, |n| fake(&runs, n));
        let (a, b, c) = tokio::join!(ask(5), ask(10), ask(3));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one computation");
        for answer in [a, b, c] {
            assert_eq!(answer.unwrap().slices(), 10, "of the most hits planned");
        }
        // More hits than planned: a computation of its own, then shared.
        let more = memo.answer(&q, 20, |n| fake(&runs, n)).await.unwrap();
        assert_eq!(more.slices(), 20);
        memo.answer(&q, 15, |n| fake(&runs, n)).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn questions_differ_by_mode_weights_and_filter() {
        let memo = SimilarMemo::default();
        let runs = AtomicUsize::new(0);
        let combined = |w| Mode::Combined {
            normal_weight: w,
            abnormal_weight: 1.0,
        };
        for q in [
            question(Mode::Normal, ""),
            question(Mode::Abnormal, ""),
            question(combined(1.0), ""),
            question(combined(2.0), ""),
            question(Mode::Normal, "modality:CT"),
        ] {
            memo.answer(&q, 10, |n| fake(&runs, n)).await.unwrap();
            memo.answer(&q.clone(), 10, |n| fake(&runs, n))
                .await
                .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn an_error_is_shared_by_every_asker() {
        let q = question(Mode::Abnormal, "");
        let memo = SimilarMemo::default();
        let runs = AtomicUsize::new(0);
        let failing = |_| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<SimilarStudies, _>(QueryError::Invalid {
                field: "filter".into(),
                message: "bad".into(),
            })
        };
        let first = memo.answer(&q, 4, failing).await.unwrap_err();
        let second = memo.answer(&q, 2, failing).await.unwrap_err();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "computed once");
        assert_eq!(first.to_string(), "filter: bad");
        assert!(matches!(
            second.query_error(),
            QueryError::Invalid { field, .. } if field == "filter"
        ));
    }

    #[test]
    fn a_top_k_the_search_refuses_is_never_served_from_another_computation() {
        let q = question(Mode::Normal, "");
        let memo = SimilarMemo::planned(&[Interest {
            question: q.clone(),
            top_k: 10,
        }]);
        let (planned, cell) = memo.cell(&q, 3);
        assert_eq!(planned, 10, "3 hits come from the planned 10");
        for refused in [0, MAX_TOP_K + 1] {
            let (k, own) = memo.cell(&q, refused);
            assert_eq!(k, refused, "its own computation, whose error names it");
            assert!(!Arc::ptr_eq(&own, &cell));
        }
        assert_eq!(memo.cell(&q, MAX_TOP_K).0, MAX_TOP_K);
        assert_eq!(
            memo.cell(&q, 11).0,
            MAX_TOP_K,
            "served by the smallest sufficient one"
        );
    }
}
