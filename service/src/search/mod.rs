//! Exact code search (being written).
