//! `diptych bench …`: the benchmarks of the README's performance section. Each prints a table,
//! or with `--json` one JSON object per line; ratios against the baselines are included.
//!
//! | module | benchmark | baseline |
//! |---|---|---|
//! | [`encode`] | slices/s through the service's encoder at batch 1 and 32, median of alternating runs | PyTorch eager, same weights, same threads |
//! | [`search`] | p50/p99 latency of top-10 over 1M records, each mode, with and without a 10 % filter | the naive scan, FAISS IndexPQ |
//! | [`ready`] | resident memory per indexed slice and start-to-ready time at 1M records | raw code bytes + catalog |
//! | [`reindex`] | records/s of a re-index from kept frames, start to switch | the new encoder alone on the same frames |
//! | [`cluster`] | search p50/p99 at 1M records and ingest rate through a router over shards; nodes and latency at 100M and 1B on paper | a single node on the same records and studies |
//!
//! [`search_run`] holds the search benchmark's measurement (replicated encodings, the FAISS
//! subprocess), which [`search`] and [`ready`] drive. [`procs`] starts the server processes
//! of [`ready`] and [`cluster`]; [`cluster_data`], [`cluster_nodes`], [`cluster_search`],
//! [`cluster_ingest`] and [`projection`] are the cluster benchmark's parts.

pub mod cluster;
pub mod cluster_data;
pub mod cluster_ingest;
pub mod cluster_nodes;
pub mod cluster_search;
pub mod encode;
pub mod procs;
pub mod projection;
pub mod ready;
pub mod reindex;
pub mod search;
pub mod search_run;

use std::path::PathBuf;

/// The Python of the `make deps-bench` venv (torch, onnx2torch, faiss-cpu), or of `$DIPTYCH_BENCH_PYTHON`.
pub fn bench_python() -> PathBuf {
    if let Some(p) = std::env::var_os("DIPTYCH_BENCH_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/diptych/torch-venv/bin/python")
}

/// A script under `service/bench/`, of the checkout in the current directory or else the one
/// beside the workspace the binary was built from ([`checkout_file`](crate::cli::checkout_file)).
pub fn script(name: &str) -> PathBuf {
    crate::cli::checkout_file(&format!("service/bench/{name}"))
}

/// A progress bar of `len` steps labelled `what`, its message saying what runs now.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    )
}

/// CPU time (user + system, all threads) this process has used so far, in seconds, from
/// `/proc/self/stat`: what a piece of work cost in CPU, which a busy machine's wall clock hides.
pub fn process_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th of them, in clock ticks (100 per second on Linux).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/self/stat: {stat}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/self/stat has no field {i}"))?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Prints the table on stdout, or with `json` the table on stderr and one JSON object per row
/// on stdout (so `make bench` can collect the lines).
pub fn report<T: serde::Serialize>(json: bool, table: &str, rows: &[T]) -> anyhow::Result<()> {
    if !json {
        print!("{table}");
        return Ok(());
    }
    eprint!("{table}");
    for row in rows {
        println!("{}", serde_json::to_string(row)?);
    }
    Ok(())
}
