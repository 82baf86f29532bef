//! The commands of the `diptych` binary besides `serve`: the clients talk to a running
//! `diptych serve` over gRPC, like any viewer would; the benchmarks run in-process.
//!
//! | module | command |
//! |---|---|
//! | [`ingest`] | `diptych ingest PATH…`: files and folders of DICOM, with a progress bar and a summary |
//! | [`search`] | `diptych search`: by file, UID or composite; a table, and `--montage` |
//! | [`montage`] | the montage PNG: query and hits, each above its normal-appearing image, labelled |
//! | [`lettering`] | a 5×7 bitmap font for the labels of the montage and the eval figure |
//! | [`source`] | where a query side comes from (a DICOM file or an indexed UID), for search and montage |
//! | [`admin`] | `diptych stats`, `diptych delete` |
//! | [`backfill`] | `diptych backfill`: index what an archive holds (C-FIND then C-GET or C-MOVE, or QIDO-RS then WADO-RS), with a progress bar |
//! | [`network_admin`] | `diptych admin peers|kos|associations`: allowed DICOM peers, KOS destinations, C-ECHO, recent associations |
//! | [`reindex`] | `diptych admin reindex --model DIR` (and `status`, `wait`, `cancel`): a new model bundle, with a progress bar |
//! | [`connect`] | how every client command reaches the server: URL, TLS, token; refusals explained |
//! | [`bench`] | `diptych bench encode|search|ready|reindex|cluster` (`ready` and `cluster` start servers from this binary) |
//! | [`eval`] | `diptych eval`: retrieval quality (label Dice, twins, composites) against baselines (in-process) |
//! | [`calibrate`] | `diptych calibrate`: a bundle's combined-mode balance, measured and written into its manifest |
//! | [`quantize`] | `diptych quantize`: an int8 copy of a bundle's encoder, written only if its codes agree with the float graph's |
//! | [`engine`] | the in-process encoder the benchmarks and `eval` start |

pub mod admin;
pub mod backfill;
pub mod bench;
pub mod calibrate;
pub mod connect;
pub mod engine;
pub mod eval;
pub mod ingest;
pub mod lettering;
pub mod montage;
pub mod network_admin;
pub mod quantize;
pub mod reindex;
pub mod search;
pub mod source;

pub use connect::{Connection, ServerArgs, connect, refused};

/// Largest message the client commands send or accept (the server's default limit).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A file of the repository (`relative` to its root): the one of the checkout in the current
/// directory when there is one (`make` runs from the repository root), else the one beside the
/// workspace the binary was built from — so a binary built in another checkout (a shared
/// `CARGO_TARGET_DIR`) still runs the scripts of the checkout it is run in.
pub fn checkout_file(relative: &str) -> std::path::PathBuf {
    let here = std::path::Path::new(relative);
    if here.is_file() {
        return here.to_path_buf();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}
