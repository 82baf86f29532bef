//! The metadata catalog on tantivy (being written).
