#!/usr/bin/env python3
"""FAISS baseline of `diptych bench search`: IndexPQ whose sub-quantisers are diptych's codebooks.

One sub-quantiser per grid position (M = P for normal or abnormal mode, M = 2P for combined mode,
normal positions then abnormal ones), 8 bits, centroids set to the codebook (padded to 256 with
zeros when K < 256; no stored code uses the padding). The stored codes are diptych's codes as they
are, so FAISS's asymmetric distance (ADC) between the decoded query and a record is exactly
diptych's squared L2 distance, and the top-k must agree up to rounding and ties.

Reads the files `service/src/cli/bench/search_run.rs` writes into --dir (meta.json, codebooks.f32,
codes.u8, queries.u8, filter.u32), searches the first --queries queries alone (latency, p50/p99)
and in one batch (throughput), with and without the 10% filter (IndexPQ takes no ID selector, so
the filtered search scans an index of the kept records only), on --threads
OpenMP threads, and prints one JSON object.

Requires: pip install faiss-cpu numpy
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import faiss


def build(centroids, codes):
    """IndexPQ over `codes` (N x M bytes) with per-sub-quantiser `centroids` (M x K x D)."""
    m, k, d = centroids.shape
    index = faiss.IndexPQ(m * d, m, 8)
    padded = np.zeros((m, 256, d), dtype=np.float32)
    padded[:, :k, :] = centroids
    faiss.copy_array_to_vector(padded.ravel(), index.pq.centroids)
    index.is_trained = True
    codes = np.ascontiguousarray(codes)
    faiss.copy_array_to_vector(codes.ravel(), index.codes)
    index.ntotal = codes.shape[0]
    return index


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--queries", type=int, default=10, help="queries searched one by one (a scan is slow)"
    )
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)

    meta = json.load(open(os.path.join(args.dir, "meta.json")))
    n, p, k, d = meta["records"], meta["positions"], meta["size"], meta["dim"]
    q, top_k = meta["queries"], meta["top_k"]
    books = np.fromfile(os.path.join(args.dir, "codebooks.f32"), dtype="<f4").reshape(2, k, d)
    codes = np.fromfile(os.path.join(args.dir, "codes.u8"), dtype=np.uint8).reshape(n, 2 * p)
    queries = np.fromfile(os.path.join(args.dir, "queries.u8"), dtype=np.uint8).reshape(q, 2 * p)
    keep = np.fromfile(os.path.join(args.dir, "filter.u32"), dtype="<u4")

    results = []
    for mode, lo, hi in [("normal", 0, p), ("abnormal", p, 2 * p), ("combined", 0, 2 * p)]:
        per_position = np.concatenate(
            [np.broadcast_to(books[0], (p, k, d)), np.broadcast_to(books[1], (p, k, d))]
        )[lo:hi]
        # Decoded queries: the codebook vectors their codes name, position after position.
        x = np.stack([per_position[np.arange(hi - lo), qc[lo:hi]].ravel() for qc in queries])
        x = np.ascontiguousarray(x, dtype=np.float32)
        for filter_name in ["none", "10%"]:
            # IndexPQ's ADC scan takes no ID selector, so the filtered search scans an index of
            # the kept records only (a pre-filtered scan), mapping its ids back.
            if filter_name == "none":
                index, ids_of = build(per_position, codes[:, lo:hi]), None
            else:
                index, ids_of = build(per_position, codes[keep, lo:hi]), keep.astype(np.int64)
            latencies, ids = [], []
            for i in range(min(q, args.queries)):
                t = time.perf_counter()
                _, labels = index.search(x[i : i + 1], top_k)
                latencies.append((time.perf_counter() - t) * 1e3)
                row = labels[0]
                if ids_of is not None:
                    row = np.where(row >= 0, ids_of[np.maximum(row, 0)], -1)
                ids.append(row.tolist())
            nq = max(min(q, args.queries), args.threads)
            t = time.perf_counter()
            index.search(x[:nq], top_k)
            batch_ms = (time.perf_counter() - t) * 1e3 / nq
            latencies.sort()
            results.append(
                {
                    "mode": mode,
                    "filter": filter_name,
                    "p50_ms": latencies[round((len(latencies) - 1) * 0.5)],
                    "p99_ms": latencies[round((len(latencies) - 1) * 0.99)],
                    "batch_ms_per_query": batch_ms,
                    "ids": ids,
                }
            )
        del index
    json.dump({"threads": args.threads, "faiss": faiss.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
