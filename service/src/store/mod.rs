//! The durable store: write-ahead log and memory-mapped compact codes (being written).
