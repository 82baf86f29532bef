//! Received studies: a study is "received" once no instance of it has arrived for a quiet
//! period and every acknowledged instance of it is indexed. Then every Watch subscriber hears of
//! it and computes the study's most similar studies in its own modes, filter and top-k
//! ([`crate::index::Index::similar_studies`]).
//!
//! | module | what it is for |
//! |---|---|
//! | [`tracker`] | arrivals per study, the quiet-period clock, the broadcast of received studies |

pub mod tracker;

pub use tracker::{ReceivedStudy, StudyTracker};
