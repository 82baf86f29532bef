//! On paper: how many nodes, and what search latency, for an archive of 100 million or a billion
//! slices, from measured figures — the resident bytes per slice of `diptych bench ready` at
//! 10M, the per-shard search latency of `diptych bench search` at 10M (both in the README's
//! performance section, measured on this project's 2-core machine), and the router's extra hop
//! measured by `diptych bench cluster`.
//!
//! The layout: shards of `shard_records` slices (10M: the largest size whose search latency was
//! measured, so the per-shard figure is a measurement, not an extrapolation), `replicas` copies
//! of each, each copy given the 2 cores it was measured on; a node holds as many copies as its
//! memory (a share of it) and its cores allow, and at least `replicas` nodes so no two copies of
//! a shard share one.

use serde::Serialize;

/// Resident bytes per indexed slice at 10M records (README, `diptych bench ready`).
pub const RESIDENT_BYTES_PER_SLICE: f64 = 622.0;
/// Search p50 at 10M records, combined mode, no filter, 2 threads (README, `diptych bench
/// search --records 10000000`).
pub const SHARD_P50_MS_AT_10M: f64 = 77.81;
/// The same run's p99.
pub const SHARD_P99_MS_AT_10M: f64 = 115.75;

/// The assumptions and measured inputs.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionInputs {
    /// Slices in the archive.
    pub slices: u64,
    /// Slices per shard.
    pub shard_records: u64,
    /// Copies of each shard.
    pub replicas: u64,
    /// Memory of a node, GiB.
    pub node_memory_gib: f64,
    /// Share of a node's memory given to shard copies (the rest: system, page cache, spikes).
    pub memory_share: f64,
    /// Cores of a node.
    pub node_cores: u64,
    /// Cores per shard copy (the per-shard latency was measured on 2).
    pub cores_per_replica: u64,
    /// Resident bytes per slice.
    pub resident_bytes_per_slice: f64,
    /// Search p50 of one shard of `shard_records`, ms.
    pub shard_p50_ms: f64,
    /// Search p99 of one shard of `shard_records`, ms.
    pub shard_p99_ms: f64,
    /// The router's extra hop (router p50 − single node p50), ms.
    pub hop_ms: f64,
    /// This run's shard scan time per million records (a shard's p50 over its records in
    /// millions), ms: the linear check of `shard_p50_ms`.
    pub scan_ms_per_million: f64,
}

impl ProjectionInputs {
    /// The README's figures with 64 GiB, 16-core nodes, 10M-slice shards, two copies each, 75 %
    /// of memory for the index; `hop_ms` and `scan_ms_per_million` as measured.
    pub fn with_measured(slices: u64, hop_ms: f64, scan_ms_per_million: f64) -> Self {
        ProjectionInputs {
            slices,
            shard_records: 10_000_000,
            replicas: 2,
            node_memory_gib: 64.0,
            memory_share: 0.75,
            node_cores: 16,
            cores_per_replica: 2,
            resident_bytes_per_slice: RESIDENT_BYTES_PER_SLICE,
            shard_p50_ms: SHARD_P50_MS_AT_10M,
            shard_p99_ms: SHARD_P99_MS_AT_10M,
            hop_ms,
            scan_ms_per_million,
        }
    }
}

/// The projected cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    /// Always "cluster-projection".
    pub bench: &'static str,
    /// The inputs.
    pub inputs: ProjectionInputs,
    /// Shards: ⌈slices / shard_records⌉.
    pub shards: u64,
    /// Shard copies: shards × replicas.
    pub copies: u64,
    /// Resident GiB of one copy.
    pub copy_gib: f64,
    /// Copies one node holds: min(⌊memory share / copy⌋, ⌊cores / cores per copy⌋).
    pub copies_per_node: u64,
    /// Nodes: max(⌈copies / copies per node⌉, replicas).
    pub nodes: u64,
    /// Search latency when every shard answers at its median: shard p50 + hop, ms.
    pub latency_p50_ms: f64,
    /// When the slowest of many shards sets the pace: shard p99 + hop, ms.
    pub latency_slowest_ms: f64,
    /// This run's scan rate × shard size: the linear check of the shard's p50, ms.
    pub linear_shard_ms: f64,
    /// The arithmetic, written out.
    pub arithmetic: String,
}

/// Projects the cluster for `inputs`.
pub fn project(inputs: &ProjectionInputs) -> Projection {
    let gib = (1u64 << 30) as f64;
    let shards = inputs.slices.div_ceil(inputs.shard_records.max(1));
    let copies = shards * inputs.replicas;
    let copy_gib = inputs.shard_records as f64 * inputs.resident_bytes_per_slice / gib;
    let by_memory = (inputs.node_memory_gib * inputs.memory_share / copy_gib).floor() as u64;
    let by_cores = inputs.node_cores / inputs.cores_per_replica.max(1);
    let copies_per_node = by_memory.min(by_cores).max(1);
    let nodes = copies.div_ceil(copies_per_node).max(inputs.replicas);
    let latency_p50_ms = inputs.shard_p50_ms + inputs.hop_ms;
    let latency_slowest_ms = inputs.shard_p99_ms + inputs.hop_ms;
    let linear_shard_ms = inputs.scan_ms_per_million * inputs.shard_records as f64 / 1e6;
    let m = |n: u64| format!("{}M", n as f64 / 1e6);
    let arithmetic = format!(
        "{} / {} per shard = {shards} shards × {} copies = {copies} copies; one copy {} × {} B = \
         {copy_gib:.2} GiB; per {} GiB, {}-core node: min(⌊{:.0} GiB / {copy_gib:.2}⌋ = {by_memory}, \
         {} / {} = {by_cores}) = {copies_per_node} copies → ⌈{copies} / {copies_per_node}⌉ = {nodes} \
         nodes; latency {:.1} + {:.1} = {latency_p50_ms:.1} ms (slowest shard: {:.1} + {:.1} = \
         {latency_slowest_ms:.1} ms)",
        m(inputs.slices),
        m(inputs.shard_records),
        inputs.replicas,
        m(inputs.shard_records),
        inputs.resident_bytes_per_slice,
        inputs.node_memory_gib,
        inputs.node_cores,
        inputs.node_memory_gib * inputs.memory_share,
        inputs.node_cores,
        inputs.cores_per_replica,
        inputs.shard_p50_ms,
        inputs.hop_ms,
        inputs.shard_p99_ms,
        inputs.hop_ms,
    );
    Projection {
        bench: "cluster-projection",
        inputs: inputs.clone(),
        shards,
        copies,
        copy_gib,
        copies_per_node,
        nodes,
        latency_p50_ms,
        latency_slowest_ms,
        linear_shard_ms,
        arithmetic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_million_and_a_billion_slices() {
        let p = project(&ProjectionInputs::with_measured(100_000_000, 2.0, 7.0));
        // 10M × 622 B = 6.22e9 B = 5.79 GiB; 48 GiB holds 8; 16 cores / 2 = 8.
        assert!((p.copy_gib - 5.793).abs() < 0.001, "{}", p.copy_gib);
        assert_eq!(
            (p.shards, p.copies, p.copies_per_node, p.nodes),
            (10, 20, 8, 3)
        );
        assert!((p.latency_p50_ms - 79.81).abs() < 1e-9);
        assert!((p.latency_slowest_ms - 117.75).abs() < 1e-9);
        assert!((p.linear_shard_ms - 70.0).abs() < 1e-9);
        assert!(
            p.arithmetic.contains("⌈20 / 8⌉ = 3 nodes"),
            "{}",
            p.arithmetic
        );
        let b = project(&ProjectionInputs::with_measured(1_000_000_000, 2.0, 7.0));
        assert_eq!((b.shards, b.copies, b.nodes), (100, 200, 25));
    }

    #[test]
    fn memory_or_cores_bound_and_never_two_copies_on_one_node() {
        let mut inputs = ProjectionInputs::with_measured(100_000_000, 0.0, 0.0);
        // 100M-slice shards: 57.9 GiB each does not fit 48 GiB: one copy per node at least.
        inputs.shard_records = 100_000_000;
        let p = project(&inputs);
        assert_eq!(
            (p.shards, p.copies, p.copies_per_node, p.nodes),
            (1, 2, 1, 2)
        );
        // Small shards: the cores bound (16 / 2 = 8), not the memory (48 / 0.58 = 82).
        inputs.shard_records = 1_000_000;
        let p = project(&inputs);
        assert_eq!((p.copies_per_node, p.nodes), (8, 25));
        // One shard, three copies: three nodes even though one would hold them.
        inputs.slices = 1_000_000;
        inputs.replicas = 3;
        assert_eq!(project(&inputs).nodes, 3);
    }
}
