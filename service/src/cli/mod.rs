//! The commands of the `diptych` binary besides `serve`: the clients talk to a running
//! `diptych serve` over gRPC, like any viewer would; the benchmarks run in-process.
//!
//! | module | command |
//! |---|---|
//! | [`ingest`] | `diptych ingest PATH…`: files and folders of DICOM, with a progress bar and a summary |
//! | [`search`] | `diptych search`: by file, UID or composite; a table, and `--montage` |
//! | [`montage`] | the montage PNG: query and hits, each above its normal-appearing image |
//! | [`source`] | where a query side comes from (a DICOM file or an indexed UID), for search and montage |
//! | [`admin`] | `diptych stats`, `diptych delete` |
//! | [`network_admin`] | `diptych admin peers|kos|associations`: allowed DICOM peers, KOS destinations, C-ECHO, recent associations |
//! | [`bench`] | `diptych bench encode|search|ready` (in-process, no server needed) |
//! | [`eval`] | `diptych eval`: retrieval quality (label Dice, twins, composites) against baselines (in-process) |
//! | [`engine`] | the in-process encoder the benchmarks and `eval` start |

pub mod admin;
pub mod bench;
pub mod engine;
pub mod eval;
pub mod ingest;
pub mod montage;
pub mod network_admin;
pub mod search;
pub mod source;

use tonic::transport::{Channel, Endpoint};

/// Default address of the server the client commands talk to.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Largest message the client commands send or accept (the server's default limit).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Connects to the server at `url`, with an error that says how to start one.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| {
        anyhow::anyhow!("--server {url:?} is not a URL ({e}); use e.g. {DEFAULT_SERVER}")
    })?;
    endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach diptych at {url} ({e}); start it with `diptych serve` (or `make run`) \
             or pass --server"
        )
    })
}
