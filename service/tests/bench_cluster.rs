//! `diptych bench cluster` at a tiny size, as `make test` can afford: 3000 records split over two
//! shards on pre-built folders behind a router, against a single node on all of them; one
//! ingest run of one phantom subject through a router and into a single node. The router must
//! answer every query exactly as the single node does (the benchmark's `identical` flag), and
//! every figure the README quotes must be there.

use std::process::Command;

#[path = "support/serve.rs"]
mod serve;

#[test]
fn the_cluster_benchmark_runs_tiny_and_finds_identical_answers() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_diptych"))
        .args(["bench", "cluster", "--model"])
        .arg(serve::test_bundle())
        .args(["--records", "3000", "--queries", "5"])
        .args(["--ingest-subjects", "1", "--ingest-runs", "1", "--json"])
        .arg("--work")
        .arg(work.path())
        .output()
        .expect("running diptych bench cluster");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "diptych bench cluster failed:\n{stderr}"
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |bench: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|r| r["bench"] == bench).collect()
    };

    let search = of("cluster-search");
    assert_eq!(
        search.len(),
        6,
        "three modes, with and without a filter:\n{stdout}"
    );
    for row in &search {
        assert_eq!(row["identical"], true, "{row}");
        let shards: Vec<u64> = row["shard_records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(shards.len(), 2);
        assert!(
            shards.iter().all(|&n| n > 0),
            "both shards hold records: {row}"
        );
        assert_eq!(shards.iter().sum::<u64>(), 3000);
        for key in ["single_p50_ms", "router_p50_ms", "router_p99_ms"] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
        }
    }

    let ingest = of("cluster-ingest");
    assert_eq!(ingest.len(), 2, "{stdout}");
    for row in &ingest {
        assert!(row["instances"].as_u64().unwrap() >= 16, "{row}");
        let (ack, searchable) = (
            row["ack_per_s"].as_f64().unwrap(),
            row["searchable_per_s"].as_f64().unwrap(),
        );
        assert!(ack > 0.0 && searchable > 0.0 && searchable <= ack, "{row}");
    }

    let projections = of("cluster-projection");
    let slices: Vec<u64> = projections
        .iter()
        .map(|p| p["inputs"]["slices"].as_u64().unwrap())
        .collect();
    assert_eq!(slices, [100_000_000, 1_000_000_000]);
    assert!(
        projections
            .iter()
            .all(|p| p["nodes"].as_u64().unwrap() >= 2)
    );
}
