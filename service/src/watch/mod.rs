//! Received studies: a study is "received" once no instance of it has arrived for a quiet
//! period and every acknowledged instance of it is indexed. Then every subscriber (each Watch
//! stream, the KOS sender) hears of it and asks for the study's most similar studies in its own
//! modes, filter and top-k ([`crate::index::Index::similar_studies`]) — and each search runs once
//! per received study however many subscribers ask it.
//!
//! | module | what it is for |
//! |---|---|
//! | [`tracker`] | arrivals per study, the quiet-period clock, the subscribers and their interests, the broadcast of received studies |
//! | [`similar`] | the per-study memo that runs each similar-studies search once and shares its answer (or error) with every subscriber that asks it |

pub mod similar;
pub mod tracker;

pub use similar::{Interest, Question, SimilarAnswer, SimilarError};
pub use tracker::{ReceivedStudy, StudyTracker, Subscription};
