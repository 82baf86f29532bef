//! The search benchmark (being written).
